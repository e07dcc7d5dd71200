"""Turning a complete series into queued work, exactly once per (series, revision, kind).

A job's ``key`` is ``<series uid>/<revision>/<kind>`` and is unique in the database, so a series that is re-sent
or whose completion is handled twice (the protocol tags and the quiet period both firing, a restart) finds its
job already there and queues nothing new. Only a new revision (changed or late instances) makes new work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Series, SeriesRole, SeriesState, Transfer, TransferState

LOGGER = logging.getLogger(__name__)


class JobKind(str, Enum):
    """What a job produces."""

    T1_MAP = "t1_map"  # T1 map reconstructed from raw inversion-recovery images
    T2_MAP = "t2_map"  # T2 map reconstructed from T2-prepared images


#: The jobs each series role gets; roles not listed are stored and not analysed.
JOBS_FOR_ROLE: dict[SeriesRole, tuple[JobKind, ...]] = {
    SeriesRole.RAW_IR: (JobKind.T1_MAP,),
    SeriesRole.T2_PREP: (JobKind.T2_MAP,),
}


class JobSink(Protocol):
    """Where queued work goes (``dicomnode.tasks.NodeTasks``)."""

    def enqueue_job(self, job_id: int) -> None: ...

    def enqueue_delivery(self, transfer_id: int, *, delay_s: float = 0.0) -> None: ...


@dataclass(frozen=True)
class Recovery:
    """What :func:`requeue_unfinished` put back on the queue."""

    jobs: int
    transfers: int


def job_key(series_instance_uid: str, revision: int, kind: JobKind | str) -> str:
    """The idempotency key of the job of ``kind`` for one revision of a series."""
    return f"{series_instance_uid}/{revision}/{JobKind(kind).value}"


def enqueue_series(
    series_id: int, revision: int, *, session_factory: sessionmaker[Session], sink: JobSink
) -> list[int]:
    """Create the jobs of a complete series revision (if not yet there) and queue the new ones.

    Parameters
    ----------
    series_id
        Database id of the series.
    revision
        The series revision the assembler completed.
    session_factory
        The node's database sessions.
    sink
        Receives the ids of newly created jobs.

    Returns
    -------
    list of int
        Ids of the jobs created by this call (empty when the work already exists or the role has none).
    """
    created: list[int] = []
    with session_factory() as session:
        series = session.get(Series, series_id)
        if series is None:
            LOGGER.warning("series id %d completed but is not in the database; nothing queued", series_id)
            return created
        kinds = JOBS_FOR_ROLE.get(series.role, ())
        if not kinds:
            if series.state is SeriesState.COMPLETE and series.revision == revision:
                series.state = SeriesState.STORED
                session.commit()
            LOGGER.info("series %s (%s) has nothing to analyse", series.series_instance_uid, series.role.value)
            return created
        for kind in kinds:
            job_id = _create_job(session, series, revision, kind)
            if job_id is not None:
                created.append(job_id)
    for job_id in created:
        sink.enqueue_job(job_id)
    return created


def _create_job(session: Session, series: Series, revision: int, kind: JobKind) -> int | None:
    """Insert the job and commit; ``None`` when a job with the same key exists (possibly inserted concurrently)."""
    key = job_key(series.series_instance_uid, revision, kind)
    if session.scalar(select(Job.id).where(Job.key == key)) is not None:
        LOGGER.info("job %s already exists; not queued again", key)
        return None
    job = Job(key=key, kind=kind.value, series_id=series.id, series_revision=revision, state=JobState.QUEUED)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        LOGGER.info("job %s was created concurrently; not queued again", key)
        return None
    LOGGER.info("job %d (%s) queued for series %s revision %d", job.id, kind.value, series.series_instance_uid,
                revision)
    return job.id


def requeue_unfinished(*, session_factory: sessionmaker[Session], sink: JobSink) -> Recovery:
    """Put the work a stopped or killed node left unfinished back on the queue.

    Jobs left RUNNING are set back to QUEUED, then every QUEUED job and every PENDING transfer is queued. Call it
    once at start-up, before the workers run, and only from the node that owns the database's workers (a job
    that a worker still alive elsewhere is running would otherwise run twice; its result would not be duplicated,
    see :func:`dicomnode.pipeline.run_job`).
    """
    with session_factory() as session:
        session.execute(update(Job).where(Job.state == JobState.RUNNING).values(state=JobState.QUEUED))
        session.commit()
        job_ids = list(session.scalars(select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.id)))
        transfer_ids = list(
            session.scalars(
                select(Transfer.id).where(Transfer.state == TransferState.PENDING).order_by(Transfer.id)
            )
        )
    for job_id in job_ids:
        sink.enqueue_job(job_id)
    for transfer_id in transfer_ids:
        sink.enqueue_delivery(transfer_id)
    if job_ids or transfer_ids:
        LOGGER.info("re-queued %d unfinished jobs and %d pending transfers", len(job_ids), len(transfer_ids))
    return Recovery(jobs=len(job_ids), transfers=len(transfer_ids))

