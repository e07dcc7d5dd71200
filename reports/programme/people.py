"""Readers, their teams and roles, the aliases that map DICOM names to them, and the web users linked to them.
The command line and the web page both act through these functions."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import Accreditation, Reader, ReaderAlias, ReaderRole, WebRole, WebUser
from db.readers import ReaderNameError, check_name, normalised


class PeopleError(ValueError):
    """A reader, alias or link that cannot be stored; the message says why."""


@dataclass(frozen=True)
class ReaderView:
    name: str
    role: str
    team: str
    aliases: list[str]
    web_users: list[str]


def _role(value: str) -> ReaderRole:
    try:
        return ReaderRole(value)
    except ValueError:
        raise PeopleError(f"unknown reader role {value!r}; known: {', '.join(r.value for r in ReaderRole)}") from None


def _name(value: str, what: str, max_length: int = 64) -> str:
    try:
        return check_name(value, what=what, max_length=max_length)
    except ReaderNameError as error:
        raise PeopleError(str(error)) from None


def get_reader(session: Session, name: str) -> Reader:
    """The reader named ``name`` (case and ``^`` ignored), or :class:`PeopleError`."""
    wanted = normalised(name)
    for reader in session.scalars(select(Reader)):
        if normalised(reader.name) == wanted:
            return reader
    raise PeopleError(f"no reader named {name!r} (see: myomap reader list)")


def list_readers(session: Session, *, team: str | None = None) -> list[ReaderView]:
    readers = session.scalars(select(Reader).order_by(Reader.team, Reader.name)).all()
    aliases: dict[int, list[str]] = {}
    for alias in session.scalars(select(ReaderAlias).order_by(ReaderAlias.pattern)):
        aliases.setdefault(alias.reader_id, []).append(alias.pattern)
    users: dict[int, list[str]] = {}
    for user in session.scalars(select(WebUser).where(WebUser.reader_id.is_not(None)).order_by(WebUser.username)):
        users.setdefault(user.reader_id or 0, []).append(user.username)
    return [
        ReaderView(reader.name, reader.role, reader.team, aliases.get(reader.id, []), users.get(reader.id, []))
        for reader in readers
        if team is None or team in teams_of(reader)
    ]


def teams_of(reader: Reader) -> list[str]:
    """The teams a reader belongs to; a supervisor may lead several, stored comma-separated."""
    return [team.strip() for team in reader.team.split(",") if team.strip()]


def add_reader(session: Session, name: str, *, role: str = ReaderRole.TRAINEE.value, team: str = "") -> Reader:
    name = _name(name, "reader name")
    if any(normalised(r.name) == normalised(name) for r in session.scalars(select(Reader))):
        raise PeopleError(f"a reader named {name!r} exists already")
    reader = Reader(name=name, role=_role(role).value, team=_team(team))
    session.add(reader)
    session.flush()
    return reader


def _team(team: str) -> str:
    joined = ", ".join(part.strip() for part in team.split(",") if part.strip())
    if len(joined) > 64:
        raise PeopleError(f"team {joined!r} is longer than 64 characters")
    return joined


def set_team(session: Session, name: str, team: str) -> Reader:
    reader = get_reader(session, name)
    reader.team = _team(team)
    session.flush()
    return reader


def set_role(session: Session, name: str, role: str) -> Reader:
    reader = get_reader(session, name)
    reader.role = _role(role).value
    session.flush()
    return reader


def add_alias(session: Session, pattern: str, reader_name: str) -> ReaderAlias:
    """Map a DICOM name (or a pattern with ``*`` and ``?``) to a reader; a pattern maps to one reader only.

    A reader that was only a name (made when contours first arrived under that name: no team, alias or web user)
    and that the alias now covers is taken into the reader: its row goes, its contours count as the reader's.
    An alias that would cover a reader with more to them is refused.
    """
    pattern = _name(pattern, "alias", max_length=128)
    reader = get_reader(session, reader_name)
    for alias in session.scalars(select(ReaderAlias)):
        if normalised(alias.pattern) == normalised(pattern):
            owner = session.get(Reader, alias.reader_id)
            raise PeopleError(f"alias {pattern!r} maps to {owner.name if owner else '?'!r} already")
    covered = [other for other in session.scalars(select(Reader).order_by(Reader.name))
               if other.id != reader.id and fnmatch.fnmatchcase(normalised(other.name), normalised(pattern))]
    kept = [other.name for other in covered if not _only_a_name(session, other)]
    if kept:
        raise PeopleError(f"alias {pattern!r} would take the contours of reader(s) {', '.join(kept)} too: use a "
                          "narrower pattern")
    for other in covered:
        session.execute(delete(Accreditation).where(Accreditation.reader_id == other.id))
        session.delete(other)
    alias = ReaderAlias(pattern=pattern, reader_id=reader.id)
    session.add(alias)
    session.flush()
    return alias


def _only_a_name(session: Session, reader: Reader) -> bool:
    """Whether the reader is nothing but a name: no team, no alias, no web user linked."""
    has_alias = session.scalar(select(ReaderAlias.id).where(ReaderAlias.reader_id == reader.id).limit(1))
    has_user = session.scalar(select(WebUser.id).where(WebUser.reader_id == reader.id).limit(1))
    return not reader.team and has_alias is None and has_user is None


def remove_alias(session: Session, pattern: str, reader_name: str | None = None) -> None:
    """Remove alias ``pattern``; with ``reader_name``, only when it is that reader's."""
    reader = get_reader(session, reader_name) if reader_name is not None else None
    for alias in session.scalars(select(ReaderAlias)):
        if normalised(alias.pattern) == normalised(pattern):
            if reader is not None and alias.reader_id != reader.id:
                owner = session.get(Reader, alias.reader_id)
                owner_name = owner.name if owner else "?"
                raise PeopleError(f"alias {pattern!r} is not {reader.name}'s: it maps to {owner_name}")
            session.delete(alias)
            session.flush()
            return
    raise PeopleError(f"no alias {pattern!r}")


def link_user(session: Session, username: str, reader_name: str | None, *, role: str | None = None) -> WebUser:
    """Link web user ``username`` to a reader (None: unlink) and set their web role (None: keep it)."""
    user = session.scalars(select(WebUser).where(WebUser.username == username)).one_or_none()
    if user is None:
        raise PeopleError(f"no web user named {username!r} (see: myomap user list)")
    if role is not None:
        try:
            user.role = WebRole(role).value
        except ValueError:
            raise PeopleError(f"unknown web role {role!r}; known: {', '.join(r.value for r in WebRole)}") from None
    user.reader_id = None if reader_name is None else get_reader(session, reader_name).id
    if user.role == WebRole.TRAINEE.value and user.reader_id is None:
        raise PeopleError(f"web user {username!r} is a trainee: link them to the reader they are")
    session.flush()
    return user
