"""The job-row steps every job kind shares: the claim that lets one run through, marking a run failed or waiting.

A job may be handed out twice (a crash, a task redelivered): the claim is a conditional update from QUEUED to
RUNNING, so only one caller gets it; a job for a revision of its series that is no longer the newest is closed
as superseded instead (the newer revision's own job does the work).

A job that needs another series of its study that has not arrived yet (a reader's contours and the map they lie
on) is marked WAITING, and :func:`dicomnode.jobs.creation.wake_waiting_jobs` queues it again when such a series arrives.
Both serialise on the study's row (:func:`lock_study`), so that a series committed while the job ran is seen by
one of them: either the wake-up finds the job WAITING, or :func:`mark_waiting` finds the series and queues the job
again itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Series, SeriesState, Study
from db.session import session_scope

LOGGER = logging.getLogger(__name__)

#: The longest error message kept on a failed job row.
MAX_ERROR_CHARS = 2000


class JobOutcome(str, Enum):
    """What one call of a job runner did."""

    DONE = "done"  # the result was recorded now
    SKIPPED = "skipped"  # the job was not QUEUED (already done, failed, or running elsewhere)
    SUPERSEDED = "superseded"  # a newer revision of the series exists; its own job does the work
    FAILED = "failed"
    WAITING = "waiting"  # another series of the study is needed first; the job runs again when it arrives


class Claim(Protocol):
    """What a claimed job keeps of its rows: enough to find them again when the run ends."""

    @property
    def job_id(self) -> int: ...

    @property
    def series_id(self) -> int: ...

    @property
    def series_revision(self) -> int: ...


def claim_job(session: Session, job_id: int) -> Job | JobOutcome:
    """Move job ``job_id`` from QUEUED to RUNNING in ``session`` (only one caller succeeds) and return its row;
    or, where there is nothing to run, the outcome to report: SKIPPED (no such job, or not QUEUED) or SUPERSEDED
    (its series has a newer revision; the job is marked DONE with the reason)."""
    now = datetime.now(UTC)
    # An UPDATE's result is a CursorResult (it has rowcount); Session.execute types every result as Result.
    taken = cast(
        CursorResult[Any],
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .values(state=JobState.RUNNING, attempts=Job.attempts + 1, started_at=now, error="")
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    job = session.get(Job, job_id)
    if job is None:
        LOGGER.warning("job %d does not exist; nothing to run", job_id)
        return JobOutcome.SKIPPED
    if not taken:
        LOGGER.info("job %d is %s; not run again", job_id, job.state.value)
        return JobOutcome.SKIPPED
    series = job.series
    if series.revision > job.series_revision:
        job.state = JobState.DONE
        job.finished_at = now
        job.error = f"superseded by revision {series.revision}"
        LOGGER.info("job %d is for revision %d of a series now at %d; skipped", job_id, job.series_revision,
                    series.revision)
        return JobOutcome.SUPERSEDED
    return job


def mark_failed(claimed: Claim, error: str, session_factory: sessionmaker[Session], *,
                fails_series: bool = True) -> None:
    """Mark the job FAILED with ``error``, and its series too (unless ``fails_series`` is False, or a newer
    revision has arrived meanwhile)."""
    with session_scope(session_factory) as session:
        job = session.get(Job, claimed.job_id)
        if job is None:
            return
        job.state = JobState.FAILED
        job.error = error[:MAX_ERROR_CHARS]
        job.finished_at = datetime.now(UTC)
        series = session.get(Series, claimed.series_id)
        if fails_series and series is not None and series.revision == claimed.series_revision:
            series.state = SeriesState.FAILED


def lock_study(session: Session, study_id: int) -> None:
    """Serialise on study ``study_id`` until ``session``'s transaction ends: a no-op update of its row takes the
    row lock on PostgreSQL and the database's write lock on SQLite.

    Make it the transaction's first statement: on SQLite (WAL) a read before it would pin an older snapshot,
    and the write lock could then not be had without failing (SQLITE_BUSY_SNAPSHOT) instead of waiting.
    """
    session.execute(
        update(Study).where(Study.id == study_id).values(id=Study.id).execution_options(synchronize_session=False)
    )


def mark_waiting(
    claimed: Claim,
    reason: str,
    session_factory: sessionmaker[Session],
    *,
    study_id: int,
    arrived: Callable[[Session], bool],
) -> bool:
    """Mark the claimed job WAITING with ``reason`` (kept as its error, which the series page shows) unless what
    it waits for arrived while it ran; its series' state is left as it is.

    ``arrived(session)`` says whether the study now holds what the job lacked; it is asked after the study's
    lock is taken (:func:`lock_study`), so a series committed before a wake-up that found no WAITING job is seen.

    Returns
    -------
    bool
        True when the job was set back to QUEUED instead: the caller runs or queues it again.
    """
    with session_scope(session_factory) as session:
        lock_study(session, study_id)
        job = session.get(Job, claimed.job_id)
        if job is None or job.state is not JobState.RUNNING:  # deleted, or reset by a recovery meanwhile
            return False
        if arrived(session):
            job.state = JobState.QUEUED
            job.error = ""
            return True
        job.state = JobState.WAITING
        job.error = reason[:MAX_ERROR_CHARS]
        job.finished_at = None
        return False


def claimed_rows(session: Session, claimed: Claim) -> tuple[Job, Series]:
    """The claimed job's row and its series' row, read again in ``session`` to record the run's end.

    Raises
    ------
    LookupError
        If either was deleted while the job ran.
    """
    job = session.get(Job, claimed.job_id)
    series = session.get(Series, claimed.series_id)
    if series is None or job is None:
        raise LookupError(f"job {claimed.job_id} or series {claimed.series_id} vanished while running")
    return job, series


def mark_done(job: Job, series: Series, claimed: Claim) -> None:
    """Mark the job DONE, and its series too unless a newer revision has arrived meanwhile."""
    job.state = JobState.DONE
    job.finished_at = datetime.now(UTC)
    job.error = ""
    if series.revision == claimed.series_revision:
        series.state = SeriesState.DONE
