"""The node's Huey tasks: thin wrappers that take database ids and delegate.

``run_job(job_id)`` runs one analysis job under its lease (:func:`dicomnode.jobs.creation.job_lease`): a map job
(:func:`dicomnode.jobs.map_job.run_job`) or a reader-score job (:func:`dicomnode.jobs.reader_job.run_reader_job`),
as the job row's kind says; a map job that finishes DONE wakes the reader jobs of its study that wait for a map
(:func:`dicomnode.jobs.creation.wake_waiting_jobs`); a reader-score job that finishes DONE queues the study's
readers whose reference has changed since they were scored (a gold standard or an expert arrived,
:func:`dicomnode.jobs.rescoring.requeue_rescoring`); ``deliver(transfer_id)`` sends one file to one peer
(:func:`dicomnode.net.scu.deliver_transfer`) and, when the peer could not take it yet, schedules itself again for
the time the transfer row says; a delivery takes along what else waits for the same peer, in one association
(:func:`dicomnode.net.scu.deliver_transfers`). Tasks carry ids only: the database is the record of what is to be
done, the queue only says when, and in which order: :func:`job_priority` and :func:`transfer_priority` put console
work (map jobs, the map analysis's images for a console) before reader scoring, archive transfers and re-scoring
(:class:`dicomnode.jobs.queue.Priority`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from huey.api import TaskWrapper
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db.models import Job, Result, Series, Transfer, TransferState
from dicomnode.analysis.memory import release_freed_memory
from dicomnode.jobs import map_job, reader_job, rescoring
from dicomnode.jobs.claims import JobOutcome
from dicomnode.jobs.creation import WAKING_JOB_KINDS, JobKind, job_lease, reference_digest_of, wake_waiting_jobs
from dicomnode.jobs.queue import NodeQueue, Priority, yield_to_console
from dicomnode.jobs.storage_full import (
    FIRST_RETRY_DELAY_S,
    is_storage_full,
    requeue_after_storage_full,
    storage_retry_delay_s,
)
from dicomnode.net import scu
from dicomnode.net.routing import is_console

LOGGER = logging.getLogger(__name__)

RUN_JOB_TASK = "myomap.run_job"
DELIVER_TASK = "myomap.deliver"
RETRY_JOB_TASK = "myomap.retry_job"
#: Shortest wait before a retry, so that a transfer row whose next attempt is already due cannot spin the queue.
MIN_RETRY_DELAY_S = 0.5


def _is_analysis(kind: str | None) -> bool:
    """Whether a job of ``kind`` analyses maps for the console (every kind but reader scoring)."""
    return kind is not None and kind != JobKind.READER_SCORE.value


def job_priority(kind: str | None, key: str) -> Priority:
    """The queue priority of a job of ``kind`` with idempotency key ``key``: map analyses are console work, a
    reader scored again goes after the readers scored a first time."""
    if _is_analysis(kind):
        return Priority.CONSOLE
    return Priority.RESCORE if reference_digest_of(key) is not None else Priority.READER


def transfer_priority(settings: Settings, *, job_kind: str | None, ae_title: str, calling_ae: str) -> Priority:
    """The queue priority of a transfer to ``ae_title`` of a result of a ``job_kind`` job whose series came from
    ``calling_ae``: a map analysis's files for a console (:func:`dicomnode.net.routing.is_console`) first."""
    if _is_analysis(job_kind) and is_console(settings, ae_title=ae_title, calling_ae=calling_ae):
        return Priority.CONSOLE_TRANSFER
    return Priority.ARCHIVE_TRANSFER


@dataclass(frozen=True)
class NodeTasks:
    """The tasks registered on one queue, with helpers that enqueue them at their priority and wake this process's
    workers."""

    queue: NodeQueue
    run_job: TaskWrapper
    deliver: TaskWrapper
    retry_job: TaskWrapper  # a job that failed for a full disk, run again after a delay
    settings: Settings
    session_factory: sessionmaker[Session]

    def enqueue_job(self, job_id: int) -> None:
        """Queue analysis job ``job_id`` to run now, at its kind's priority."""
        with self.session_factory() as session:
            row = session.execute(select(Job.kind, Job.key).where(Job.id == job_id)).first()
        priority = Priority.READER if row is None else job_priority(row.kind, row.key)
        self.queue.huey.enqueue(self.run_job.s(job_id, priority=int(priority)))
        self.queue.notify()

    def queued_job_ids(self) -> set[int]:
        """Ids of the analysis jobs whose task waits on the queue now (read from the queue's storage)."""
        return {int(task.args[0]) for task in self.queue.huey.pending() if task.name == RUN_JOB_TASK}

    def enqueue_delivery(self, transfer_id: int, *, delay_s: float = 0.0) -> None:
        """Queue transfer ``transfer_id``, now or after ``delay_s`` seconds, at its priority."""
        priority = int(self._transfer_priority(transfer_id))
        if delay_s > 0:
            self.deliver.schedule(args=(transfer_id,), delay=delay_s, priority=priority)
        else:
            self.queue.huey.enqueue(self.deliver.s(transfer_id, priority=priority))
            self.queue.notify()

    def _transfer_priority(self, transfer_id: int) -> Priority:
        with self.session_factory() as session:
            row = session.execute(
                select(Transfer.ae_title, Job.kind, Series.calling_ae)
                .join(Result, Transfer.result_id == Result.id).join(Job, Result.job_id == Job.id)
                .join(Series, Job.series_id == Series.id).where(Transfer.id == transfer_id)
            ).first()
        if row is None:
            return Priority.ARCHIVE_TRANSFER
        return transfer_priority(self.settings, job_kind=row.kind, ae_title=row.ae_title,
                                 calling_ae=row.calling_ae or "")


def register_tasks(queue: NodeQueue, *, settings: Settings, session_factory: sessionmaker[Session]) -> NodeTasks:
    """Register ``run_job`` and ``deliver`` on ``queue`` and return them.

    Every process that consumes the queue registers the same task names with its own settings and database.
    """
    huey = queue.huey
    tasks: NodeTasks

    @huey.task(name=RUN_JOB_TASK)
    def run_job(job_id: int) -> None:
        try:
            run_one_job(job_id)
        finally:
            release_freed_memory()  # the process would otherwise stay at the job's peak

    def run_one_job(job_id: int) -> None:
        # The lease tells other processes this job has a live worker (see dicomnode.jobs.creation.requeue_orphaned).
        with job_lease(job_id, session_factory=session_factory) as held:
            if not held:
                LOGGER.info("job %d is held by another worker; not run here", job_id)
                return
            kind, study_id = _job_kind_and_study(job_id, session_factory)
            runner = reader_job.run_reader_job if kind == JobKind.READER_SCORE.value else map_job.run_job
            try:
                outcome = runner(job_id, settings=settings, session_factory=session_factory,
                                 enqueue_delivery=tasks.enqueue_delivery)
            except Exception as error:
                if not is_storage_full(error):
                    raise
                # Not even the failure could be recorded: the job is left RUNNING; take it back later.
                LOGGER.error("job %d: the storage is full and its state cannot be recorded (%s); retried in %.0f s",
                             job_id, error, FIRST_RETRY_DELAY_S)
                retry_job.schedule(args=(job_id, True), delay=FIRST_RETRY_DELAY_S, priority=Priority.READER)
                return
        retry_in_s = storage_retry_delay_s(job_id, session_factory) if outcome is JobOutcome.FAILED else None
        if retry_in_s is not None:
            retry_job.schedule(args=(job_id, False), delay=retry_in_s, priority=Priority.READER)
        # A new map of the study: reader jobs waiting for the map their contours lie on may be scored now.
        if outcome is JobOutcome.DONE and kind in WAKING_JOB_KINDS and study_id is not None:
            wake_waiting_jobs(session_factory=session_factory, sink=tasks, study_id=study_id)
        # A reader scored: if it is a reference reader the study's other readers are scored again against the new
        # reference; if the reference changed while it ran, this reader itself is.
        if outcome is JobOutcome.DONE and kind == JobKind.READER_SCORE.value and study_id is not None:
            yield_to_console()  # it reads the study's contours: after the console's work
            rescoring.requeue_rescoring(study_id, gold_standard=reader_job.gold_standard_reader(settings),
                                        storage_root=settings.storage_root, session_factory=session_factory,
                                        sink=tasks)

    @huey.task(name=RETRY_JOB_TASK)
    def retry_job(job_id: int, running_too: bool) -> None:
        # A job that failed for a full disk runs again; if the disk is still full it fails again and waits longer.
        if requeue_after_storage_full(job_id, session_factory, running_too=running_too):
            tasks.enqueue_job(job_id)

    @huey.task(name=DELIVER_TASK)
    def deliver(transfer_id: int) -> None:
        state = scu.deliver_transfer(transfer_id, settings=settings, session_factory=session_factory)
        if state is TransferState.PENDING:
            delay_s, failed = _seconds_until_next_attempt(transfer_id, session_factory)
            # Without a failure the transfer is being sent with others to its peer; this is only the safety net.
            LOGGER.log(logging.INFO if failed else logging.DEBUG,
                       "transfer %d not delivered yet; next attempt in %.1f s", transfer_id, delay_s)
            tasks.enqueue_delivery(transfer_id, delay_s=max(delay_s, MIN_RETRY_DELAY_S))

    tasks = NodeTasks(queue=queue, run_job=run_job, deliver=deliver, retry_job=retry_job, settings=settings,
                      session_factory=session_factory)
    return tasks


def _job_kind_and_study(job_id: int, session_factory: sessionmaker[Session]) -> tuple[str | None, int | None]:
    """The kind of job ``job_id`` and its study's id; Nones when it does not exist (the runner then logs and skips
    it)."""
    with session_factory() as session:
        row = session.execute(select(Job.kind, Series.study_id).join(Series).where(Job.id == job_id)).first()
    return (None, None) if row is None else (row.kind, row.study_id)


def _seconds_until_next_attempt(transfer_id: int, session_factory: sessionmaker[Session]) -> tuple[float, bool]:
    """Seconds until the transfer's next attempt, and whether its last attempt failed."""
    with session_factory() as session:
        transfer = session.get(Transfer, transfer_id)
        if transfer is None:
            return 0.0, False
        next_attempt_at, failed = transfer.next_attempt_at, bool(transfer.last_error)
    if next_attempt_at.tzinfo is None:  # SQLite returns naive datetimes; the node stores UTC
        next_attempt_at = next_attempt_at.replace(tzinfo=UTC)
    return (next_attempt_at - datetime.now(UTC)).total_seconds(), failed
