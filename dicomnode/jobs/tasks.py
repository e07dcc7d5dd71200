"""The node's Huey tasks: thin wrappers that take database ids and delegate.

``run_job(job_id)`` runs one analysis job under its lease (:func:`dicomnode.jobs.creation.job_lease`): a map job
(:func:`dicomnode.jobs.map_job.run_job`) or a reader-score job (:func:`dicomnode.jobs.reader_job.run_reader_job`),
as the job row's kind says; a map job that finishes DONE wakes the reader jobs of its study that wait for a map
(:func:`dicomnode.jobs.creation.wake_waiting_jobs`); a reader-score job that finishes DONE queues the study's
readers whose reference has changed since they were scored (a gold standard or an expert arrived,
:func:`dicomnode.jobs.rescoring.requeue_rescoring`); ``deliver(transfer_id)`` sends one file to one peer
(:func:`dicomnode.net.scu.deliver_transfer`) and, when the peer could not take it yet, schedules itself again for
the time the transfer row says. Tasks carry ids only: the database is the record of what is to be done, the queue
only says when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from huey.api import TaskWrapper
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db.models import Job, Series, Transfer, TransferState
from dicomnode.jobs import map_job, reader_job, rescoring
from dicomnode.jobs.claims import JobOutcome
from dicomnode.jobs.creation import WAKING_JOB_KINDS, JobKind, job_lease, wake_waiting_jobs
from dicomnode.jobs.queue import NodeQueue
from dicomnode.net import scu

LOGGER = logging.getLogger(__name__)

RUN_JOB_TASK = "myomap.run_job"
DELIVER_TASK = "myomap.deliver"
#: Shortest wait before a retry, so that a transfer row whose next attempt is already due cannot spin the queue.
MIN_RETRY_DELAY_S = 0.5


@dataclass(frozen=True)
class NodeTasks:
    """The tasks registered on one queue, with helpers that enqueue them and wake this process's workers."""

    queue: NodeQueue
    run_job: TaskWrapper
    deliver: TaskWrapper

    def enqueue_job(self, job_id: int) -> None:
        """Queue analysis job ``job_id`` to run now."""
        self.run_job(job_id)
        self.queue.notify()

    def queued_job_ids(self) -> set[int]:
        """Ids of the analysis jobs whose task waits on the queue now (read from the queue's storage)."""
        return {int(task.args[0]) for task in self.queue.huey.pending() if task.name == RUN_JOB_TASK}

    def enqueue_delivery(self, transfer_id: int, *, delay_s: float = 0.0) -> None:
        """Queue transfer ``transfer_id``, now or after ``delay_s`` seconds."""
        if delay_s > 0:
            self.deliver.schedule(args=(transfer_id,), delay=delay_s)
        else:
            self.deliver(transfer_id)
            self.queue.notify()


def register_tasks(queue: NodeQueue, *, settings: Settings, session_factory: sessionmaker[Session]) -> NodeTasks:
    """Register ``run_job`` and ``deliver`` on ``queue`` and return them.

    Every process that consumes the queue registers the same task names with its own settings and database.
    """
    huey = queue.huey
    tasks: NodeTasks

    @huey.task(name=RUN_JOB_TASK)
    def run_job(job_id: int) -> None:
        # The lease tells other processes this job has a live worker (see dicomnode.jobs.creation.requeue_orphaned).
        with job_lease(job_id, session_factory=session_factory) as held:
            if not held:
                LOGGER.info("job %d is held by another worker; not run here", job_id)
                return
            kind, study_id = _job_kind_and_study(job_id, session_factory)
            runner = reader_job.run_reader_job if kind == JobKind.READER_SCORE.value else map_job.run_job
            outcome = runner(job_id, settings=settings, session_factory=session_factory,
                             enqueue_delivery=tasks.enqueue_delivery)
        # A new map of the study: reader jobs waiting for the map their contours lie on may be scored now.
        if outcome is JobOutcome.DONE and kind in WAKING_JOB_KINDS and study_id is not None:
            wake_waiting_jobs(session_factory=session_factory, sink=tasks, study_id=study_id)
        # A reader scored: if it is a reference reader the study's other readers are scored again against the new
        # reference; if the reference changed while it ran, this reader itself is.
        if outcome is JobOutcome.DONE and kind == JobKind.READER_SCORE.value and study_id is not None:
            rescoring.requeue_rescoring(study_id, gold_standard=reader_job.gold_standard_reader(settings),
                                        storage_root=settings.storage_root, session_factory=session_factory,
                                        sink=tasks)

    @huey.task(name=DELIVER_TASK)
    def deliver(transfer_id: int) -> None:
        state = scu.deliver_transfer(transfer_id, settings=settings, session_factory=session_factory)
        if state is TransferState.PENDING:
            delay_s = _seconds_until_next_attempt(transfer_id, session_factory)
            LOGGER.info("transfer %d not delivered yet; next attempt in %.1f s", transfer_id, delay_s)
            tasks.enqueue_delivery(transfer_id, delay_s=max(delay_s, MIN_RETRY_DELAY_S))

    tasks = NodeTasks(queue=queue, run_job=run_job, deliver=deliver)
    return tasks


def _job_kind_and_study(job_id: int, session_factory: sessionmaker[Session]) -> tuple[str | None, int | None]:
    """The kind of job ``job_id`` and its study's id; Nones when it does not exist (the runner then logs and skips
    it)."""
    with session_factory() as session:
        row = session.execute(select(Job.kind, Series.study_id).join(Series).where(Job.id == job_id)).first()
    return (None, None) if row is None else (row.kind, row.study_id)


def _seconds_until_next_attempt(transfer_id: int, session_factory: sessionmaker[Session]) -> float:
    with session_factory() as session:
        transfer = session.get(Transfer, transfer_id)
        if transfer is None:
            return 0.0
        next_attempt_at = transfer.next_attempt_at
    if next_attempt_at.tzinfo is None:  # SQLite returns naive datetimes; the node stores UTC
        next_attempt_at = next_attempt_at.replace(tzinfo=UTC)
    return (next_attempt_at - datetime.now(UTC)).total_seconds()
