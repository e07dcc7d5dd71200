"""The job-row steps every job kind shares: the claim that lets one run through, and marking a run failed.

A job may be handed out twice (a crash, a task redelivered): the claim is a conditional update from QUEUED to
RUNNING, so only one caller gets it; a job for a revision of its series that is no longer the newest is closed
as superseded instead (the newer revision's own job does the work).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Series, SeriesState
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
    taken = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.QUEUED)
        .values(state=JobState.RUNNING, attempts=Job.attempts + 1, started_at=now, error="")
        .execution_options(synchronize_session=False)
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


def mark_failed(claimed: Claim, error: str, session_factory: sessionmaker[Session]) -> None:
    """Mark the job FAILED with ``error``, and its series too unless a newer revision has arrived meanwhile."""
    with session_scope(session_factory) as session:
        job = session.get(Job, claimed.job_id)
        if job is None:
            return
        job.state = JobState.FAILED
        job.error = error[:MAX_ERROR_CHARS]
        job.finished_at = datetime.now(UTC)
        series = session.get(Series, claimed.series_id)
        if series is not None and series.revision == claimed.series_revision:
            series.state = SeriesState.FAILED


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
