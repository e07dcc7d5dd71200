"""The admin web app: server-rendered pages and a JSON API over the node's database."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI
from fastapi.params import Depends as DependsParam
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from reports.web.auth import LoginRequiredError, WebAuth, login_required_response, require_login
from reports.web.deps import STATIC_DIR, make_templates
from reports.web.routes import health, login, results, series, studies, transfers


def create_app(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    enqueue_delivery: Callable[[int], None] | None = None,
    access_dependencies: Sequence[DependsParam] = (),
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
        uses it. Without it a retried transfer is only made due, for the node's sweep of overdue transfers.
    access_dependencies
        Dependencies run before every page and API route except ``/healthz`` and the login form, after the
        login check (more access rules, for example).

    With ``settings.web.login`` on (the default) every page and API route needs a user of the ``web_user``
    table (:func:`reports.web.auth.require_login`: a session cookie from ``/login`` or HTTP Basic credentials);
    ``/healthz``, ``/static``, ``/login`` and the API description (``/docs``, ``/openapi.json``) stay open.

    Returns
    -------
    FastAPI
        Routes: ``/healthz``, ``/api/studies``, ``/api/studies/{uid}``, ``/api/series/{uid}``,
        ``/api/results/{id}``, ``/results/{id}/images/{n}.png``, ``/results/{id}/files/{n}``,
        ``/api/transfers``, ``POST /api/transfers/{id}/retry``, pages ``/``, ``/series/{uid}`` and
        ``/transfers``, with the login on ``GET``/``POST /login`` and ``POST /logout``; OpenAPI at
        ``/openapi.json``.
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

    guards = list(access_dependencies)
    if settings.web.login:
        app.state.web_auth = WebAuth.from_settings(settings, session_factory)
        app.add_exception_handler(LoginRequiredError, login_required_response)
        app.include_router(login.router)
        guards.insert(0, Depends(require_login))

    app.include_router(health.router)
    for module in (studies, series, results, transfers):
        app.include_router(module.router, dependencies=guards)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _version() -> str:
    try:
        return version("myomap")
    except PackageNotFoundError:
        return "0+unknown"
