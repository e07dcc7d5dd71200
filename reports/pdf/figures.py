"""The headline figures of a trainee's report: counts, latest figures per case, error modes in words."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

from reports.programme.error_modes import error_mode_words as programme_words
from reports.programme.model import Attempt


def error_mode_words(mode: str) -> str:
    """An error mode in words (the programme's wording), none as an en dash."""
    return programme_words(mode) or "\u2013"


@dataclass(frozen=True)
class HeadlineFigures:
    """What the first lines of a trainee's report say."""

    n_attempts: int
    n_cases: int
    latest_mean_dice: float | None  # over each case's latest scored attempt
    latest_mean_abs_t1_difference_ms: float | None
    first_mean_dice: float | None  # over each case's first scored attempt: the change since
    error_modes: tuple[tuple[str, int], ...]  # (mode in words, count), most frequent first, errors only


def latest_per_case(attempts: Sequence[Attempt]) -> list[Attempt]:
    """Each case's (and slice's) latest attempt, in the order the attempts came."""
    latest: dict[tuple[str, str, int | None], Attempt] = {}
    for attempt in attempts:
        latest[(attempt.case_label, attempt.slice_level, attempt.slice_index)] = attempt
    return sorted(latest.values(), key=lambda a: a.received_at)


def _first_per_case(attempts: Sequence[Attempt]) -> list[Attempt]:
    first: dict[tuple[str, str, int | None], Attempt] = {}
    for attempt in attempts:
        first.setdefault((attempt.case_label, attempt.slice_level, attempt.slice_index), attempt)
    return list(first.values())


def _mean(values: Sequence[float | None]) -> float | None:
    found = [value for value in values if value is not None]
    return fmean(found) if found else None


def headline_figures(attempts: Sequence[Attempt]) -> HeadlineFigures:
    latest = latest_per_case(attempts)
    modes = Counter(error_mode_words(a.error_mode) for a in attempts if a.error_mode and a.error_mode != "good")
    return HeadlineFigures(
        n_attempts=len(attempts),
        n_cases=len({attempt.case_label for attempt in attempts}),
        latest_mean_dice=_mean([a.dice for a in latest]),
        latest_mean_abs_t1_difference_ms=_mean([abs(a.t1_difference_ms) if a.t1_difference_ms is not None
                                                else None for a in latest]),
        first_mean_dice=_mean([a.dice for a in _first_per_case(attempts)]),
        error_modes=tuple(modes.most_common()),
    )
