"""Queries of the node, keyword-only, each taking the caller's session (the caller owns the transaction)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypedDict, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    null,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session, selectinload

from db import readers
from db.models import (
    Instance,
    Job,
    JobState,
    ReaderRole,
    Result,
    Series,
    SeriesRole,
    SeriesState,
    Study,
    Transfer,
    TransferState,
    utcnow,
)


def as_utc(moment: datetime) -> datetime:
    """A timestamp read back from the database as an aware UTC datetime (SQLite returns naive ones)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def get_study_by_uid(session: Session, *, study_instance_uid: str) -> Study | None:
    return session.scalars(select(Study).where(Study.study_instance_uid == study_instance_uid)).one_or_none()


def get_or_create_study(
    session: Session,
    *,
    study_instance_uid: str,
    patient_id: str = "",
    patient_name: str = "",
    study_date: str = "",
    study_description: str = "",
    accession_number: str = "",
) -> Study:
    """The study with this UID, created with the given attributes if it is new (a racing insert raises
    ``IntegrityError`` at flush; retry the transaction)."""
    study = get_study_by_uid(session, study_instance_uid=study_instance_uid)
    if study is None:
        study = Study(
            study_instance_uid=study_instance_uid,
            patient_id=patient_id,
            patient_name=patient_name,
            study_date=study_date,
            study_description=study_description,
            accession_number=accession_number,
        )
        session.add(study)
        session.flush()
    return study


def get_series(session: Session, *, series_id: int) -> Series | None:
    return session.get(Series, series_id)


def get_series_by_uid(session: Session, *, series_instance_uid: str) -> Series | None:
    return session.scalars(
        select(Series).where(Series.series_instance_uid == series_instance_uid)
    ).one_or_none()


def get_or_create_series(
    session: Session,
    *,
    study_id: int,
    series_instance_uid: str,
    role: SeriesRole,
    expected_instances: int | None,
    series_number: int | None = None,
    modality: str = "",
    description: str = "",
    manufacturer: str = "",
    calling_ae: str = "",
    calling_host: str = "",
) -> Series:
    """The series with this UID, created if new; an existing series learns a role or expected count it lacked."""
    series = get_series_by_uid(session, series_instance_uid=series_instance_uid)
    if series is None:
        series = Series(
            study_id=study_id,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            modality=modality,
            description=description,
            manufacturer=manufacturer,
            role=role,
            state=SeriesState.RECEIVING,
            expected_instances=expected_instances,
            n_instances=0,
            revision=0,
            calling_ae=calling_ae,
            calling_host=calling_host,
        )
        session.add(series)
        session.flush()
        return series
    if series.role == SeriesRole.OTHER and role != SeriesRole.OTHER:
        series.role = role
    if series.expected_instances is None and expected_instances is not None:
        series.expected_instances = expected_instances
    return series


def get_instance_by_uid(session: Session, *, sop_instance_uid: str) -> Instance | None:
    return session.scalars(
        select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
    ).one_or_none()


def list_instances(session: Session, *, series_id: int) -> list[Instance]:
    """Instances of a series ordered by Instance Number (then id); never sort mapping images by this order."""
    return list(
        session.scalars(
            select(Instance)
            .where(Instance.series_id == series_id)
            .order_by(Instance.instance_number, Instance.id)
        )
    )


def count_instances(session: Session, *, series_id: int) -> int:
    return (
        session.scalar(select(func.count()).select_from(Instance).where(Instance.series_id == series_id)) or 0
    )


def record_arrival(
    session: Session, *, series_id: int, added: int, reopen: bool, at: datetime | None = None
) -> None:
    """Count ``added`` new instances of a series and stamp the arrival; with ``reopen``, a series that is no
    longer receiving goes back to RECEIVING with ``revision + 1`` (one atomic update, safe under concurrency)."""
    moment = at or utcnow()
    if reopen:
        session.execute(
            update(Series)
            .where(Series.id == series_id, Series.state != SeriesState.RECEIVING)
            .values(state=SeriesState.RECEIVING, revision=Series.revision + 1, completed_at=None)
        )
    session.execute(
        update(Series)
        .where(Series.id == series_id)
        .values(n_instances=Series.n_instances + added, last_received_at=moment)
    )


def recount_instances(session: Session, *, series_id: int) -> int:
    """Set ``n_instances`` from the instance rows (after an instance moved between series) and return it."""
    count = count_instances(session, series_id=series_id)
    session.execute(update(Series).where(Series.id == series_id).values(n_instances=count))
    return count


def mark_series_complete(
    session: Session, *, series_id: int, revision: int, at: datetime | None = None
) -> bool:
    """Move a RECEIVING series at ``revision`` to COMPLETE; False when another thread or process did it first
    or the series was re-opened meanwhile (exactly one caller wins)."""
    # An UPDATE's result is a CursorResult (it has rowcount); Session.execute types every result as Result.
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Series)
            .where(Series.id == series_id, Series.state == SeriesState.RECEIVING, Series.revision == revision)
            .values(state=SeriesState.COMPLETE, completed_at=at or utcnow())
        ),
    )
    return result.rowcount == 1


def set_series_state(session: Session, *, series_id: int, state: SeriesState) -> None:
    """Record what the processing side did with a complete series (DONE, FAILED or STORED)."""
    session.execute(update(Series).where(Series.id == series_id).values(state=state))


def series_quiet_since(session: Session, *, before: datetime) -> list[tuple[int, int]]:
    """(series id, revision) of RECEIVING series whose last instance arrived before ``before``."""
    rows = session.execute(
        select(Series.id, Series.revision).where(
            Series.state == SeriesState.RECEIVING, Series.last_received_at < before
        )
    )
    return [(row.id, row.revision) for row in rows]


def series_expected_reached(session: Session) -> list[tuple[int, int]]:
    """(series id, revision) of RECEIVING series that hold at least their expected number of instances."""
    rows = session.execute(
        select(Series.id, Series.revision).where(
            Series.state == SeriesState.RECEIVING,
            Series.expected_instances.is_not(None),
            Series.n_instances >= Series.expected_instances,
        )
    )
    return [(row.id, row.revision) for row in rows]


def series_in_states(session: Session, *, states: Iterable[SeriesState]) -> list[Series]:
    return list(session.scalars(select(Series).where(Series.state.in_(list(states))).order_by(Series.id)))


def settled_series(
    session: Session, *, roles: Iterable[SeriesRole], settled_before: datetime
) -> list[tuple[int, int]]:
    """(series id, revision) of COMPLETE series with one of ``roles`` whose study holds no series of those roles
    that is still RECEIVING or received an instance at or after ``settled_before``."""
    roles = list(roles)
    busy_studies = select(Series.study_id).where(
        Series.role.in_(roles),
        or_(Series.state == SeriesState.RECEIVING, Series.last_received_at >= settled_before),
    )
    rows = session.execute(
        select(Series.id, Series.revision).where(
            Series.state == SeriesState.COMPLETE, Series.role.in_(roles), Series.study_id.not_in(busy_studies)
        ).order_by(Series.id)
    )
    return [(row.id, row.revision) for row in rows]


# Core statements of the ingest path: no ORM unit of work, one short transaction per instance. They take a
# Connection (``engine.connect()``, or ``session.connection()`` inside a session's transaction).

# Each model is a plain declarative class, so it maps a Table; DeclarativeBase types ``__table__`` as the wider
# FromClause (which could be a join or subquery), and insert/update want the Table.
_STUDY = cast(Table, Study.__table__)
_SERIES = cast(Table, Series.__table__)
_INSTANCE = cast(Table, Instance.__table__)


def _inserted_id(result: CursorResult[Any]) -> int:
    """The id of the one row a single-row INSERT added."""
    # SQLAlchemy types inserted_primary_key as optional: it is None only when the INSERT added no row.
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the INSERT reported no primary key")
    return int(key[0])


@dataclass(frozen=True)
class InstanceRow:
    """The current version of a stored instance, as the ingest path needs it."""

    id: int
    series_id: int
    study_id: int
    sha256: str
    version: int
    path: str


@dataclass(frozen=True)
class SeriesRow:
    """A series' ids and what assembly learns from its first instances."""

    id: int
    study_id: int
    role: SeriesRole
    expected_instances: int | None


_SELECT_INSTANCE_ROW = (
    select(
        _INSTANCE.c.id,
        _INSTANCE.c.series_id,
        _SERIES.c.study_id,
        _INSTANCE.c.sha256,
        _INSTANCE.c.version,
        _INSTANCE.c.path,
    )
    .join_from(_INSTANCE, _SERIES, _INSTANCE.c.series_id == _SERIES.c.id)
    .where(_INSTANCE.c.sop_instance_uid == bindparam("sop_instance_uid"))
)
_SELECT_SERIES_ROW = select(
    _SERIES.c.id, _SERIES.c.study_id, _SERIES.c.role, _SERIES.c.expected_instances
).where(_SERIES.c.series_instance_uid == bindparam("series_instance_uid"))
_SELECT_STUDY_ID = select(_STUDY.c.id).where(_STUDY.c.study_instance_uid == bindparam("study_instance_uid"))
_INSERT_INSTANCE = insert(_INSTANCE)  # built once: the parameters name the columns, defaults fill the rest
_RECEIVING = SeriesState.RECEIVING
# One statement counts the arrival and re-opens a series that was no longer receiving. Every right-hand side
# reads the row as it was before the update (SQL semantics in SQLite and PostgreSQL alike), so the revision
# goes up exactly when the state was not RECEIVING. Matching on id, UID and study also detects a cached id
# whose row was deleted or re-used meanwhile (no row updated).
_COUNT_ARRIVAL = (
    update(_SERIES)
    .where(
        _SERIES.c.id == bindparam("b_series_id"),
        _SERIES.c.series_instance_uid == bindparam("b_series_instance_uid"),
        _SERIES.c.study_id == bindparam("b_study_id"),
    )
    .values(
        n_instances=_SERIES.c.n_instances + bindparam("b_added", type_=Integer),
        last_received_at=bindparam("b_at", type_=_SERIES.c.last_received_at.type),
        revision=case((_SERIES.c.state != _RECEIVING, _SERIES.c.revision + 1), else_=_SERIES.c.revision),
        completed_at=case((_SERIES.c.state != _RECEIVING, null()), else_=_SERIES.c.completed_at),
        state=_RECEIVING,
    )
)


_COUNT_ARRIVAL_RETURNING = _COUNT_ARRIVAL.returning(
    _SERIES.c.n_instances, _SERIES.c.revision, _SERIES.c.role, _SERIES.c.expected_instances
)


@dataclass(frozen=True)
class SeriesArrival:
    """A series as an arrival left it (RECEIVING): what assembly needs to complete it without reading it again."""

    n_instances: int
    revision: int
    role: SeriesRole
    expected_instances: int | None


def find_instance_row(connection: Connection, *, sop_instance_uid: str) -> InstanceRow | None:
    row = connection.execute(_SELECT_INSTANCE_ROW, {"sop_instance_uid": sop_instance_uid}).first()
    return None if row is None else InstanceRow(*row)


def find_series_row(connection: Connection, *, series_instance_uid: str) -> SeriesRow | None:
    row = connection.execute(_SELECT_SERIES_ROW, {"series_instance_uid": series_instance_uid}).first()
    return None if row is None else SeriesRow(row.id, row.study_id, SeriesRole(row.role), row.expected_instances)


def find_study_id(connection: Connection, *, study_instance_uid: str) -> int | None:
    return connection.execute(_SELECT_STUDY_ID, {"study_instance_uid": study_instance_uid}).scalar()


def insert_study_row(
    connection: Connection,
    *,
    study_instance_uid: str,
    patient_id: str = "",
    patient_name: str = "",
    study_date: str = "",
    study_description: str = "",
    accession_number: str = "",
) -> int:
    """Insert a study and return its id (a racing insert of the same UID raises ``IntegrityError``)."""
    result = connection.execute(
        insert(_STUDY).values(
            study_instance_uid=study_instance_uid,
            patient_id=patient_id,
            patient_name=patient_name,
            study_date=study_date,
            study_description=study_description,
            accession_number=accession_number,
        )
    )
    return _inserted_id(result)


def insert_series_row(
    connection: Connection,
    *,
    study_id: int,
    series_instance_uid: str,
    role: SeriesRole,
    expected_instances: int | None,
    series_number: int | None = None,
    modality: str = "",
    description: str = "",
    manufacturer: str = "",
    calling_ae: str = "",
    calling_host: str = "",
) -> int:
    """Insert a RECEIVING series with no instances counted yet and return its id (racing insert: IntegrityError)."""
    result = connection.execute(
        insert(_SERIES).values(
            study_id=study_id,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            modality=modality,
            description=description,
            manufacturer=manufacturer,
            role=role,
            state=SeriesState.RECEIVING,
            expected_instances=expected_instances,
            n_instances=0,
            revision=0,
            calling_ae=calling_ae,
            calling_host=calling_host,
        )
    )
    return _inserted_id(result)


def learn_series_facts(
    connection: Connection, *, series_id: int, role: SeriesRole, expected_instances: int | None
) -> None:
    """Give a series a role or expected count it lacked (as :func:`get_or_create_series` does).

    A series whose first instance was a phase image learns the raw role from a magnitude image: vendors keep the
    components of one acquisition in one series (Philips M/P, GE M/P/R/I) in any order.
    """
    if role != SeriesRole.OTHER:
        connection.execute(
            update(_SERIES).where(_SERIES.c.id == series_id, _SERIES.c.role == SeriesRole.OTHER).values(role=role)
        )
    raw_of_phase = {SeriesRole.RAW_IR: SeriesRole.RAW_IR_PHASE, SeriesRole.T2_PREP: SeriesRole.T2_PREP_PHASE}
    if role in raw_of_phase:
        connection.execute(
            update(_SERIES).where(_SERIES.c.id == series_id, _SERIES.c.role == raw_of_phase[role]).values(role=role)
        )
    if expected_instances is not None:
        connection.execute(
            update(_SERIES)
            .where(_SERIES.c.id == series_id, _SERIES.c.expected_instances.is_(None))
            .values(expected_instances=expected_instances)
        )


def count_arrival(
    connection: Connection,
    *,
    series_id: int,
    series_instance_uid: str,
    study_id: int,
    added: int,
    at: datetime | None = None,
) -> bool:
    """:func:`record_arrival` with ``reopen=True`` in one statement; False when no series has this id, UID and
    study (the caller's ids are stale)."""
    result = connection.execute(
        _COUNT_ARRIVAL,
        {
            "b_series_id": series_id,
            "b_series_instance_uid": series_instance_uid,
            "b_study_id": study_id,
            "b_added": added,
            "b_at": at or utcnow(),
        },
    )
    return result.rowcount == 1


def count_arrival_returning(
    connection: Connection,
    *,
    series_id: int,
    series_instance_uid: str,
    study_id: int,
    added: int,
    at: datetime | None = None,
) -> SeriesArrival | None:
    """:func:`count_arrival` that also returns the series as the statement left it (one statement, RETURNING);
    None when no series has this id, UID and study."""
    row = connection.execute(
        _COUNT_ARRIVAL_RETURNING,
        {
            "b_series_id": series_id,
            "b_series_instance_uid": series_instance_uid,
            "b_study_id": study_id,
            "b_added": added,
            "b_at": at or utcnow(),
        },
    ).first()
    if row is None:
        return None
    return SeriesArrival(int(row[0]), int(row[1]), SeriesRole(row[2]), row[3])


class InstanceFileColumns(TypedDict):
    """The columns of an instance row that describe its stored file: inserted and updated alike."""

    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    path: str
    sha256: str
    size_bytes: int
    version: int


def insert_instance_row(
    connection: Connection,
    *,
    series_id: int,
    sop_instance_uid: str,
    sop_class_uid: str,
    transfer_syntax_uid: str,
    instance_number: int | None,
    path: str,
    sha256: str,
    size_bytes: int,
    version: int,
) -> int:
    """Insert an instance row and return its id (a racing insert of the same UID raises ``IntegrityError``)."""
    result = connection.execute(
        _INSERT_INSTANCE,
        {
            "series_id": series_id,
            "sop_instance_uid": sop_instance_uid,
            "sop_class_uid": sop_class_uid,
            "transfer_syntax_uid": transfer_syntax_uid,
            "instance_number": instance_number,
            "path": path,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "version": version,
        },
    )
    return _inserted_id(result)


def update_instance_row(
    connection: Connection,
    *,
    instance_id: int,
    series_id: int,
    sop_class_uid: str,
    transfer_syntax_uid: str,
    instance_number: int | None,
    path: str,
    sha256: str,
    size_bytes: int,
    version: int,
) -> None:
    """Point an instance row at a new version of its file."""
    connection.execute(
        update(_INSTANCE)
        .where(_INSTANCE.c.id == instance_id)
        .values(
            series_id=series_id,
            sop_class_uid=sop_class_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            instance_number=instance_number,
            path=path,
            sha256=sha256,
            size_bytes=size_bytes,
            version=version,
        )
    )


def recount_series_row(connection: Connection, *, series_id: int) -> int:
    """:func:`recount_instances` on a Connection."""
    count = connection.execute(
        select(func.count()).select_from(_INSTANCE).where(_INSTANCE.c.series_id == series_id)
    ).scalar_one()
    connection.execute(update(_SERIES).where(_SERIES.c.id == series_id).values(n_instances=count))
    return int(count)


def instance_versions(connection: Connection) -> dict[str, tuple[int, str]]:
    """Every recorded instance: SOP Instance UID -> (current version, path relative to the storage root)."""
    rows = connection.execute(select(_INSTANCE.c.sop_instance_uid, _INSTANCE.c.version, _INSTANCE.c.path))
    return {uid: (version, path) for uid, version, path in rows}


class TransferNotFoundError(LookupError):
    """No transfer has the requested id."""


class TransferStateError(ValueError):
    """The transfer is in a state that does not allow the requested action."""


def retry_transfer(session: Session, *, transfer_id: int) -> Transfer:
    """Put a transfer back to be sent now with a fresh attempt count (the admin page's retry action).

    Raises
    ------
    TransferNotFoundError
        If no transfer has this id.
    TransferStateError
        If the transfer was already delivered.
    """
    transfer = session.get(Transfer, transfer_id)
    if transfer is None:
        raise TransferNotFoundError(f"no transfer with id {transfer_id}")
    if transfer.state is TransferState.SENT:
        raise TransferStateError(f"transfer {transfer_id} was already sent; only pending or given-up ones retry")
    transfer.state = TransferState.PENDING
    transfer.attempts = 0
    transfer.next_attempt_at = utcnow()
    transfer.last_error = ""
    session.flush()
    return transfer


# ---- The admin page's studies list: search, filters, keyset pages ------------------------------------------------


class StudyAttention(str, Enum):
    """What the studies list can be filtered to: studies with a series in this condition."""

    FAILED = "failed"  # a series, job or slice whose analysis failed
    MOTION = "motion"  # a slice with a motion artefact
    DOUBTFUL = "doubtful"  # contours the quality check doubts, or a reader's slices not scored
    PENDING = "pending"  # a series receiving or queued, a job queued, running or waiting


@dataclass(frozen=True)
class StudySearch:
    """The studies list's search: every field given must match (empty fields match everything).

    ``patient_name`` matches when every word of it appears in the name, in any case ("doe jane" finds Doe^Jane);
    ``patient_id`` and ``accession_number`` match exactly, or as a prefix when they end with ``*`` (indexed);
    ``date_from`` and ``date_to`` are DICOM dates (YYYYMMDD), both ends included (indexed).
    """

    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    date_from: str = ""
    date_to: str = ""
    attention: StudyAttention | None = None


def _identifier_condition(column: Any, value: str) -> ColumnElement[bool]:
    if value.endswith("*"):
        prefix = value.rstrip("*").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return cast(ColumnElement[bool], column.like(f"{prefix}%", escape="\\"))
    return cast(ColumnElement[bool], column == value)


def _like_words(column: Any, words: Iterable[str]) -> list[ColumnElement[bool]]:
    conditions = []
    for word in words:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(column.ilike(f"%{escaped}%", escape="\\"))
    return conditions


#: Text of a result's JSON summary that marks a slice or report in each condition (JSON as json.dumps writes it).
#: It selects candidates in SQL; the page then reads the summaries and keeps the studies that really are.
_SUMMARY_MARKS: dict[StudyAttention, tuple[str, ...]] = {
    StudyAttention.FAILED: ('"status": "failed"', '"reports_error": "'),
    StudyAttention.MOTION: ('"has_motion": true',),
    StudyAttention.DOUBTFUL: ('"doubtful": true', '"status": "not scored"', '"problems": ["'),
    StudyAttention.PENDING: (),
}


def _attention_condition(attention: StudyAttention) -> ColumnElement[bool]:
    # Series and job states: the studies that have one, collected once (IN), so that a state no study is in costs
    # one pass over the index instead of a lookup per study. The summaries' text: per study (EXISTS), so that a
    # page of a common condition stops reading once it is full.
    conditions: list[ColumnElement[bool]] = []
    series_states, job_states = {
        StudyAttention.FAILED: ([SeriesState.FAILED], [JobState.FAILED]),
        StudyAttention.PENDING: ([SeriesState.RECEIVING, SeriesState.COMPLETE],
                                 [JobState.QUEUED, JobState.RUNNING, JobState.WAITING]),
    }.get(attention, ([], []))
    if series_states:
        conditions.append(Study.id.in_(select(Series.study_id).where(Series.state.in_(series_states))))
    if job_states:
        conditions.append(Study.id.in_(
            select(Series.study_id).join(Job, Job.series_id == Series.id).where(Job.state.in_(job_states))))
    marks = _SUMMARY_MARKS[attention]
    if marks:
        summary_text = sql_cast(Result.summary, Text)
        conditions.append(exists().where(
            Series.study_id == Study.id, Job.series_id == Series.id, Result.job_id == Job.id,
            or_(*(summary_text.contains(mark, autoescape=True) for mark in marks))))
    return or_(*conditions)


def study_search_conditions(search: StudySearch) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``search`` on the study table."""
    conditions: list[ColumnElement[bool]] = []
    words = search.patient_name.replace("^", " ").replace(",", " ").split()
    conditions.extend(_like_words(Study.patient_name, words))
    if search.patient_id:
        conditions.append(_identifier_condition(Study.patient_id, search.patient_id))
    if search.accession_number:
        conditions.append(_identifier_condition(Study.accession_number, search.accession_number))
    if search.date_from:
        conditions.append(and_(Study.study_date >= search.date_from, Study.study_date != ""))
    if search.date_to:
        conditions.append(and_(Study.study_date <= search.date_to, Study.study_date != ""))
    if search.attention is not None:
        conditions.append(_attention_condition(search.attention))
    return conditions


def search_studies(
    session: Session, *, search: StudySearch, limit: int, before_id: int | None = None,
    after_id: int | None = None, offset: int = 0,
) -> list[Study]:
    """One page of the studies matching ``search``, newest first (highest id first), with their series, jobs and
    results loaded.

    Keyset pages: ``before_id`` gives the studies older than that one (the next page), ``after_id`` the ``limit``
    studies just newer than that one (the previous page); the cost of a page does not grow with its position.
    ``offset`` skips that many more (the JSON API's older paging; its cost grows with the offset).
    """
    query = select(Study).where(*study_search_conditions(search))
    if after_id is not None:
        newer = list(session.scalars(
            select(Study.id).where(*study_search_conditions(search), Study.id > after_id)
            .order_by(Study.id.asc()).limit(limit)
        ))
        if not newer:
            return []
        query = query.where(Study.id.in_(newer))
    elif before_id is not None:
        query = query.where(Study.id < before_id)
    query = query.options(
        selectinload(Study.series).selectinload(Series.jobs).selectinload(Job.results)
    ).order_by(Study.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))


def count_studies(session: Session, *, search: StudySearch | None = None) -> int:
    """How many studies match ``search`` (all studies without one)."""
    conditions = study_search_conditions(search) if search is not None else []
    return session.scalar(select(func.count(Study.id)).where(*conditions)) or 0


def newest_study_id(session: Session, *, search: StudySearch) -> int | None:
    """The id of the newest study matching ``search`` (to tell whether a page is the first)."""
    return session.scalar(select(func.max(Study.id)).where(*study_search_conditions(search)))


def reader_role(session: Session, name: str) -> ReaderRole | None:
    """The role of the reader ``name`` (a reader's name or a DICOM name an alias maps) stands for; None when no
    reader row says, so that the caller's own convention decides (see :mod:`db.readers`)."""
    return readers.reader_role(session, name)
