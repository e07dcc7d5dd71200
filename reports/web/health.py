"""The node's health: whether it can take work ("ok", "degraded" or "failing"), with the reasons.

- failing (503): the database cannot be read, or the storage volume is below its watermark ([storage]
  min_free_mb: the node refuses new instances with 0xA700).
- degraded (200): the node works but needs a look: transfers were given up, the storage volume is near its
  watermark (less than :data:`NEAR_WATERMARK_FACTOR` times min_free_mb free), or jobs have waited longer than
  [queue] stalled_after_s while no worker took one.

GET /healthz answers it; the Docker HEALTHCHECK (:mod:`reports.web.healthcheck`) reports degraded and failing as
unhealthy; the pages' header shows the status and links to /healthz.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.models import Job, JobState, Transfer, TransferState
from inference.runtime_status import read_providers
from reports.web.schemas import Health, ModelRuntimePublic

LOGGER = logging.getLogger(__name__)

BYTES_PER_MB = 1024 * 1024
#: Below this many times the watermark of free space the node says it is degraded (it still takes instances).
NEAR_WATERMARK_FACTOR = 2.0
OK, DEGRADED, FAILING = "ok", "degraded", "failing"


def free_space_mb(path: Path) -> float | None:
    """Free space of the volume holding ``path`` (or its nearest existing parent), in MiB."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free / BYTES_PER_MB
    return None


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stalled_queue(session: Session, *, now: datetime, stalled_after_s: float) -> str | None:
    """Why the queue looks stalled (jobs queued for longer than ``stalled_after_s`` and no job started since),
    or None. Both reads use an index (job.state, job.started_at)."""
    oldest_queued = session.scalar(select(func.min(Job.created_at)).where(Job.state == JobState.QUEUED))
    if oldest_queued is None:
        return None
    since = now - timedelta(seconds=stalled_after_s)
    if _as_utc(oldest_queued) > since:
        return None
    last_started = session.scalar(select(func.max(Job.started_at)))
    if last_started is not None and _as_utc(last_started) > since:
        return None
    n_queued = session.scalar(select(func.count(Job.id)).where(Job.state == JobState.QUEUED)) or 0
    waited_min = (now - _as_utc(oldest_queued)).total_seconds() / 60
    last = "no worker has taken a job yet" if last_started is None else \
        f"no worker has taken a job for {(now - _as_utc(last_started)).total_seconds() / 60:.0f} min"
    return f"{n_queued} job{'s' if n_queued != 1 else ''} waiting (the oldest for {waited_min:.0f} min) and {last}"


def node_health(settings: Settings, session_factory: sessionmaker[Session], *, now: datetime | None = None) -> Health:
    """The node's health, read from its database and its storage volume (what /healthz answers)."""
    now = now or datetime.now(UTC)
    failing: list[str] = []
    degraded: list[str] = []
    jobs_waiting = transfers_pending = transfers_given_up = None
    database_reachable = True
    try:
        with session_factory() as session:
            session.execute(text("SELECT 1"))
            # Indexed counts: cheap enough for a probe. WAITING jobs are not backlog: one may wait for ever for a
            # map that never comes.
            jobs_waiting = session.scalar(
                select(func.count(Job.id)).where(Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
            )
            transfers_pending = session.scalar(
                select(func.count(Transfer.id)).where(Transfer.state == TransferState.PENDING)
            )
            transfers_given_up = session.scalar(
                select(func.count(Transfer.id)).where(Transfer.state == TransferState.GIVEN_UP)
            )
            stalled = _stalled_queue(session, now=now, stalled_after_s=settings.queue.stalled_after_s)
    except SQLAlchemyError as error:
        database_reachable = False
        stalled = None
        failing.append(f"database unreachable: {type(error).__name__}")
        LOGGER.error("health check: database unreachable: %s", error)

    if transfers_given_up:
        degraded.append(
            f"{transfers_given_up} transfer{'s' if transfers_given_up != 1 else ''} given up: "
            "see the transfers page to retry"
        )
    if stalled is not None:
        degraded.append(f"queue stalled: {stalled}")

    free_mb = free_space_mb(settings.storage_root)
    min_free_mb = settings.storage.min_free_mb
    if free_mb is None:
        failing.append(f"storage path {settings.storage_root} has no existing parent")
    elif free_mb < min_free_mb:
        failing.append(f"storage free space {free_mb:.0f} MB is below the watermark of {min_free_mb} MB")
    elif free_mb < NEAR_WATERMARK_FACTOR * min_free_mb:
        degraded.append(
            f"storage free space {free_mb:.0f} MB is near the watermark of {min_free_mb} MB "
            "(new instances are refused below it)"
        )

    return Health(
        status=FAILING if failing else DEGRADED if degraded else OK,
        problems=[*failing, *degraded],
        database_reachable=database_reachable,
        storage_free_mb=None if free_mb is None else round(free_mb, 1),
        storage_min_free_mb=min_free_mb,
        jobs_waiting=jobs_waiting,
        transfers_pending=transfers_pending,
        transfers_given_up=transfers_given_up,
        models=model_runtimes(settings.storage_root),
    )


def model_runtimes(storage_root: Path) -> list[ModelRuntimePublic]:
    """The newest record of each host whose processes loaded the models (inference/runtime_status.py)."""
    newest: dict[str, ModelRuntimePublic] = {}
    for runtime in read_providers(storage_root):  # newest first
        if runtime.host not in newest:
            newest[runtime.host] = ModelRuntimePublic.model_validate(runtime, from_attributes=True)
    return list(newest.values())


