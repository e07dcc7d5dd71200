"""The admin web app: server-rendered pages and a JSON API over the node's database."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI
from fastapi.params import Depends as DependsParam
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from reports.web.access import AccessDeniedError, access_denied_response, forbid_trainees
from reports.web.auth import (
    LoginRequiredError,
    LoginThrottledError,
    WebAuth,
    login_required_response,
    login_throttled_response,
    require_login,
)
from reports.web.csrf import CsrfMiddleware, require_csrf
from reports.web.deps import STATIC_DIR, make_templates
from reports.web.headers import HeadAsGetMiddleware, SecurityHeadersMiddleware
from reports.web.routes import health, login, results, series, studies, training, training_manage, transfers, upload
from reports.web.uploads import UploadSink


def create_app(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    enqueue_delivery: Callable[[int], None] | None = None,
    access_dependencies: Sequence[DependsParam] = (),
    accept_upload: UploadSink | None = None,
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
    accept_upload
        The node's service that stores an uploaded contour or map (``/training/upload``); the web layer may
        not import the node, so the node passes it in. Without it the upload page says uploads are off.

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
        ``/openapi.json``. The training programme: pages ``/training``, ``/training/trainee/{name}`` (with its
        overlays and PDF), ``/training/team/{name}`` (with its PDF), ``/training/readers``, ``/training/sets``,
        ``/training/sets/{name}`` and ``/training/upload`` (GET and POST), and ``/api/training/trainee/{name}``,
        ``/api/training/team/{name}``; a trainee is refused the node's own pages and API (403).
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
    app.state.accept_upload = accept_upload
    app.add_exception_handler(AccessDeniedError, access_denied_response)

    # Guards of every page and API route: the login, then the access rules, then the form token of a
    # state-changing page request (reports.web.csrf); routes added later take ``guards`` too.
    guards = [*access_dependencies, Depends(require_csrf)]
    if settings.web.login:
        app.state.web_auth = WebAuth.from_settings(settings, session_factory)
        app.state.csrf_key = app.state.web_auth.secret_key
        app.add_exception_handler(LoginRequiredError, login_required_response)
        app.add_exception_handler(LoginThrottledError, login_throttled_response)
        app.include_router(login.router)
        guards.insert(0, Depends(require_login))
    else:
        # No key file without a login (nothing to sign for long): form tokens last as long as the process.
        app.state.csrf_key = secrets.token_bytes(32)
    # Outermost last: security headers on every answer (refusals included), HEAD as GET, then the CSRF checks.
    app.add_middleware(CsrfMiddleware, key=app.state.csrf_key,
                       trusted_origins=frozenset(settings.web.trusted_origins))
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)

    app.include_router(health.router)
    # The node's own pages show every reader's contours: trainees see their results under /training only.
    for module in (studies, series, results, transfers):
        app.include_router(module.router, dependencies=[*guards, Depends(forbid_trainees)])
    for module in (training, training_manage):
        app.include_router(module.router, dependencies=guards)
    # The upload's size is refused before anything reads its body (the form token's check parses it all).
    app.include_router(upload.router, dependencies=[Depends(upload.refuse_oversized), *guards])
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _version() -> str:
    try:
        return version("myomap")
    except PackageNotFoundError:
        return "0+unknown"
