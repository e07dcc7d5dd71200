"""People of the training programme: a contour's reader name as it arrives in DICOM, matched to a reader row.

A name arrives as the contour object's ContentCreatorName, OperatorsName, structure set label, series description
or calling AE title (:mod:`dicomnode.io.contours.reader_identity`). The supervisor maps such names to a reader with
aliases (``reader_alias``): an exact name, or a pattern with ``*`` and ``?``. Names compare without case, with a
person name's ``^`` read as a space (``DOE^JANE`` matches the alias ``doe jane``).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Reader, ReaderAlias, ReaderRole

_WILDCARDS = "*?["
LOGGER = logging.getLogger(__name__)


class ReaderNameError(ValueError):
    """A reader name or alias pattern that cannot be stored."""


def normalised(name: str) -> str:
    """``name`` as names compare: person-name components and words joined by one space, without case."""
    return " ".join(name.replace("^", " ").split()).casefold()


def check_name(name: str, *, what: str = "reader name", max_length: int = 64) -> str:
    """``name`` stripped, or :class:`ReaderNameError` saying why it cannot be stored."""
    stripped = " ".join(name.split())
    if not stripped:
        raise ReaderNameError(f"{what} is empty")
    if len(stripped) > max_length:
        raise ReaderNameError(f"{what} {stripped!r} is longer than {max_length} characters")
    return stripped


def _is_pattern(pattern: str) -> bool:
    return any(char in pattern for char in _WILDCARDS)


def _specificity(pattern: str) -> tuple[int, int]:
    # Exact names first, then the pattern with the most literal characters: "doe j*" before "doe*".
    return (0 if not _is_pattern(pattern) else 1, -sum(char not in _WILDCARDS for char in pattern))


@dataclass(frozen=True)
class ReaderNames:
    """Aliases and readers read once, to resolve many names (a query over many results) without a query each."""

    aliases: Sequence[tuple[str, int]]  # (normalised pattern, reader id), most specific first
    readers_by_id: dict[int, Reader]
    readers_by_name: dict[str, Reader]  # normalised name -> reader

    @classmethod
    def load(cls, session: Session) -> ReaderNames:
        readers = list(session.scalars(select(Reader)))
        aliases = sorted(
            ((normalised(alias.pattern), alias.reader_id, alias.id) for alias in session.scalars(select(ReaderAlias))),
            key=lambda item: (*_specificity(item[0]), item[2]),
        )
        return cls(
            aliases=[(pattern, reader_id) for pattern, reader_id, _ in aliases],
            readers_by_id={reader.id: reader for reader in readers},
            readers_by_name={normalised(reader.name): reader for reader in readers},
        )

    def reader(self, dicom_name: str) -> Reader | None:
        """The reader an alias maps ``dicom_name`` to, else the reader of that name, else None."""
        name = normalised(dicom_name)
        for pattern, reader_id in self.aliases:
            if fnmatch.fnmatchcase(name, pattern):
                return self.readers_by_id[reader_id]
        return self.readers_by_name.get(name)

    def named(self, name: str) -> Reader | None:
        """The reader called ``name``, else the one an alias maps ``name`` to (a person asked for by name)."""
        return self.readers_by_name.get(normalised(name)) or self.reader(name)

    def person(self, dicom_name: str) -> str:
        """The reader's name ``dicom_name`` stands for: the matched reader's, else ``dicom_name`` itself."""
        reader = self.reader(dicom_name)
        return reader.name if reader is not None else dicom_name


def find_reader(session: Session, dicom_name: str) -> Reader | None:
    """The reader ``dicom_name`` (as it arrived in DICOM, or a reader's own name) stands for, or None."""
    return ReaderNames.load(session).reader(dicom_name)


def reader_role(session: Session, name: str) -> ReaderRole | None:
    """The role of the reader ``name`` stands for; None when no reader row says (callers then fall back on their
    own convention, e.g. the "expert" name prefix)."""
    reader = find_reader(session, name)
    if reader is None:
        return None
    try:
        return ReaderRole(reader.role)
    except ValueError:
        return None


def register_reader(session: Session, dicom_name: str, *, role: ReaderRole = ReaderRole.TRAINEE) -> Reader | None:
    """The reader ``dicom_name`` stands for, created with ``role`` when no alias or reader matches; None (and
    nothing stored) for a name too long for the reader table, which an alias can still map.

    Two jobs registering the same new reader at once both get the one row: the loser's insert fails on the unique
    name and it reads the winner's.
    """
    found = find_reader(session, dicom_name)
    if found is not None:
        return found
    try:
        name = check_name(dicom_name)
    except ReaderNameError as error:
        LOGGER.warning("reader not registered: %s", str(error).replace(repr(dicom_name), "the name"))
        return None
    try:
        with session.begin_nested():
            reader = Reader(name=name, role=role.value, team="")
            session.add(reader)
    except IntegrityError:
        existing = session.scalars(select(Reader).where(Reader.name == name)).one_or_none()
        if existing is None:
            raise
        return existing
    return reader
