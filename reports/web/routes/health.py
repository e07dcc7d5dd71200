"""GET /healthz: database reachable, free space on the storage volume, work waiting."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from db.models import Job, JobState, Transfer, TransferState
from reports.web.deps import SettingsDep
from reports.web.schemas import Health

LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

BYTES_PER_MB = 1024 * 1024


def free_space_mb(path: Path) -> float | None:
    """Free space of the volume holding ``path`` (or its nearest existing parent), in MiB."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free / BYTES_PER_MB
    return None


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(request: Request, response: Response, settings: SettingsDep) -> Health:
    """Whether the node can take work: 200 when healthy, 503 with the problems otherwise."""
    problems: list[str] = []
    jobs_waiting = transfers_pending = transfers_given_up = None
    database_reachable = True
    try:
        with request.app.state.session_factory() as session:
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
    except SQLAlchemyError as error:
        database_reachable = False
        problems.append(f"database unreachable: {type(error).__name__}")
        LOGGER.error("health check: database unreachable: %s", error)

    free_mb = free_space_mb(settings.storage_root)
    if free_mb is None:
        problems.append(f"storage path {settings.storage_root} has no existing parent")
    elif free_mb < settings.storage.min_free_mb:
        problems.append(
            f"storage free space {free_mb:.0f} MB is below the watermark of {settings.storage.min_free_mb} MB"
        )

    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="failing" if problems else "ok",
        problems=problems,
        database_reachable=database_reachable,
        storage_free_mb=None if free_mb is None else round(free_mb, 1),
        storage_min_free_mb=settings.storage.min_free_mb,
        jobs_waiting=jobs_waiting,
        transfers_pending=transfers_pending,
        transfers_given_up=transfers_given_up,
    )
