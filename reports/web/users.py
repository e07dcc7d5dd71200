"""The web page's users in the node's database (``web_user``): add, change password, remove, list, check.

Passwords are stored only as salted scrypt hashes (:mod:`reports.web.passwords`). At the first start of a node
with the login on and no user yet, :func:`ensure_initial_admin` creates ``admin`` with a random password and
writes that password to a file only the node's user can read.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.models import WebSession, WebUser
from reports.web.passwords import hash_password, verify_password
from reports.web.private_file import write_private_file

LOGGER = logging.getLogger(__name__)

INITIAL_ADMIN = "admin"
INITIAL_PASSWORD_FILE = "initial_admin_password"
MAX_USERNAME_LENGTH = 64  # the column's length


class UserError(ValueError):
    """A user command that cannot be done; the message says why."""


class UserExistsError(UserError):
    pass


class UnknownUserError(UserError):
    pass


class InvalidUserInputError(UserError):
    """An empty password or a user name that cannot be used."""


def check_username(username: str) -> str:
    """``username`` if it can name a user: 1-64 printable characters, no space and no colon (HTTP Basic
    separates the name from the password at the first colon)."""
    if not 1 <= len(username) <= MAX_USERNAME_LENGTH:
        raise InvalidUserInputError(f"a user name has 1 to {MAX_USERNAME_LENGTH} characters")
    if ":" in username or not username.isprintable() or any(c.isspace() for c in username):
        raise InvalidUserInputError("a user name has no spaces, colons or control characters")
    return username


def _check_password(password: str) -> str:
    if not password:
        raise InvalidUserInputError("the password is empty")
    return password


def find_user(session: Session, username: str) -> WebUser | None:
    return session.scalars(select(WebUser).where(WebUser.username == username)).one_or_none()


def add_user(session: Session, username: str, password: str) -> WebUser:
    """Add a user (the caller commits).

    Raises
    ------
    UserExistsError
        If the name is taken.
    InvalidUserInputError
        If the name cannot be used or the password is empty.
    """
    check_username(username)
    _check_password(password)
    if find_user(session, username) is not None:
        raise UserExistsError(f"user {username} already exists")
    user = WebUser(username=username, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> None:
    """Give a user a new password (the caller commits); the user's sessions end with it.

    Raises
    ------
    UnknownUserError, InvalidUserInputError
    """
    _check_password(password)
    user = find_user(session, username)
    if user is None:
        raise UnknownUserError(f"no user {username}")
    user.password_hash = hash_password(password)
    end_user_sessions(session, user_id=user.id)


def remove_user(session: Session, username: str) -> None:
    """Remove a user (the caller commits).

    Raises
    ------
    UnknownUserError
    """
    user = find_user(session, username)
    if user is None:
        raise UnknownUserError(f"no user {username}")
    end_user_sessions(session, user_id=user.id)
    session.delete(user)


def list_users(session: Session) -> list[WebUser]:
    return list(session.scalars(select(WebUser).order_by(WebUser.username)))


@cache
def _unknown_user_hash() -> str:
    # Checked against when the user does not exist, so that the answer takes as long as for a wrong password.
    return hash_password(secrets.token_urlsafe(16))


def authenticate(session: Session, username: str, password: str) -> WebUser | None:
    """The user when ``password`` is theirs, else None (the same answer and time whether the user exists)."""
    user = find_user(session, username) if username else None
    matches = verify_password(password, user.password_hash if user is not None else _unknown_user_hash())
    return user if user is not None and matches else None


#: Random bytes of a session token (the cookie holds them in URL-safe base64; the table only their SHA-256).
SESSION_TOKEN_BYTES = 32


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(session: Session, user: WebUser, *, lifetime_s: float, now: datetime | None = None) -> str:
    """A new session of ``user`` (the caller commits): the token for the browser's cookie. Sessions that have
    expired, of anyone, are removed on the way."""
    now = now or datetime.now(UTC)
    session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    session.add(WebSession(token_sha256=_token_digest(token), user_id=user.id, created_at=now,
                           expires_at=now + timedelta(seconds=lifetime_s)))
    session.flush()
    return token


def session_user(session: Session, token: str, *, now: datetime | None = None) -> WebUser | None:
    """The user of a live session token, else None (unknown, ended or expired)."""
    if not token or len(token) > 128:
        return None
    now = now or datetime.now(UTC)
    row = session.execute(
        select(WebUser, WebSession.expires_at)
        .join(WebSession, WebSession.user_id == WebUser.id)
        .where(WebSession.token_sha256 == _token_digest(token))
    ).one_or_none()
    if row is None:
        return None
    user, expires_at = row
    expires_at = expires_at.replace(tzinfo=UTC) if expires_at.tzinfo is None else expires_at  # SQLite: naive UTC
    return user if expires_at > now else None


def end_session(session: Session, token: str) -> str | None:
    """End one session (the caller commits): the name of its user, or None when it was not live."""
    user = session_user(session, token, now=datetime.min.replace(tzinfo=UTC))
    session.execute(delete(WebSession).where(WebSession.token_sha256 == _token_digest(token)))
    return user.username if user is not None else None


def end_user_sessions(session: Session, *, user_id: int) -> int:
    """End every session of a user (the caller commits); how many there were."""
    result = session.execute(delete(WebSession).where(WebSession.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


def initial_password_path(settings: Settings) -> Path:
    return settings.storage_root / INITIAL_PASSWORD_FILE


def ensure_initial_admin(settings: Settings, session_factory: sessionmaker[Session]) -> Path | None:
    """At the first start (login on, no user yet) create ``admin`` with a random password written to
    ``<storage root>/initial_admin_password`` (mode 0600); the file, or None when nothing was done."""
    if not settings.web.login:
        return None
    with session_factory() as session:
        if session.scalar(select(func.count()).select_from(WebUser)):
            return None
    password = secrets.token_urlsafe(18)
    try:
        with session_factory() as session:
            add_user(session, INITIAL_ADMIN, password)
            session.commit()
    except (IntegrityError, UserExistsError):
        # Another node sharing the database created the first user at the same moment; its file is the one.
        LOGGER.info("web user %s was created by another process", INITIAL_ADMIN)
        return None
    path = initial_password_path(settings)
    write_private_file(path, password + "\n", replace=True)
    LOGGER.warning(
        "web page login: created user %s; its password is in %s (change it with `myomap user passwd %s`)",
        INITIAL_ADMIN, path, INITIAL_ADMIN,
    )
    return path
