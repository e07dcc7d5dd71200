"""Every reader's attempts, read from what the reader-score jobs recorded (``Result`` rows of kind
``reader_score`` and their summary JSON), with each DICOM reader name resolved to a person through the aliases.

One contour series revision is one attempt: when a study's reference changed and the series was scored again,
the newest score stands. Its time is when the contour series (that revision) arrived.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Job, ReferencePolicy, Result, Series, Study, TrainingCase
from db.readers import ReaderNames
from db.repository import as_utc
from reports.programme.error_modes import error_mode_advice, error_mode_words
from reports.programme.model import Attempt
from reports.result_summary import READER_SCORE_KIND

# What the reader job records as a slice's reference -> the policy it stands for.
_POLICY_OF_REFERENCE = {
    "gold_standard": ReferencePolicy.GOLD_STANDARD.value,
    "staple": ReferencePolicy.EXPERT_STAPLE.value,
    **{policy.value: policy.value for policy in ReferencePolicy},
}


@dataclass(frozen=True)
class RecordedAttempt:
    """One attempt as recorded: who (as a person and as the DICOM name), where, when, and the summary."""

    person: str
    dicom_name: str
    study_instance_uid: str
    study_description: str
    received_at: datetime
    summary: dict[str, Any]


def recorded_attempts(session: Session, names: ReaderNames) -> list[RecordedAttempt]:
    """Every reader's newest score of each contour series revision, oldest first."""
    rows = session.execute(
        select(Result.summary, Job.series_id, Job.series_revision, Series.last_received_at,
               Study.study_instance_uid, Study.study_description)
        .join(Job, Result.job_id == Job.id).join(Series, Job.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Result.kind == READER_SCORE_KIND)
        .order_by(Result.created_at, Result.id)
    ).all()
    newest: dict[tuple[int, int], RecordedAttempt] = {}
    for summary, series_id, revision, received_at, study_uid, description in rows:
        dicom_name = str(summary.get("reader", ""))
        if not dicom_name:
            continue
        newest[(series_id, revision)] = RecordedAttempt(
            person=names.person(dicom_name), dicom_name=dicom_name, study_instance_uid=study_uid,
            study_description=description, received_at=as_utc(received_at), summary=summary,
        )
    return sorted(newest.values(), key=lambda item: item.received_at)


def case_labels(session: Session) -> dict[str, str]:
    """Study Instance UID -> the label of the (first) training case it is."""
    labels: dict[str, str] = {}
    for uid, label in session.execute(select(TrainingCase.study_instance_uid, TrainingCase.label)
                                      .order_by(TrainingCase.id)):
        labels.setdefault(uid, label)
    return labels


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def to_attempts(recorded: Iterable[RecordedAttempt], labels: dict[str, str]) -> list[Attempt]:
    """One :class:`Attempt` per slice of each recorded attempt, numbered per person and case, oldest first."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    attempts: list[Attempt] = []
    for item in sorted(recorded, key=lambda r: r.received_at):
        counts[(item.person, item.study_instance_uid)] += 1
        number = counts[(item.person, item.study_instance_uid)]
        label = labels.get(item.study_instance_uid) or item.study_description or item.study_instance_uid
        for index, figures in enumerate(item.summary.get("slices", [])):
            scored = figures.get("status") == "scored"
            mode = str(figures.get("error_mode") or "") if scored else ""
            advice = error_mode_advice(mode)
            if not scored:
                advice = "; ".join(str(note) for note in figures.get("notes", [])) or "not scored"
            elif mode and error_mode_words(mode) and not advice:
                advice = ""
            reference = figures.get("reference")
            attempts.append(Attempt(
                reader=item.person,
                case_label=label,
                study_instance_uid=item.study_instance_uid,
                slice_index=index,
                slice_level=str(figures.get("level") or ""),
                attempt_number=number,
                received_at=item.received_at,
                reference_policy=_POLICY_OF_REFERENCE.get(str(reference), str(reference or "")),
                dice=_float(figures.get("dice_myocardium")),
                hausdorff_mm=_float(figures.get("hausdorff_mm")),
                mean_surface_distance_mm=_float(figures.get("mean_surface_distance_mm")),
                t1_difference_ms=_float(figures.get("map_difference_ms")),
                segment_t1_differences_ms={
                    int(number_text): float(value)
                    for number_text, value in (figures.get("segment_map_differences_ms") or {}).items()
                },
                wall_thickness_difference_mm=_float(figures.get("wall_thickness_difference_mm")),
                error_mode=mode,
                advice=advice,
                overlay_png=figures.get("overlay"),
                t1_ms=_float(figures.get("map_mean_ms")),
            ))
    return attempts
