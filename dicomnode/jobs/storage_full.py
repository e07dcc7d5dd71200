"""A job that meets a full disk: it fails with a clear state and is retried later, and outputs keep a reserve.

The node refuses received instances below ``[storage] min_free_mb`` (:func:`dicomnode.store.storage.
check_free_space`); its own outputs keep the same reserve (:func:`check_output_space`), so that the database, on
the same volume with SQLite, can still record what happened. A job whose outputs do not fit, or whose writes meet
ENOSPC or EDQUOT, or whose database reports the disk full, is marked FAILED with an error that starts with
:data:`STORAGE_FULL` and says when it is retried, its series left as it was (the series itself is fine); the queue
puts it back (:func:`requeue_after_storage_full`) after :func:`retry_delay_s`, longer with each attempt.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from db.session import session_scope
from dicomnode.errors import StorageFullError
from dicomnode.jobs.claims import Claim, mark_failed

LOGGER = logging.getLogger(__name__)

#: How the error of a job failed for a full disk starts (the page shows it; the retry looks for it).
STORAGE_FULL = "storage full"
#: The first retry waits this long; each further attempt waits twice as long, up to :data:`MAX_RETRY_DELAY_S`.
FIRST_RETRY_DELAY_S = 60.0
MAX_RETRY_DELAY_S = 900.0
BYTES_PER_MB = 1024 * 1024
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What SQLite and PostgreSQL say when their files cannot grow.
_FULL_DATABASE_WORDS = ("database or disk is full", "no space left on device", "could not extend file")


def is_storage_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageFullError):
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, OperationalError) and any(
                words in str(current.orig).lower() for words in _FULL_DATABASE_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


def check_output_space(root: Path, *, reserve_mb: float, size_bytes: int) -> None:
    """Raise unless writing ``size_bytes`` under ``root`` leaves at least ``reserve_mb`` MB free.

    Raises
    ------
    StorageFullError
        If the output would eat into the reserve; nothing is written.
    """
    if reserve_mb <= 0:
        return
    left_mb = (shutil.disk_usage(root if root.exists() else root.parent).free - size_bytes) / BYTES_PER_MB
    if left_mb < reserve_mb:
        raise StorageFullError(
            f"an output of {size_bytes / BYTES_PER_MB:.1f} MB would leave {left_mb:.0f} MB free on {root}, below "
            f"the reserve of {reserve_mb:.0f} MB ([storage] min_free_mb)"
        )


def retry_delay_s(attempts: int) -> float:
    """Seconds before the retry of a job that has run ``attempts`` times (1: the first retry)."""
    return min(FIRST_RETRY_DELAY_S * 2.0 ** max(attempts - 1, 0), MAX_RETRY_DELAY_S)


def fail_for_full_storage(claimed: Claim, error: BaseException, session_factory: sessionmaker[Session]) -> None:
    """Mark the claimed job FAILED for a full disk, saying when it is retried; its series keeps its state.

    Where even that cannot be recorded (the database's disk is full too) the error is logged and the job stays
    RUNNING; :func:`requeue_after_storage_full` with ``running_too`` takes it back.
    """
    with session_factory() as session:
        attempts = session.scalar(select(Job.attempts).where(Job.id == claimed.job_id)) or 1
    delay_s = retry_delay_s(attempts)
    message = f"{STORAGE_FULL}; retried in {delay_s:.0f} s: {type(error).__name__}: {error}"
    LOGGER.warning("job %d: %s", claimed.job_id, message)
    mark_failed(claimed, message, session_factory, fails_series=False)


def storage_retry_delay_s(job_id: int, session_factory: sessionmaker[Session]) -> float | None:
    """Seconds until job ``job_id`` is retried when it failed for a full disk; None for any other state."""
    with session_factory() as session:
        row = session.execute(select(Job.state, Job.error, Job.attempts).where(Job.id == job_id)).first()
    if row is None or row.state is not JobState.FAILED or not row.error.startswith(STORAGE_FULL):
        return None
    return retry_delay_s(row.attempts)


def requeue_after_storage_full(job_id: int, session_factory: sessionmaker[Session], *,
                               running_too: bool = False) -> bool:
    """Put a job that failed for a full disk back in QUEUED (and, with ``running_too``, one left RUNNING because
    its failure could not be recorded: only its own runner, which gave it up, may say so). True when it was."""
    states = [JobState.FAILED, JobState.RUNNING] if running_too else [JobState.FAILED]
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.state not in states:
            return False
        if job.state is JobState.FAILED and not job.error.startswith(STORAGE_FULL):
            return False
        changed = cast(CursorResult, session.execute(
            update(Job).where(Job.id == job_id, Job.state == job.state)
            .values(state=JobState.QUEUED, finished_at=None)
        )).rowcount
    if changed:
        LOGGER.info("job %d queued again after the storage was full", job_id)
    return bool(changed)
