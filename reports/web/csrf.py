"""Cross-site request forgery: an Origin check on every state-changing request, JSON only on the API, and a
token in every form.

A page on another site (or on another port of this host, which a browser treats as another site) can make a
logged-in browser send a form; SameSite cookies alone do not stop a sibling port. So:

- :class:`CsrfMiddleware` refuses a POST, PUT, PATCH or DELETE whose ``Origin`` (or, without one, ``Referer``) is
  not this site with 403 and a message; a ``null`` Origin is refused too. Requests with neither header (scripts,
  ``curl``) pass this check. On ``/api/`` such requests must say ``Content-Type: application/json`` (else 415):
  a browser sends that cross-site only after a CORS preflight, which the node never grants.
- Every form carries a token: ``{{ csrf_field() }}`` in a template (a global that any template or macro can call)
  writes ``<input type="hidden" name="csrf_token" ...>``; the token is an HMAC of a random per-browser cookie
  (``myomap_csrf``, set with the page that first shows a form), so another site can neither read nor forge it.
  The :func:`require_csrf` dependency (``CsrfDep``) checks it on a form post; scripts may send it in the
  ``X-CSRF-Token`` header instead. Routes that read their form themselves call :func:`check_csrf_token`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from markupsafe import Markup, escape
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER = logging.getLogger(__name__)

CSRF_COOKIE = "myomap_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_MEDIA_TYPE = "application/json"
#: A browser id cookie is this many random bytes (hex in the cookie); it lives as long as the browser keeps it.
BROWSER_ID_BYTES = 32
CSRF_COOKIE_MAX_AGE_S = 7 * 24 * 3600

FOREIGN_ORIGIN = "cross-origin request refused: {origin} is not this site ({own})"
JSON_ONLY = "the API takes Content-Type: application/json, got {content_type}"
BAD_TOKEN = "the form's security token is missing or out of date: reload the page and send it again"


@dataclass
class _RequestTokens:
    """What a request's templates need: the token of this browser, and whether a page used it (then the
    browser's id cookie goes out with the response)."""

    key: bytes
    browser_id: str
    new_browser: bool
    used: bool = field(default=False)

    @property
    def token(self) -> str:
        self.used = True
        return form_token(self.key, self.browser_id)


_current: ContextVar[_RequestTokens | None] = ContextVar("myomap_csrf_tokens", default=None)


def form_token(key: bytes, browser_id: str) -> str:
    """The token a form of browser ``browser_id`` carries."""
    return hmac.new(key, b"csrf\0" + browser_id.encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_token() -> str:
    """The current request's form token (template global ``csrf_token()``); empty outside a request."""
    tokens = _current.get()
    return tokens.token if tokens is not None else ""


def csrf_field() -> Markup:
    """The hidden form field with the token (template global ``csrf_field()``)."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, escape(csrf_token()))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _own_origin(scope: Scope) -> str:
    host = _header(scope, b"host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host.lower()}"


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else "null"


def foreign_origin(scope: Scope, trusted_origins: frozenset[str] = frozenset()) -> str | None:
    """The origin a state-changing request came from when it is not this site, else None."""
    origin = _header(scope, b"origin")
    if origin is None:
        referer = _header(scope, b"referer")
        if referer is None:
            return None  # not a browser's cross-site request: browsers send Origin with every POST
        origin = _origin_of(referer)
    origin = origin.strip().lower()
    if origin == _own_origin(scope) or origin in trusted_origins:
        return None
    return origin


def _browser_id(scope: Scope) -> str | None:
    cookie_header = _header(scope, b"cookie")
    if not cookie_header:
        return None
    # Starlette's lenient parser, as for request.cookies: one malformed cookie of another site must not hide ours.
    value = cookie_parser(cookie_header).get(CSRF_COOKIE, "")
    return value if len(value) == 2 * BROWSER_ID_BYTES and all(c in "0123456789abcdef" for c in value) else None


async def _refuse(send: Send, status_code: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode("utf-8")
    await send({
        "type": "http.response.start",
        "status": status_code,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


class CsrfMiddleware:
    """ASGI middleware: the Origin and content-type checks, and the per-request form token for the templates."""

    def __init__(self, app: ASGIApp, *, key: bytes, trusted_origins: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.key = key
        self.trusted_origins = frozenset(origin.lower().rstrip("/") for origin in trusted_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in UNSAFE_METHODS:
            origin = foreign_origin(scope, self.trusted_origins)
            if origin is not None:
                LOGGER.warning("refused %s %s from origin %r (client %s)", scope["method"], scope["path"],
                               origin[:100], (scope.get("client") or ("?",))[0])
                await _refuse(send, status.HTTP_403_FORBIDDEN, FOREIGN_ORIGIN.format(
                    origin=origin[:100], own=_own_origin(scope)))
                return
            if scope["path"].startswith("/api/"):
                content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
                if content_type != JSON_MEDIA_TYPE:
                    await _refuse(send, status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                                  JSON_ONLY.format(content_type=content_type[:100] or "none"))
                    return
        browser_id = _browser_id(scope)
        tokens = _RequestTokens(self.key, browser_id or secrets.token_hex(BROWSER_ID_BYTES), browser_id is None)
        scope.setdefault("state", {})["csrf_browser_id"] = browser_id
        reset = _current.set(tokens)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and tokens.new_browser and tokens.used:
                secure = "; Secure" if scope.get("scheme") == "https" else ""
                cookie = (f"{CSRF_COOKIE}={tokens.browser_id}; Max-Age={CSRF_COOKIE_MAX_AGE_S}; Path=/; HttpOnly; "
                          f"SameSite=Strict{secure}")
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            _current.reset(reset)


def check_csrf_token(request: Request, token: str | None) -> None:
    """Check a form's token against this browser's cookie.

    Raises
    ------
    HTTPException
        403 with a message when the token is missing or not this browser's.
    """
    browser_id = request.scope.get("state", {}).get("csrf_browser_id")
    key: bytes = request.app.state.csrf_key
    if not token or browser_id is None or not hmac.compare_digest(form_token(key, browser_id), token):
        client = request.client.host if request.client is not None else "?"
        LOGGER.warning("refused %s %s without a valid form token (client %s)", request.method, request.url.path,
                       client)
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=BAD_TOKEN)


async def require_csrf(request: Request) -> None:
    """Dependency: a state-changing request outside ``/api/`` carries this browser's token (form field
    ``csrf_token`` or header ``X-CSRF-Token``). The API is guarded by the Origin and JSON checks instead.

    Raises
    ------
    HTTPException
        403 (:func:`check_csrf_token`).
    """
    if request.method not in UNSAFE_METHODS or request.url.path.startswith("/api/"):
        return
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            value = (await request.form()).get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
    check_csrf_token(request, token)


CsrfDep = Annotated[None, Depends(require_csrf)]
