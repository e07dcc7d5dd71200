"""Turning a complete series into queued work, exactly once per (series, revision, kind).

A job's ``key`` is ``<series uid>/<revision>/<kind>`` and is unique in the database, so a series that is re-sent
or whose completion is handled twice (the protocol tags and the quiet period both firing, a restart) finds its
job already there and queues nothing new. Only a new revision (changed or late instances) makes new work.

With several worker processes (a Redis queue and a PostgreSQL database) a job's task leaves the queue when a
worker takes it, so a worker killed mid-job would leave the job RUNNING for ever. A worker therefore runs a job
inside :func:`job_lease`, a PostgreSQL advisory lock that the server drops with the worker's connection; a RUNNING
job whose lock is free has lost its worker and :func:`requeue_orphaned` puts it back on the queue.

A job that waits for another series of its study (a reader's contours for the map they lie on, see
:func:`dicomnode.jobs.claims.mark_waiting`) is queued again by :func:`wake_waiting_jobs` when a map of the study
arrives: a scanner's map series completes here, a map job of the node finishes in :mod:`dicomnode.jobs.tasks`.

A reader scored against a reference that its study has since changed (a gold standard or more experts arrived
later) is scored again by a further job of its series revision, keyed by the new reference
(:func:`dicomnode.jobs.rescoring.requeue_rescoring`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Series, SeriesRole, SeriesState, Transfer, TransferState
from dicomnode.jobs.claims import lock_study
from dicomnode.jobs.storage_full import STORAGE_FULL

LOGGER = logging.getLogger(__name__)

#: First key of the node's two-key PostgreSQL advisory locks on jobs (the second is the job id); "myom".
JOB_LOCK_NAMESPACE = 0x6D796F6D


class JobKind(str, Enum):
    """What a job produces."""

    T1_MAP = "t1_map"  # the analysis of a T1 unit: raw inversion-recovery images and/or the scanner's T1 maps
    T2_MAP = "t2_map"  # the analysis of a T2 unit: T2-prepared images and/or the scanner's T2 maps
    READER_SCORE = "reader_score"  # a reader's contours scored against the gold standard or consensus
    STUDY_BULLSEYE = "study_bullseye"  # the study's AHA bullseye and SR once its map jobs are done (study_job)


#: The jobs each series role gets; roles not listed are stored and not analysed.
JOBS_FOR_ROLE: dict[SeriesRole, tuple[JobKind, ...]] = {
    SeriesRole.RAW_IR: (JobKind.T1_MAP,),
    SeriesRole.T2_PREP: (JobKind.T2_MAP,),
    SeriesRole.T1_MAP: (JobKind.T1_MAP,),
    SeriesRole.T2_MAP: (JobKind.T2_MAP,),
    SeriesRole.SEG: (JobKind.READER_SCORE,),
    SeriesRole.RTSTRUCT: (JobKind.READER_SCORE,),
}

#: Roles whose completion wakes the study's waiting jobs (the maps readers contour; they have no job of their own).
WAKING_ROLES = (SeriesRole.T1_MAP, SeriesRole.T2_MAP)
#: Job kinds whose DONE result wakes the study's waiting jobs (the node's own maps, which readers contour too).
WAKING_JOB_KINDS = (JobKind.T1_MAP, JobKind.T2_MAP)


class JobSink(Protocol):
    """Where queued work goes (``dicomnode.jobs.tasks.NodeTasks``)."""

    def enqueue_job(self, job_id: int) -> None: ...

    def enqueue_delivery(self, transfer_id: int, *, delay_s: float = 0.0) -> None: ...


@dataclass(frozen=True)
class Recovery:
    """What :func:`requeue_unfinished` put back on the queue."""

    jobs: int
    transfers: int


def job_key(series_instance_uid: str, revision: int, kind: JobKind | str, *,
            reference_digest: str | None = None) -> str:
    """The idempotency key of the job of ``kind`` for one revision of a series.

    A reader scored again because its study's reference changed (:mod:`dicomnode.jobs.rescoring`) gets a job of its own
    per reference: ``reference_digest`` (:attr:`dicomnode.jobs.rescoring.StudyReference.digest`) ends its key.
    """
    key = f"{series_instance_uid}/{revision}/{JobKind(kind).value}"
    return key if reference_digest is None else f"{key}/{reference_digest}"


def reference_digest_of(key: str) -> str | None:
    """The reference digest a re-scoring job's key ends with (:func:`job_key`); None for a series' first job."""
    parts = key.split("/")  # UIDs hold no "/" (dicomnode.store.validate refuses them)
    return parts[3] if len(parts) == 4 else None


def enqueue_series(
    series_id: int, revision: int, *, session_factory: sessionmaker[Session], sink: JobSink
) -> list[int]:
    """Create the jobs of a complete series revision (if not yet there) and queue the new ones.

    A complete map series (:data:`WAKING_ROLES`) also wakes the study's waiting jobs (readers' contours on it).

    Parameters
    ----------
    series_id
        Database id of the series.
    revision
        The series revision the assembler completed.
    session_factory
        The node's database sessions.
    sink
        Receives the ids of newly created jobs (and of woken ones).

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
        study_id, wakes = series.study_id, series.role in WAKING_ROLES
        kinds = JOBS_FOR_ROLE.get(series.role, ())
        if not kinds:
            if series.state is SeriesState.COMPLETE and series.revision == revision:
                series.state = SeriesState.STORED
                session.commit()
            LOGGER.info("series %s (%s) has nothing to analyse", series.series_instance_uid, series.role.value)
        for kind in kinds:
            job_id = _create_job(session, series, revision, kind)
            if job_id is not None:
                created.append(job_id)
    for job_id in created:
        sink.enqueue_job(job_id)
    if wakes:
        wake_waiting_jobs(session_factory=session_factory, sink=sink, study_id=study_id)
    return created


def wake_waiting_jobs(*, session_factory: sessionmaker[Session], sink: JobSink, study_id: int) -> list[int]:
    """Set the WAITING jobs of study ``study_id`` back to QUEUED and queue them: a series they may wait for arrived.

    A job that still lacks what it needs goes back to WAITING when it runs; one queued twice runs once
    (:func:`dicomnode.jobs.claims.claim_job`). The study's lock is taken first
    (:func:`dicomnode.jobs.claims.lock_study`), as :func:`dicomnode.jobs.claims.mark_waiting` takes it, so a job
    that is being marked WAITING now is either found here or sees the arrived series itself.

    Returns
    -------
    list of int
        Ids of the jobs queued.
    """
    with session_factory() as session:
        lock_study(session, study_id)
        woken = list(session.scalars(
            select(Job.id).join(Series).where(Series.study_id == study_id, Job.state == JobState.WAITING)
            .order_by(Job.id)
        ))
        if woken:
            session.execute(
                update(Job).where(Job.id.in_(woken), Job.state == JobState.WAITING)
                .values(state=JobState.QUEUED, error="").execution_options(synchronize_session=False)
            )
        session.commit()
    for job_id in woken:
        sink.enqueue_job(job_id)
    if woken:
        LOGGER.info("study %d: a map arrived; waiting jobs %s queued again", study_id, woken)
    return woken


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


def _locks_jobs(session: Session) -> bool:
    """Whether the database can tell a live worker's job from an orphaned one (PostgreSQL advisory locks)."""
    return session.get_bind().dialect.name == "postgresql"


@contextmanager
def job_lease(job_id: int, *, session_factory: sessionmaker[Session]) -> Iterator[bool]:
    """Hold job ``job_id`` for this worker while the block runs; yields False when another process holds it.

    On PostgreSQL the lease is a transaction-level advisory lock on a connection of its own, so it ends with the
    block or with the worker's connection (a killed worker). Other databases have no such lock: the lease is
    always granted, and a job left RUNNING by a killed worker waits for :func:`requeue_unfinished` at the next
    start of the node.
    """
    with session_factory() as session:
        if not _locks_jobs(session):
            yield True
            return
        held = bool(session.scalar(select(func.pg_try_advisory_xact_lock(JOB_LOCK_NAMESPACE, job_id))))
        try:
            yield held
        finally:
            session.rollback()  # ends the transaction, and with it the lock


def _reset_running(session_factory: sessionmaker[Session], *, all_running: bool) -> list[int]:
    """Set RUNNING jobs that no worker holds back to QUEUED and return their ids.

    On PostgreSQL only jobs whose :func:`job_lease` is free are reset; elsewhere ``all_running`` says whether
    every RUNNING job may be reset (true only when this process owns all the workers and none runs yet).
    """
    reset: list[int] = []
    with session_factory() as session:
        running = list(session.scalars(select(Job.id).where(Job.state == JobState.RUNNING).order_by(Job.id)))
        locks = _locks_jobs(session)
        session.rollback()
        if not locks and not all_running:
            return reset
        for job_id in running:
            if locks and not session.scalar(select(func.pg_try_advisory_xact_lock(JOB_LOCK_NAMESPACE, job_id))):
                session.rollback()
                continue
            # An UPDATE's result is a CursorResult (it has rowcount); Session.execute types every result as Result.
            changed = cast(
                CursorResult[Any],
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.RUNNING)
                    .values(state=JobState.QUEUED)
                    .execution_options(synchronize_session=False)
                ),
            ).rowcount
            session.commit()  # also releases the lock
            if changed:
                reset.append(job_id)
    return reset


def _queued_without_task(session_factory: sessionmaker[Session], queued_job_ids: Collection[int]) -> list[int]:
    """QUEUED jobs that are not on the queue and that no worker holds: a killed worker took their task."""
    missing: list[int] = []
    with session_factory() as session:
        waiting = list(session.scalars(select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.id)))
        locks = _locks_jobs(session)
        for job_id in waiting:
            if job_id in queued_job_ids:
                continue
            # A worker that took the task holds the lease from before the job leaves QUEUED.
            if locks and not session.scalar(select(func.pg_try_advisory_xact_lock(JOB_LOCK_NAMESPACE, job_id))):
                continue
            missing.append(job_id)
        session.rollback()  # releases the locks taken
    return missing


def requeue_orphaned(
    *, session_factory: sessionmaker[Session], sink: JobSink, queued_job_ids: Collection[int]
) -> list[int]:
    """Queue again the jobs whose task a killed worker took with it.

    Those are RUNNING jobs whose :func:`job_lease` is free (PostgreSQL only; elsewhere nothing can tell whether
    their worker lives) and QUEUED jobs missing from ``queued_job_ids`` (the jobs whose task waits on the queue,
    read before this call) that no worker holds. Safe to call at any time from any process: a job queued twice
    runs once (see :func:`dicomnode.jobs.map_job.run_job`, :func:`dicomnode.jobs.reader_job.run_reader_job`).

    Returns
    -------
    list of int
        Ids of the jobs queued again.
    """
    orphaned = _reset_running(session_factory, all_running=False)
    lost = _queued_without_task(session_factory, {*queued_job_ids, *orphaned})
    for job_id in (*orphaned, *lost):
        sink.enqueue_job(job_id)
    if orphaned or lost:
        LOGGER.warning("re-queued jobs whose worker stopped: %s running, %s not yet started", orphaned, lost)
    return sorted((*orphaned, *lost))


def requeue_overdue_transfers(
    *, session_factory: sessionmaker[Session], sink: JobSink, overdue_s: float
) -> list[int]:
    """Queue again the PENDING transfers whose next attempt is more than ``overdue_s`` seconds past.

    A delivery task normally runs within moments of its due time; one long overdue was lost with a killed worker
    (taken off the queue, or its claim's lease ran out, see :func:`dicomnode.net.scu.deliver_transfers`). Queueing a
    transfer twice is harmless: only one delivery claims it.

    Returns
    -------
    list of int
        Ids of the transfers queued again.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=overdue_s)
    with session_factory() as session:
        pending = session.execute(
            select(Transfer.id, Transfer.next_attempt_at).where(Transfer.state == TransferState.PENDING)
        ).all()
    # Compared here, not in SQL: SQLite keeps the node's UTC times without their zone.
    transfer_ids = [
        transfer_id for transfer_id, next_attempt_at in pending
        if (next_attempt_at if next_attempt_at.tzinfo else next_attempt_at.replace(tzinfo=UTC)) < cutoff
    ]
    for transfer_id in transfer_ids:
        sink.enqueue_delivery(transfer_id)
    if transfer_ids:
        LOGGER.warning("re-queued %d transfers overdue by more than %.0f s", len(transfer_ids), overdue_s)
    return transfer_ids


def requeue_unfinished(*, session_factory: sessionmaker[Session], sink: JobSink) -> Recovery:
    """Put the work a stopped or killed node left unfinished back on the queue.

    Jobs left RUNNING or WAITING, and jobs that failed for a full disk (their retry was on the queue), are set back
    to QUEUED, then every QUEUED job and every PENDING transfer is queued. A WAITING job is queued so that a map
    committed just before a crash (whose wake-up was lost) is not waited for in vain; one that still has no map goes
    back to WAITING. Call it once at start-up, before this
    process's workers run. On PostgreSQL a job that a live worker of another process holds (:func:`job_lease`)
    stays RUNNING; on other databases every RUNNING job is reset, so call it only from the node that owns the
    database's workers.
    """
    _reset_running(session_factory, all_running=True)
    with session_factory() as session:
        session.execute(
            update(Job).where(Job.state == JobState.WAITING).values(state=JobState.QUEUED)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Job).where(Job.state == JobState.FAILED, Job.error.startswith(STORAGE_FULL))
            .values(state=JobState.QUEUED).execution_options(synchronize_session=False)
        )
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

