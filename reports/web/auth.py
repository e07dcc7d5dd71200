"""Who is logged in: server-side sessions, HTTP Basic credentials, login throttling and ``require_login``.

A session cookie holds a random token; the ``web_session`` table keeps its SHA-256 digest, its user and its
expiry, so that logout, a new password and the user's removal end the session at once (the row is deleted).
Scripts and API clients send HTTP Basic credentials instead, checked against the ``web_user`` table on every
request (a verified pair is remembered in memory for a few minutes, keyed by an HMAC, so that scrypt does not run
on every call).

Password checks run scrypt (tens of milliseconds of CPU and 16 MiB each) in a small pool of their own threads, never
on the event loop and never in the pool that serves the other routes, and every attempt first passes the
:class:`reports.web.throttle.LoginThrottle`: a flood of wrong logins is answered 429 with ``Retry-After`` and
leaves ``/healthz`` and the pages as fast as before.

Without valid credentials a page (GET or HEAD outside ``/api/``) redirects to ``/login?next=<path>``; the API and
every other request get 401 ``{"detail": "login required"}`` with ``WWW-Authenticate: Basic realm="myomap"``.
Log lines name the user and the client address, never a password (users are staff, not patients).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlencode

from anyio import CapacityLimiter, to_thread
from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from config.settings import Settings
from reports.web.private_file import write_private_file
from reports.web.throttle import LoginThrottle
from reports.web.users import authenticate, end_session, find_user, session_user, start_session

LOGGER = logging.getLogger(__name__)

SESSION_COOKIE = "myomap_session"
REALM = "myomap"
SECRET_KEY_FILE = "web_secret_key"
#: How long a verified HTTP Basic pair is taken without running scrypt again, and how many are remembered.
BASIC_CACHE_S = 300.0
BASIC_CACHE_ENTRIES = 1024
#: Password checks at once: half the cores, so that a burst of logins leaves CPU to the node's other work.
HASH_THREADS = max(1, (os.cpu_count() or 2) // 2)

T = TypeVar("T")


def load_secret_key(settings: Settings) -> bytes:
    """The node's web key (HTTP Basic memory, form tokens): ``[web] secret_key``, or a random one generated once
    and kept in ``<storage root>/web_secret_key`` (mode 0600) so that forms survive restarts."""
    configured = settings.web.secret_key.get_secret_value()
    if configured:
        return configured.encode("utf-8")
    path = settings.storage_root / SECRET_KEY_FILE
    if not path.exists():
        write_private_file(path, secrets.token_hex(32) + "\n", replace=False)
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise RuntimeError(f"{path} is empty; delete it and a new key is made at the next start")
    return key.encode("utf-8")


def loggable_username(username: str) -> str:
    """A user name as it may appear in a log line: quoted, escaped, at most 64 characters."""
    return repr(username[:64])


def client_address(request: Request) -> str:
    """The client's address as uvicorn gives it (a trusted proxy's X-Forwarded-For already applied)."""
    return request.client.host if request.client is not None else "unknown"


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(name, password) of an HTTP Basic ``Authorization`` header; ("", "") when it is Basic but unreadable;
    None when there is no header or another scheme."""
    if authorization is None:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    username, separator, password = decoded.partition(":")
    return (username, password) if separator else ("", "")


class LoginRequiredError(Exception):
    """No valid session or credentials came with a request that needs them."""

    def __init__(self, *, basic_refused: bool = False) -> None:
        super().__init__("login required")
        self.basic_refused = basic_refused  # HTTP Basic credentials were sent and are wrong


class LoginThrottledError(Exception):
    """Too many failed logins of this user or from this address: try again after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(throttled_message(self.retry_after_s))


def throttled_message(retry_after_s: int) -> str:
    return f"Too many failed logins for this user or from this address: try again in {retry_after_s} s."


@dataclass
class WebAuth:
    """The login state of one web app: its users' table, the key, the session lifetime and the throttle."""

    session_factory: sessionmaker[Session]
    secret_key: bytes
    session_s: float
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    hash_limiter: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(HASH_THREADS), repr=False)
    _basic_cache: dict[bytes, tuple[str, float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, session_factory: sessionmaker[Session]) -> WebAuth:
        return cls(session_factory, load_secret_key(settings), settings.web.session_hours * 3600.0)

    async def run_hashing(self, function: Callable[..., T], *args: object) -> T:
        """Run a password check in the hashing threads (off the event loop and the routes' thread pool)."""
        return await to_thread.run_sync(function, *args, limiter=self.hash_limiter)

    def start_session(self, username: str) -> str:
        """A new session of ``username``: the token for the cookie.

        Raises
        ------
        LookupError
            If the user no longer exists.
        """
        with self.session_factory() as session:
            user = find_user(session, username)
            if user is None:
                raise LookupError(f"no user {loggable_username(username)}")
            token = start_session(session, user, lifetime_s=self.session_s)
            session.commit()
            return token

    def user_from_cookie(self, value: str | None) -> str | None:
        """The user of a live session cookie; None for anything else."""
        if not value:
            return None
        with self.session_factory() as session:
            user = session_user(session, value)
            return user.username if user is not None else None

    def end_session(self, value: str | None) -> str | None:
        """End the session of a cookie (logout): its user, or None when it was not live."""
        if not value:
            return None
        with self.session_factory() as session:
            username = end_session(session, value)
            session.commit()
            return username

    def check_password(self, username: str, password: str) -> str | None:
        """The user's name when the password is theirs, else None (runs scrypt: call it through
        :meth:`run_hashing`)."""
        with self.session_factory() as session:
            user = authenticate(session, username, password)
            return user.username if user is not None else None

    def _basic_key(self, username: str, password: str) -> bytes:
        return hmac.new(self.secret_key, f"{username}\0{password}".encode(), hashlib.sha256).digest()

    def remembered_basic(self, username: str, password: str) -> str | None:
        """The user when this HTTP Basic pair was verified a short while ago against the password the user still
        has (no scrypt); None otherwise."""
        with self._lock:
            remembered = self._basic_cache.get(self._basic_key(username, password))
        if remembered is None or remembered[1] <= time.monotonic():
            return None
        with self.session_factory() as session:
            user = find_user(session, username)
            # Still the password it was checked against (a changed password ends the shortcut).
            if user is not None and hmac.compare_digest(user.password_hash, remembered[0]):
                return username
        return None

    def verify_basic(self, username: str, password: str) -> str | None:
        """The user when HTTP Basic credentials are right (runs scrypt; remembered for :meth:`remembered_basic`)."""
        with self.session_factory() as session:
            user = authenticate(session, username, password)
            if user is None:
                return None
            checked = (user.username, user.password_hash)
        with self._lock:
            if len(self._basic_cache) >= BASIC_CACHE_ENTRIES:
                self._basic_cache.clear()
            self._basic_cache[self._basic_key(username, password)] = (checked[1], time.monotonic() + BASIC_CACHE_S)
        return checked[0]

    async def login_basic(self, username: str, password: str, address: str) -> str | None:
        """The user of HTTP Basic credentials, through the throttle and the hashing threads; None when wrong.

        Raises
        ------
        LoginThrottledError
            When this user or address must wait.
        """
        remembered = await run_in_threadpool(self.remembered_basic, username, password)
        if remembered is not None:
            return remembered
        admission = self.throttle.admit(username, address)
        if not admission.admitted:
            if admission.first_refusal:
                LOGGER.warning("web login throttled (HTTP Basic) for user %s from %s for %.0f s",
                               loggable_username(username), address, admission.retry_after_s)
            raise LoginThrottledError(admission.retry_after_s)
        user = await self.run_hashing(self.verify_basic, username, password)
        if user is not None:
            self.throttle.succeeded(username, address)
        return user


async def require_login(request: Request) -> str:
    """Dependency: the logged-in user (also on ``request.state.user`` for the page header).

    Raises
    ------
    LoginRequiredError
        Without a valid session cookie or HTTP Basic credentials (answered by :func:`login_required_response`).
    LoginThrottledError
        When HTTP Basic credentials come from a user or address that must wait (answered 429).
    """
    auth: WebAuth = request.app.state.web_auth
    credentials = basic_credentials(request.headers.get("authorization"))
    if credentials is not None:
        address = client_address(request)
        username = await auth.login_basic(*credentials, address)
        if username is None:
            LOGGER.warning("web login failed (HTTP Basic) for user %s from %s",
                           loggable_username(credentials[0]), address)
            raise LoginRequiredError(basic_refused=True)
    else:
        username = await run_in_threadpool(auth.user_from_cookie, request.cookies.get(SESSION_COOKIE))
        if username is None:
            raise LoginRequiredError()
    request.state.user = username
    return username


async def login_throttled_response(request: Request, error: Exception) -> Response:
    """429 with ``Retry-After`` and a message (the login form shows it too)."""
    retry_after_s = error.retry_after_s if isinstance(error, LoginThrottledError) else 60
    return JSONResponse({"detail": throttled_message(retry_after_s)}, status_code=429,
                        headers={"Retry-After": str(retry_after_s)})


def is_page_request(request: Request) -> bool:
    """A browser's page view: GET or HEAD outside the JSON API."""
    return request.method in ("GET", "HEAD") and not request.url.path.startswith("/api/")


async def login_required_response(request: Request, error: Exception) -> Response:
    """Pages redirect to the login form (coming back afterwards); everything else gets 401 with a Basic
    challenge. Wrong HTTP Basic credentials get 401 on pages too (a script sent them, not the form)."""
    basic_refused = isinstance(error, LoginRequiredError) and error.basic_refused
    if is_page_request(request) and not basic_refused:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login_path = request.app.url_path_for("login_page")
        return RedirectResponse(f"{login_path}?{urlencode({'next': target})}", status_code=303)
    return JSONResponse(
        {"detail": "login required"}, status_code=401, headers={"WWW-Authenticate": f'Basic realm="{REALM}"'}
    )
