"""The accreditation part of a report: per training set, each criterion, its value, whether it is met and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reports.programme.model import AccreditationStatus


@dataclass(frozen=True)
class CriterionRow:
    name: str
    threshold: str
    value: str  # formatted; an en dash when there is nothing to evaluate yet
    met: bool
    why: str


@dataclass(frozen=True)
class AccreditationBlock:
    """One training set's verdict for one reader, in the words the report prints."""

    training_set: str
    met: bool
    verdict: str  # "Criteria met on 5 December 2026" / "Criteria not met: 2 of 3 criteria not met"
    rows: tuple[CriterionRow, ...]
    reasons: tuple[str, ...]  # the unmet criteria's reasons, in order


def _value(value: float | None) -> str:
    if value is None:
        return "\u2013"
    if float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"


def accreditation_block(status: AccreditationStatus) -> AccreditationBlock:
    """The rows and the verdict of ``status``."""
    rows = tuple(CriterionRow(o.name, o.threshold, _value(o.value), o.met, o.why) for o in status.outcomes)
    unmet = [row for row in rows if not row.met]
    if status.met:
        when = f" on {status.met_at.day} {status.met_at:%B %Y}" if status.met_at is not None else ""
        verdict = f"Criteria met{when}"
    else:
        verdict = f"Criteria not met: {len(unmet)} of {len(rows)} not met" if rows else "No criteria set"
    return AccreditationBlock(status.training_set, status.met, verdict, rows, tuple(row.why for row in unmet))


def accreditation_blocks(statuses: Sequence[AccreditationStatus]) -> list[AccreditationBlock]:
    return [accreditation_block(status) for status in statuses]
