"""Who is logged in: signed session cookies, HTTP Basic credentials and the ``require_login`` dependency.

A session cookie reads ``<user name, base64url>.<expiry, Unix seconds>.<HMAC-SHA256, hex>``; the MAC covers the
name and the expiry and is keyed with the node's secret key and the user's current password hash, so that a
cookie ends when it expires, when the user is removed and when their password changes. Scripts and API clients
send HTTP Basic credentials instead, checked against the ``web_user`` table on every request (a verified pair
is remembered in memory for a few minutes, keyed by an HMAC, so that scrypt does not run on every call).

Without valid credentials a page (GET or HEAD outside ``/api/``) redirects to ``/login?next=<path>``; the API and
every other request get 401 ``{"detail": "login required"}`` with ``WWW-Authenticate: Basic realm="myomap"``.
Log lines name the user, never a password (users are staff, not patients).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response

from config.settings import Settings
from reports.web.private_file import write_private_file
from reports.web.users import authenticate, find_user

LOGGER = logging.getLogger(__name__)

SESSION_COOKIE = "myomap_session"
REALM = "myomap"
SECRET_KEY_FILE = "web_secret_key"
#: How long a verified HTTP Basic pair is taken without running scrypt again, and how many are remembered.
BASIC_CACHE_S = 300.0
BASIC_CACHE_ENTRIES = 1024


def load_secret_key(settings: Settings) -> bytes:
    """The key that signs session cookies: ``[web] secret_key``, or a random one generated once and kept in
    ``<storage root>/web_secret_key`` (mode 0600) so that logins survive restarts."""
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


@dataclass
class WebAuth:
    """The login state of one web app: its users' table, the cookie key and the session lifetime."""

    session_factory: sessionmaker[Session]
    secret_key: bytes
    session_s: float
    _basic_cache: dict[bytes, tuple[str, float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, session_factory: sessionmaker[Session]) -> WebAuth:
        return cls(session_factory, load_secret_key(settings), settings.web.session_hours * 3600.0)

    def _mac(self, name_b64: str, expiry: int, password_hash: str) -> str:
        message = f"{name_b64}.{expiry}\n{password_hash}".encode()
        return hmac.new(self.secret_key, message, hashlib.sha256).hexdigest()

    def session_cookie(self, username: str, password_hash: str, *, now: float | None = None) -> str:
        """The cookie value of a session of ``username`` starting ``now`` (Unix seconds)."""
        expiry = int((time.time() if now is None else now) + self.session_s)
        name_b64 = base64.urlsafe_b64encode(username.encode("utf-8")).decode("ascii").rstrip("=")
        return f"{name_b64}.{expiry}.{self._mac(name_b64, expiry, password_hash)}"

    def user_from_cookie(self, value: str | None, *, now: float | None = None) -> str | None:
        """The user of a valid, unexpired session cookie; None for anything else."""
        if not value:
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        name_b64, expiry_text, mac = parts
        if int(expiry_text) <= (time.time() if now is None else now):
            return None
        try:
            username = base64.urlsafe_b64decode(name_b64 + "=" * (-len(name_b64) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        with self.session_factory() as session:
            user = find_user(session, username)
            password_hash = user.password_hash if user is not None else None
        if password_hash is None:
            return None
        return username if hmac.compare_digest(self._mac(name_b64, int(expiry_text), password_hash), mac) else None

    def check_password(self, username: str, password: str) -> tuple[str, str] | None:
        """(name, password hash) when the password is the user's, else None."""
        with self.session_factory() as session:
            user = authenticate(session, username, password)
            return (user.username, user.password_hash) if user is not None else None

    def user_from_basic(self, username: str, password: str) -> str | None:
        """The user when HTTP Basic credentials are right, else None."""
        key = hmac.new(self.secret_key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            remembered = self._basic_cache.get(key)
        if remembered is not None and remembered[1] > now:
            with self.session_factory() as session:
                user = find_user(session, username)
                # Still the password it was checked against (a changed password ends the shortcut).
                if user is not None and hmac.compare_digest(user.password_hash, remembered[0]):
                    return username
        checked = self.check_password(username, password)
        if checked is None:
            return None
        with self._lock:
            if len(self._basic_cache) >= BASIC_CACHE_ENTRIES:
                self._basic_cache.clear()
            self._basic_cache[key] = (checked[1], now + BASIC_CACHE_S)
        return checked[0]


def require_login(request: Request) -> str:
    """Dependency: the logged-in user (also on ``request.state.user`` for the page header).

    Raises
    ------
    LoginRequiredError
        Without a valid session cookie or HTTP Basic credentials (answered by :func:`login_required_response`).
    """
    auth: WebAuth = request.app.state.web_auth
    credentials = basic_credentials(request.headers.get("authorization"))
    if credentials is not None:
        username = auth.user_from_basic(*credentials)
        if username is None:
            LOGGER.warning("web login failed (HTTP Basic) for user %s", loggable_username(credentials[0]))
            raise LoginRequiredError(basic_refused=True)
    else:
        username = auth.user_from_cookie(request.cookies.get(SESSION_COOKIE))
        if username is None:
            raise LoginRequiredError()
    request.state.user = username
    return username


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
