"""GET and POST /login (the form, then a session cookie) and POST /logout; open to everyone."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from reports.web.auth import SESSION_COOKIE, WebAuth, loggable_username
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
    status_code: int = status.HTTP_200_OK,
) -> Response:
    return render(
        templates, request, "login.html", {"next": next_path, "username": username, "error": error}, status_code
    )


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
    if not username or not password:
        return _login_form(templates, request, next_path=next_path, username=username,
                           error="Enter a user name and a password.", status_code=status.HTTP_400_BAD_REQUEST)
    auth: WebAuth = request.app.state.web_auth
    checked = auth.check_password(username, password)
    if checked is None:
        LOGGER.warning("web login failed for user %s", loggable_username(username))
        return _login_form(templates, request, next_path=next_path, username=username, error=WRONG_CREDENTIALS,
                           status_code=status.HTTP_401_UNAUTHORIZED)
    LOGGER.info("web login: user %s", loggable_username(checked[0]))
    response = RedirectResponse(next_path, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        auth.session_cookie(*checked),
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
def logout(request: Request) -> Response:
    """End the browser's session (clear its cookie) and show the login form."""
    auth: WebAuth = request.app.state.web_auth
    username = auth.user_from_cookie(request.cookies.get(SESSION_COOKIE))
    if username is not None:
        LOGGER.info("web logout: user %s", loggable_username(username))
    response = RedirectResponse(request.app.url_path_for("login_page"), status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
