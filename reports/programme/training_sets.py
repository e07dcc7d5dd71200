"""Training sets: the studies a supervisor marks for training, each case's reference, and the criteria a trainee
meets to be accredited on the set. The command line and the web page both act through these functions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from db.models import ReferencePolicy, TrainingCase, TrainingSet
from reports.programme.error_modes import ERROR_MODES

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
MAX_NAME_LENGTH = 64


class TrainingSetError(ValueError):
    """A training set, case or criterion that cannot be stored; the message says why."""


@dataclass(frozen=True)
class Criteria:
    """What a trainee must reach on a training set, over their latest attempt on each of their last cases.

    A criterion left None is not applied. ``last_cases`` is the window of the means and of the error-mode check.
    """

    min_mean_dice: float | None = None
    max_abs_t1_difference_ms: float | None = None
    no_critical_error: bool = True  # no case of the window shows one of ``critical_error_modes``
    critical_error_modes: tuple[str, ...] = ERROR_MODES
    last_cases: int = 5
    min_cases: int | None = None

    def __post_init__(self) -> None:
        if self.min_mean_dice is not None and not 0.0 < self.min_mean_dice <= 1.0:
            raise TrainingSetError(f"minimum mean Dice must lie in (0, 1], got {self.min_mean_dice}")
        if self.max_abs_t1_difference_ms is not None and self.max_abs_t1_difference_ms <= 0:
            raise TrainingSetError(f"maximum |dT1| must be positive (ms), got {self.max_abs_t1_difference_ms}")
        if self.last_cases < 1:
            raise TrainingSetError(f"the number of last cases must be at least 1, got {self.last_cases}")
        if self.min_cases is not None and self.min_cases < 1:
            raise TrainingSetError(f"the minimum number of cases must be at least 1, got {self.min_cases}")
        unknown = sorted(set(self.critical_error_modes) - set(ERROR_MODES))
        if unknown:
            raise TrainingSetError(f"unknown error modes {unknown}; known: {', '.join(ERROR_MODES)}")

    @property
    def empty(self) -> bool:
        return (self.min_mean_dice is None and self.max_abs_t1_difference_ms is None and not self.no_critical_error
                and self.min_cases is None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["critical_error_modes"] = list(self.critical_error_modes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Criteria:
        """The criteria stored on a training set; an empty record gives the defaults (only the error-mode check)."""
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainingSetError(f"unknown criteria {unknown}; known: {', '.join(sorted(known))}")
        if "critical_error_modes" in data:
            data["critical_error_modes"] = tuple(data["critical_error_modes"])
        return cls(**data)


@dataclass(frozen=True)
class CaseView:
    label: str
    study_instance_uid: str
    reference_policy: str | None  # None: automatic
    gold_standard_reader: str | None


@dataclass(frozen=True)
class TrainingSetView:
    name: str
    description: str
    auto_consensus: bool
    criteria: Criteria
    cases: list[CaseView] = field(default_factory=list)


def _policy(value: str | ReferencePolicy | None, gold_standard_reader: str | None) -> str | None:
    if value is None:
        return None
    try:
        policy = ReferencePolicy(value)
    except ValueError:
        known = ", ".join(p.value for p in ReferencePolicy)
        raise TrainingSetError(f"unknown reference policy {value!r}; known: {known}") from None
    if policy is ReferencePolicy.GOLD_STANDARD and not gold_standard_reader:
        raise TrainingSetError("the gold_standard reference policy needs the gold-standard reader's name")
    return policy.value


def _check_uid(uid: str) -> str:
    uid = uid.strip()
    if len(uid) > 64 or not _UID.match(uid):
        raise TrainingSetError(f"{uid!r} is not a Study Instance UID (digits and dots, at most 64 characters)")
    return uid


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise TrainingSetError("a training set needs a name")
    if len(name) > MAX_NAME_LENGTH:
        raise TrainingSetError(f"training set name {name!r} is longer than {MAX_NAME_LENGTH} characters")
    return name


def get_training_set(session: Session, name: str) -> TrainingSet:
    found = session.scalars(
        select(TrainingSet).where(TrainingSet.name == name).options(selectinload(TrainingSet.cases))
    ).one_or_none()
    if found is None:
        known = ", ".join(session.scalars(select(TrainingSet.name).order_by(TrainingSet.name))) or "none"
        raise TrainingSetError(f"no training set named {name!r} (training sets: {known})")
    return found


def create_training_set(
    session: Session,
    name: str,
    study_uids: Sequence[str],
    *,
    description: str = "",
    reference_policy: str | ReferencePolicy | None = None,
    gold_standard_reader: str | None = None,
    auto_consensus: bool = True,
    criteria: Criteria | None = None,
) -> TrainingSet:
    """A new training set with one case per study (labelled "case 1", "case 2", ... in the given order), each
    with ``reference_policy`` (None: automatic) and ``gold_standard_reader``."""
    name = _check_name(name)
    if session.scalar(select(func.count()).select_from(TrainingSet).where(TrainingSet.name == name)):
        raise TrainingSetError(f"a training set named {name!r} exists already")
    uids = [_check_uid(uid) for uid in study_uids]
    if len(set(uids)) != len(uids):
        raise TrainingSetError("a study is listed twice")
    policy = _policy(reference_policy, gold_standard_reader)
    training_set = TrainingSet(name=name, description=description, auto_consensus=auto_consensus,
                               criteria=(criteria or Criteria()).to_json())
    training_set.cases = [
        TrainingCase(study_instance_uid=uid, label=f"case {number}", reference_policy=policy,
                     gold_standard_reader=gold_standard_reader or None)
        for number, uid in enumerate(uids, start=1)
    ]
    session.add(training_set)
    session.flush()
    return training_set


def add_case(
    session: Session,
    set_name: str,
    study_uid: str,
    *,
    label: str | None = None,
    reference_policy: str | ReferencePolicy | None = None,
    gold_standard_reader: str | None = None,
) -> TrainingCase:
    """Add a study to a training set (label "case N" unless given)."""
    training_set = get_training_set(session, set_name)
    uid = _check_uid(study_uid)
    if any(case.study_instance_uid == uid for case in training_set.cases):
        raise TrainingSetError(f"study {uid} is a case of {set_name!r} already")
    label = (label or f"case {len(training_set.cases) + 1}").strip()
    if len(label) > 64:
        raise TrainingSetError(f"case label {label!r} is longer than 64 characters")
    if any(case.label == label for case in training_set.cases):
        raise TrainingSetError(f"{set_name!r} has a case labelled {label!r} already")
    case = TrainingCase(study_instance_uid=uid, label=label,
                        reference_policy=_policy(reference_policy, gold_standard_reader),
                        gold_standard_reader=gold_standard_reader or None)
    training_set.cases.append(case)
    session.flush()
    return case


def set_case_reference(session: Session, set_name: str, label: str, *, reference_policy: str | None,
                       gold_standard_reader: str | None = None) -> TrainingCase:
    """Name a case's reference (None: automatic)."""
    training_set = get_training_set(session, set_name)
    case = next((case for case in training_set.cases if case.label == label), None)
    if case is None:
        raise TrainingSetError(f"{set_name!r} has no case labelled {label!r}")
    case.reference_policy = _policy(reference_policy, gold_standard_reader)
    case.gold_standard_reader = gold_standard_reader or None
    session.flush()
    return case


def set_criteria(session: Session, set_name: str, criteria: Criteria) -> TrainingSet:
    training_set = get_training_set(session, set_name)
    training_set.criteria = criteria.to_json()
    session.flush()
    return training_set


def set_auto_consensus(session: Session, set_name: str, enabled: bool) -> TrainingSet:
    training_set = get_training_set(session, set_name)
    training_set.auto_consensus = enabled
    session.flush()
    return training_set


def view(training_set: TrainingSet) -> TrainingSetView:
    return TrainingSetView(
        name=training_set.name,
        description=training_set.description,
        auto_consensus=training_set.auto_consensus,
        criteria=Criteria.from_json(training_set.criteria),
        cases=[CaseView(case.label, case.study_instance_uid, case.reference_policy, case.gold_standard_reader)
               for case in training_set.cases],
    )


def list_training_sets(session: Session) -> list[TrainingSetView]:
    sets = session.scalars(select(TrainingSet).order_by(TrainingSet.name).options(selectinload(TrainingSet.cases)))
    return [view(training_set) for training_set in sets]


def show_training_set(session: Session, name: str) -> TrainingSetView:
    return view(get_training_set(session, name))


def cases_of_study(session: Session, study_instance_uid: str) -> list[TrainingCase]:
    """The training cases a study is (the reference rule reads the case's policy from here)."""
    return list(session.scalars(
        select(TrainingCase).where(TrainingCase.study_instance_uid == study_instance_uid).order_by(TrainingCase.id)
    ))


def criteria_in_words(criteria: Criteria) -> list[str]:
    """Each applied criterion as a supervisor states it."""
    words = []
    if criteria.min_mean_dice is not None:
        words.append(f"mean Dice >= {criteria.min_mean_dice:.2f} over the last {criteria.last_cases} cases")
    if criteria.max_abs_t1_difference_ms is not None:
        words.append(f"mean |dT1| <= {criteria.max_abs_t1_difference_ms:g} ms over the last "
                     f"{criteria.last_cases} cases")
    if criteria.no_critical_error:
        words.append(f"no critical error mode ({', '.join(criteria.critical_error_modes)}) in the last "
                     f"{criteria.last_cases} cases")
    if criteria.min_cases is not None:
        words.append(f"at least {criteria.min_cases} cases scored")
    return words
