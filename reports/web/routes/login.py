"""GET and POST /login (the form, then a session cookie) and POST /logout; open to everyone.

Both forms carry the CSRF token (:mod:`reports.web.csrf`). A login attempt passes the throttle first (429 with
``Retry-After`` and the form saying how long to wait) and runs scrypt in the hashing threads, never on the
event loop; a failure is logged with the user name and the client address, never the password."""

from __future__ import annotations

import logging
import math
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from reports.web.auth import SESSION_COOKIE, WebAuth, client_address, loggable_username, throttled_message
from reports.web.csrf import CSRF_FIELD, CsrfDep, check_csrf_token
from reports.web.deps import TemplatesDep, render

LOGGER = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: A login form is a few hundred bytes; anything much larger is not one.
MAX_FORM_BYTES = 16 * 1024
WRONG_CREDENTIALS = "Wrong user name or password."


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path on this site, else ``/`` (no open redirect).

    ``//host`` and ``/\\host`` are other sites to a browser, so only a single leading slash is taken."""
    if not target or not target.startswith("/") or target[1:2] in ("/", "\\"):
        return "/"
    if any(not c.isprintable() or c.isspace() for c in target):
        return "/"
    return target


def _login_form(
    templates: TemplatesDep, request: Request, *, next_path: str, username: str = "", error: str | None = None,
    status_code: int = status.HTTP_200_OK, headers: dict[str, str] | None = None,
) -> Response:
    response = render(
        templates, request, "login.html", {"next": next_path, "username": username, "error": error}, status_code
    )
    response.headers.update(headers or {})
    return response


@router.get("/login", name="login_page")
def login_page(
    request: Request, templates: TemplatesDep, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """The login form."""
    return _login_form(templates, request, next_path=safe_next(next_path))


@router.post("/login", name="login")
async def login(request: Request, templates: TemplatesDep) -> Response:
    """Check the form's user and password: a session cookie and a redirect to ``next``, or the form again."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return _login_form(templates, request, next_path="/", error="The form is too large.",
                           status_code=status.HTTP_413_CONTENT_TOO_LARGE)
    fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
    username = fields.get("username", [""])[0].strip()
    password = fields.get("password", [""])[0]
    next_path = safe_next(fields.get("next", ["/"])[0])
    try:
        check_csrf_token(request, fields.get(CSRF_FIELD, [""])[0])
    except HTTPException as refused:
        return _login_form(templates, request, next_path=next_path, username=username, error=str(refused.detail),
                           status_code=refused.status_code)
    if not username or not password:
        return _login_form(templates, request, next_path=next_path, username=username,
                           error="Enter a user name and a password.", status_code=status.HTTP_400_BAD_REQUEST)
    auth: WebAuth = request.app.state.web_auth
    address = client_address(request)
    admission = auth.throttle.admit(username, address)
    if not admission.admitted:
        retry_after_s = max(1, math.ceil(admission.retry_after_s))
        if admission.first_refusal:
            LOGGER.warning("web login throttled for user %s from %s for %d s", loggable_username(username), address,
                           retry_after_s)
        return _login_form(templates, request, next_path=next_path, username=username,
                           error=throttled_message(retry_after_s), status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                           headers={"Retry-After": str(retry_after_s)})
    checked = await auth.run_hashing(auth.check_password, username, password)
    if checked is None:
        LOGGER.warning("web login failed for user %s from %s", loggable_username(username), address)
        return _login_form(templates, request, next_path=next_path, username=username, error=WRONG_CREDENTIALS,
                           status_code=status.HTTP_401_UNAUTHORIZED)
    auth.throttle.succeeded(username, address)
    try:
        token = await run_in_threadpool(auth.start_session, checked)
    except LookupError:  # removed between the check and now
        return _login_form(templates, request, next_path=next_path, username=username, error=WRONG_CREDENTIALS,
                           status_code=status.HTTP_401_UNAUTHORIZED)
    LOGGER.info("web login: user %s from %s", loggable_username(checked), address)
    response = RedirectResponse(next_path, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(auth.session_s),
        path="/",
        httponly=True,
        samesite="strict",
        # Behind a TLS proxy that says so (X-Forwarded-Proto, from an address uvicorn trusts) the cookie is
        # sent over HTTPS only; on plain HTTP to the loopback interface it could not be.
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", name="logout")
def logout(request: Request, _csrf: CsrfDep) -> Response:
    """End the browser's session (its row is deleted, so a copy of the cookie no longer works either), clear its
    cookie and show the login form."""
    auth: WebAuth = request.app.state.web_auth
    username = auth.end_session(request.cookies.get(SESSION_COOKIE))
    if username is not None:
        LOGGER.info("web logout: user %s", loggable_username(username))
    response = RedirectResponse(request.app.url_path_for("login_page"), status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
