"""The admin web app: server-rendered pages and a JSON API over the node's database."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from reports.web.deps import STATIC_DIR, make_templates
from reports.web.routes import health, results, series, studies, transfers


def create_app(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    enqueue_delivery: Callable[[int], None] | None = None,
    access_dependencies: Sequence[Depends] = (),
) -> FastAPI:
    """Build the web app of one node.

    Parameters
    ----------
    settings
        The node's settings (storage root and watermark for the health check, SCU policy for retries).
    session_factory
        Makes database sessions; one per request.
    enqueue_delivery
        Puts a transfer id on the node's delivery queue (``NodeTasks.enqueue_delivery``); the retry action
        uses it. Without it a retried transfer is tried once right after the response.
    access_dependencies
        Dependencies run before every page and API route except ``/healthz`` (an access check, for example).

    Returns
    -------
    FastAPI
        Routes: ``/healthz``, ``/api/studies``, ``/api/studies/{uid}``, ``/api/series/{uid}``,
        ``/api/results/{id}``, ``/results/{id}/images/{n}.png``, ``/results/{id}/files/{n}``,
        ``/api/transfers``, ``POST /api/transfers/{id}/retry``, pages ``/``, ``/series/{uid}`` and
        ``/transfers``; OpenAPI at ``/openapi.json``.
    """
    app = FastAPI(
        title="myomap",
        summary="DICOM node for cardiac MRI T1/T2 mapping: studies received, analysis jobs, transfers.",
        version=_version(),
    )
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.enqueue_delivery = enqueue_delivery
    app.state.templates = make_templates()

    app.include_router(health.router)
    for module in (studies, series, results, transfers):
        app.include_router(module.router, dependencies=list(access_dependencies))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _version() -> str:
    try:
        return version("myomap")
    except PackageNotFoundError:
        return "0+unknown"
