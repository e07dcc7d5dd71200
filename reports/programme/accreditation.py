"""Accreditation: a supervisor's criteria (:class:`reports.programme.training_sets.Criteria`) evaluated per trainee
per training set, each unmet criterion saying why, and the date the trainee first met them recorded.

A case counts by the trainee's latest attempt on it (its scored slices' mean Dice and mean |dT1|, and every error
mode its slices show); "the last N cases" are the N cases whose latest attempt came last. The criteria are
evaluated again after every attempt in time order, so the date first met is that attempt's date, whenever the
evaluation runs; once recorded it is kept, also when later attempts fall below the criteria or the criteria change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Accreditation, TrainingSet
from db.readers import ReaderNames
from db.repository import as_utc
from reports.programme.attempts import case_labels, recorded_attempts, to_attempts
from reports.programme.error_modes import error_mode_words
from reports.programme.model import AccreditationStatus, Attempt, CriterionOutcome
from reports.programme.people import PeopleError
from reports.programme.training_sets import Criteria, get_training_set


@dataclass(frozen=True)
class CaseAttempt:
    """One attempt on one case, its slices taken together."""

    study_instance_uid: str
    label: str
    received_at: datetime
    dice: float | None  # mean over the scored slices
    abs_t1_difference_ms: float | None  # mean |dT1| over the scored slices
    error_modes: tuple[str, ...]  # of the scored slices, "good" left out


def case_attempts(attempts: Sequence[Attempt]) -> list[CaseAttempt]:
    """The slices of each attempt grouped into one per case and attempt number, oldest first; attempts without a
    scored slice are left out."""
    groups: dict[tuple[str, int], list[Attempt]] = {}
    for attempt in attempts:
        groups.setdefault((attempt.study_instance_uid, attempt.attempt_number), []).append(attempt)
    found = []
    for slices in groups.values():
        scored = [a for a in slices if a.dice is not None]
        if not scored:
            continue
        t1 = [abs(a.t1_difference_ms) for a in scored if a.t1_difference_ms is not None]
        found.append(CaseAttempt(
            study_instance_uid=scored[0].study_instance_uid,
            label=scored[0].case_label,
            received_at=scored[0].received_at,
            dice=fmean(a.dice for a in scored if a.dice is not None),
            abs_t1_difference_ms=fmean(t1) if t1 else None,
            error_modes=tuple(a.error_mode for a in scored if a.error_mode and a.error_mode != "good"),
        ))
    return sorted(found, key=lambda case: case.received_at)


def _latest_per_case(history: Sequence[CaseAttempt]) -> list[CaseAttempt]:
    latest: dict[str, CaseAttempt] = {}
    for case in history:  # oldest first: later attempts replace earlier ones
        latest.pop(case.study_instance_uid, None)
        latest[case.study_instance_uid] = case
    return list(latest.values())  # ordered by each case's latest attempt


def _cases(count: int) -> str:
    return f"the last {count} case" if count == 1 else f"the last {count} cases"


def outcomes(criteria: Criteria, history: Sequence[CaseAttempt]) -> list[CriterionOutcome]:
    """Each applied criterion over ``history`` (case attempts, oldest first)."""
    if criteria.empty:
        return [CriterionOutcome("criteria", "", None, False, "no accreditation criteria are set for this training "
                                                              "set")]
    cases = _latest_per_case(history)
    window = cases[-criteria.last_cases:]
    over = _cases(len(window))
    found: list[CriterionOutcome] = []
    if criteria.min_mean_dice is not None:
        threshold = f">= {criteria.min_mean_dice:.2f}"
        dice = [case.dice for case in window if case.dice is not None]
        if not dice:
            found.append(CriterionOutcome("mean Dice", threshold, None, False,
                                          f"no case scored yet, needs mean Dice {threshold}"))
        else:
            value = fmean(dice)
            met = value >= criteria.min_mean_dice
            found.append(CriterionOutcome("mean Dice", threshold, value, met,
                                          f"mean Dice {value:.2f} over {over}, needs {threshold}"))
    if criteria.max_abs_t1_difference_ms is not None:
        threshold = f"<= {criteria.max_abs_t1_difference_ms:g} ms"
        t1 = [case.abs_t1_difference_ms for case in window if case.abs_t1_difference_ms is not None]
        if not t1:
            found.append(CriterionOutcome("mean |dT1|", threshold, None, False,
                                          f"no case with a T1 difference yet, needs mean |dT1| {threshold}"))
        else:
            value = fmean(t1)
            met = value <= criteria.max_abs_t1_difference_ms
            found.append(CriterionOutcome("mean |dT1|", threshold, value, met,
                                          f"mean |dT1| {value:.1f} ms over {over}, needs {threshold}"))
    if criteria.no_critical_error:
        threshold = f"none in the last {criteria.last_cases} cases"
        critical = set(criteria.critical_error_modes)
        with_error = Counter(mode for case in window for mode in set(case.error_modes) if mode in critical)
        cases_with_error = sum(1 for case in window if critical & set(case.error_modes))
        if not window:
            found.append(CriterionOutcome("critical error modes", threshold, None, False,
                                          "no case scored yet"))
        elif cases_with_error:
            modes = ", ".join(f"{error_mode_words(mode)} ({mode}) in {count} of {over}"
                              for mode, count in with_error.most_common())
            found.append(CriterionOutcome("critical error modes", threshold, float(cases_with_error), False,
                                          f"critical error mode: {modes}"))
        else:
            found.append(CriterionOutcome("critical error modes", threshold, 0.0, True,
                                          f"no critical error mode in {over}"))
    if criteria.min_cases is not None:
        threshold = f">= {criteria.min_cases}"
        met = len(cases) >= criteria.min_cases
        found.append(CriterionOutcome("cases scored", threshold, float(len(cases)), met,
                                      f"{len(cases)} cases scored, needs {threshold}"))
    return found


def first_met(criteria: Criteria, history: Sequence[CaseAttempt]) -> datetime | None:
    """When the criteria were first met: the time of the attempt after which they all held; None if never."""
    if criteria.empty:
        return None
    for index, case in enumerate(history):
        if all(outcome.met for outcome in outcomes(criteria, history[:index + 1])):
            return case.received_at
    return None


def evaluate(session: Session, reader_name: str, training_set_name: str) -> AccreditationStatus:
    """The reader's standing against the training set's criteria, recording the date first met.

    Raises
    ------
    PeopleError
        If no reader (or alias) is called ``reader_name``.
    TrainingSetError
        If there is no such training set.
    """
    names = ReaderNames.load(session)
    reader = names.named(reader_name)
    if reader is None:
        raise PeopleError(f"no reader named {reader_name!r} (see: myomap reader list)")
    training_set = get_training_set(session, training_set_name)
    attempts = to_attempts(
        (item for item in recorded_attempts(session, names) if item.person == reader.name),
        case_labels(session),
    )
    return evaluate_attempts(session, reader.id, reader.name, training_set, attempts)


def _record(session: Session, accreditation: Accreditation) -> Accreditation:
    """Insert the date first met; when another evaluation recorded it meanwhile, that record stands."""
    try:
        with session.begin_nested():
            session.add(accreditation)
    except IntegrityError:
        return session.scalars(select(Accreditation).where(
            Accreditation.reader_id == accreditation.reader_id,
            Accreditation.training_set_id == accreditation.training_set_id)).one()
    return accreditation


def evaluate_attempts(session: Session, reader_id: int, reader: str, training_set: TrainingSet,
                      attempts: Sequence[Attempt]) -> AccreditationStatus:
    """:func:`evaluate` on the reader's attempts read already (all of them; those on the set's cases count)."""
    studies = {case.study_instance_uid for case in training_set.cases}
    labels = {case.study_instance_uid: case.label for case in training_set.cases}
    history = [
        CaseAttempt(case.study_instance_uid, labels[case.study_instance_uid], case.received_at, case.dice,
                    case.abs_t1_difference_ms, case.error_modes)
        for case in case_attempts([a for a in attempts if a.study_instance_uid in studies])
    ]
    criteria = Criteria.from_json(training_set.criteria)
    now = outcomes(criteria, history)
    recorded = session.scalars(select(Accreditation).where(
        Accreditation.reader_id == reader_id, Accreditation.training_set_id == training_set.id)).one_or_none()
    if recorded is None:
        met_at = first_met(criteria, history)
        if met_at is not None:
            recorded = _record(session, Accreditation(reader_id=reader_id, training_set_id=training_set.id,
                                                      met_at=met_at, criteria=criteria.to_json()))
    return AccreditationStatus(
        reader=reader,
        training_set=training_set.name,
        outcomes=now,
        met=bool(now) and all(outcome.met for outcome in now),
        met_at=as_utc(recorded.met_at).date() if recorded is not None else None,
    )
