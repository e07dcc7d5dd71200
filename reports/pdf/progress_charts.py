"""Progress over repeated attempts: Dice and the T1 difference per attempt on each case, and per trainee of a team.

The x axis is the attempt number on a case (1 for the first contour of that case): a line per case shows whether
the trainee gets closer to the reference each time they contour it again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import fmean

from markupsafe import Markup

from reports.pdf.line_chart import Guide, Series, line_chart
from reports.programme.model import Attempt, TraineeProgress

#: The y axis of the Dice plots: below 0.5 a contour is not of the myocardium at all.
DICE_LIMITS = (0.5, 1.0)


def _case_series(attempts: Sequence[Attempt], value: Callable[[Attempt], float | None]) -> list[Series]:
    """A line per case, every case of ``attempts`` in the order first contoured (one colour per case in every
    plot, also for a case without this figure)."""
    by_case: dict[str, dict[int, list[float]]] = {attempt.case_label: {} for attempt in attempts}
    for attempt in attempts:
        figure = value(attempt)
        if figure is not None:
            by_case[attempt.case_label].setdefault(attempt.attempt_number, []).append(figure)
    return [Series(case, tuple((float(n), fmean(values)) for n, values in sorted(numbers.items())))
            for case, numbers in by_case.items()]


def dice_over_attempts(attempts: Sequence[Attempt]) -> Markup:
    """Myocardial Dice against the reference per attempt, a line per case (slices of a case averaged)."""
    return line_chart(_case_series(attempts, lambda a: a.dice), title="Dice over attempts",
                      x_label="attempt on the case", y_label="myocardial Dice", y_limits=DICE_LIMITS)


def t1_difference_over_attempts(attempts: Sequence[Attempt]) -> Markup:
    """Global T1 difference from the reference (ms) per attempt, a line per case, zero marked."""
    return line_chart(_case_series(attempts, lambda a: a.t1_difference_ms), title="T1 difference over attempts",
                      x_label="attempt on the case", y_label="T1 difference (ms)", guides=[Guide(0.0, "reference")])


def _team_series(trainees: Sequence[TraineeProgress], value: Callable[[Attempt], float | None]) -> list[Series]:
    """A line per trainee, in the team's order (one colour per trainee in every plot)."""
    series = []
    for trainee in trainees:
        numbers: dict[int, list[float]] = {}
        for attempt in trainee.attempts:
            figure = value(attempt)
            if figure is not None:
                numbers.setdefault(attempt.attempt_number, []).append(figure)
        series.append(Series(trainee.reader, tuple((float(n), fmean(v)) for n, v in sorted(numbers.items()))))
    return series


def team_dice_over_attempts(trainees: Sequence[TraineeProgress]) -> Markup:
    """Each trainee's mean Dice over their cases per attempt number, a line per trainee."""
    return line_chart(_team_series(trainees, lambda a: a.dice), title="Mean Dice per attempt",
                      x_label="attempt on a case", y_label="myocardial Dice", y_limits=DICE_LIMITS)


def team_t1_difference_over_attempts(trainees: Sequence[TraineeProgress]) -> Markup:
    """Each trainee's mean absolute T1 difference per attempt number, a line per trainee."""
    return line_chart(_team_series(trainees, lambda a: abs(a.t1_difference_ms)
                                   if a.t1_difference_ms is not None else None),
                      title="Mean |T1 difference| per attempt", x_label="attempt on a case",
                      y_label="|T1 difference| (ms)", guides=[Guide(0.0, "")])
