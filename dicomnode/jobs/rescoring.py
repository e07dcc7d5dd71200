"""Scoring readers again when their study's reference changes: the gold standard or more experts arrive later.

A reader-score job (:mod:`dicomnode.jobs.reader_job`) scores a reader against what its study holds when it runs, as
:func:`dicomnode.analysis.reference.decide_reference` chooses: a gold standard, the experts' or the team's STAPLE,
the consensus model's contour. Trainees often send their contours before the supervisor's gold standard or the
experts' contours: they would stay scored against the weaker reference.

:func:`study_reference` says which reference a study offers a reader, from the study's stored contour objects:
the source, the reference readers, and the objects (SOP Instance UID and content hash) of the reference readers
other than the reader itself (its own objects are fixed for its series revision). Every reader-score result
records the digest of the reference its job read. After a reader-score job finishes DONE,
:func:`requeue_rescoring` compares, for each contour series of the study, the digest of its newest result with
the reference the study offers that reader now, and where they differ creates a new job keyed by the new digest
(:func:`dicomnode.jobs.creation.job_key` with ``reference_digest``): it writes a new SR and overlay (new UIDs
from its key) and records a new result; the earlier ones stay. A reader that is neither the gold standard nor an
expert changes no one's reference, so a further trainee re-scores nobody; the same reference never scores a series
revision twice, so the decision may be taken any number of times. Series whose job is still queued, running or
waiting are left alone: that job reads the study when it runs, and the decision is taken again when it finishes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Job, JobState, Result, Series, SeriesRole, Study
from db.session import session_scope
from dicomnode.analysis.study import ReferenceRule
from dicomnode.io.contours import reader_name
from dicomnode.io.contours.errors import UnknownReaderError
from dicomnode.jobs.claims import lock_study
from dicomnode.jobs.creation import JobKind, JobSink, job_key
from dicomnode.jobs.reference_inputs import reference_inputs
from reports.result_summary import ReaderResultSummary, read_summary

LOGGER = logging.getLogger(__name__)

#: What a score against the consensus model's contour records as its reference.
CONTOUR_ROLES = (SeriesRole.SEG, SeriesRole.RTSTRUCT)
_DIGEST_HEX_CHARS = 16
#: A series with a reader-score job in these states is not decided on: the job's own end decides again.
_UNFINISHED = (JobState.QUEUED, JobState.RUNNING, JobState.WAITING)


@dataclass(frozen=True)
class ContourObject:
    """One stored SEG or RTSTRUCT instance of a study, and its reader label once read (None: not read, or none)."""

    path: Path
    sop_instance_uid: str
    sha256: str
    reader: str | None = None


@dataclass(frozen=True)
class StudyReference:
    """The reference a study offers one reader: its source, its readers, and the objects they are drawn from."""

    source: str  # a dicomnode.analysis.reference.ReferenceSource value
    readers: tuple[str, ...]
    objects: tuple[tuple[str, str], ...]  # (SOP Instance UID, SHA-256) of the other reference readers' objects

    @property
    def digest(self) -> str:
        """A short stable name of this reference (what a re-scoring job's key carries)."""
        text = json.dumps({"source": self.source, "readers": self.readers, "objects": self.objects},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_HEX_CHARS]


def study_reference(reader: str, others: Iterable[ContourObject], gold_standard: str | None = None, *,
                    rule: ReferenceRule | None = None) -> StudyReference:
    """The reference the study offers ``reader``, given the study's other contour objects (labelled).

    The same rule as the analysis (:meth:`dicomnode.analysis.study.ReferenceRule.decide`), at study level: the
    readers available are those with objects in the study, ``reader`` among them. ``rule`` carries the training
    case's policy and the readers' roles; without it, the site's ``gold_standard`` and the naming convention.
    Objects of ``reader`` itself are left out of the digest, as the job leaves them out.
    """
    rule = rule if rule is not None else ReferenceRule(gold_standard=gold_standard)
    by_reader: dict[str, list[tuple[str, str]]] = {}
    for item in others:
        if item.reader is not None and item.reader != reader:
            by_reader.setdefault(item.reader, []).append((item.sop_instance_uid, item.sha256))
    choice = rule.decide(reader, [*by_reader, reader])
    objects = tuple(sorted(obj for name in choice.readers if name != reader for obj in by_reader.get(name, [])))
    return StudyReference(choice.source.value, choice.readers, objects)


def contour_reader(path: Path) -> str | None:
    """The reader label of a stored contour object; None when it names none or cannot be read."""
    try:
        return reader_label(pydicom.dcmread(path, stop_before_pixels=True))
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None  # the analysis reports what is wrong with it


def reader_label(ds: Dataset) -> str | None:
    """The reader label of a contour object already read; None when it names none."""
    try:
        return reader_name(ds)
    except UnknownReaderError:
        return None


def labelled(objects: Sequence[ContourObject]) -> tuple[ContourObject, ...]:
    """The objects with their reader labels read from their files."""
    return tuple(replace(item, reader=contour_reader(item.path)) for item in objects)


def study_contours(session: Session, study_id: int, storage_root: Path) -> dict[int, tuple[ContourObject, ...]]:
    """The study's stored SEG and RTSTRUCT instances by series id (unlabelled), in the order the jobs read them."""
    rows = session.execute(
        select(Instance.series_id, Instance.path, Instance.sop_instance_uid, Instance.sha256).join(Series)
        .where(Series.study_id == study_id, Series.role.in_(CONTOUR_ROLES))
        .order_by(Series.id, Instance.instance_number, Instance.id)
    ).all()
    contours: dict[int, list[ContourObject]] = {}
    for series_id, path, sop_instance_uid, sha256 in rows:
        contours.setdefault(series_id, []).append(ContourObject(storage_root / path, sop_instance_uid, sha256))
    return {series_id: tuple(items) for series_id, items in contours.items()}


def requeue_rescoring(
    study_id: int,
    *,
    gold_standard: str | None,
    storage_root: Path,
    session_factory: sessionmaker[Session],
    sink: JobSink,
) -> list[int]:
    """Create and queue a reader-score job for every contour series of study ``study_id`` whose newest result
    was scored against another reference than the study offers its reader now.

    Taken under the study's lock (:func:`dicomnode.jobs.claims.lock_study`), so that two reference readers finishing
    at once decide one after the other; a job whose key exists already is not created again.

    Returns
    -------
    list of int
        Ids of the jobs created and queued.
    """
    created: list[tuple[int, str]] = []
    with session_scope(session_factory) as session:
        lock_study(session, study_id)
        study = session.get(Study, study_id)
        rule = reference_inputs(session, study.study_instance_uid if study is not None else "").rule(gold_standard)
        contours = {series_id: labelled(items)
                    for series_id, items in study_contours(session, study_id, storage_root).items()}
        for series in session.scalars(select(Series).where(Series.id.in_(list(contours))).order_by(Series.id)):
            own = contours[series.id]
            reader = own[0].reader
            if reader is None:
                continue
            recorded = _recorded_digest(session, series)
            if recorded is None:
                continue
            others = [item for series_id, items in contours.items() if series_id != series.id for item in items]
            reference = study_reference(reader, others, rule=rule)
            if reference.digest == recorded:
                continue
            key = job_key(series.series_instance_uid, series.revision, JobKind.READER_SCORE,
                          reference_digest=reference.digest)
            if session.scalar(select(Job.id).where(Job.key == key)) is not None:
                continue
            job = Job(key=key, kind=JobKind.READER_SCORE.value, series_id=series.id,
                      series_revision=series.revision, state=JobState.QUEUED)
            session.add(job)
            session.flush()
            created.append((job.id, f"{reader}: {reference.source} {', '.join(reference.readers)}".rstrip()))
    for job_id, why in created:
        LOGGER.info("study %d: the reference changed; job %d scores %s", study_id, job_id, why)
        sink.enqueue_job(job_id)
    return [job_id for job_id, _ in created]


def _recorded_digest(session: Session, series: Series) -> str | None:
    """The reference digest of the newest result of the series' current revision; None where there is nothing to
    compare: a job of it still to finish, no result yet, or a result recorded without a digest."""
    jobs = session.scalars(
        select(Job).where(Job.series_id == series.id, Job.kind == JobKind.READER_SCORE.value,
                          Job.series_revision == series.revision)
        .order_by(Job.id.desc())
    ).all()
    if any(job.state in _UNFINISHED for job in jobs):
        return None
    for job in jobs:
        result = session.scalar(select(Result).where(Result.job_id == job.id))  # a reader-score job's one result
        if job.state is JobState.DONE and result is not None:
            try:
                summary = read_summary(result.kind, result.summary)
            except ValidationError as error:
                LOGGER.warning("result %d: summary not readable, reference unknown: %s", result.id, error)
                return None
            return (summary.reference_digest or None) if isinstance(summary, ReaderResultSummary) else None
    return None
