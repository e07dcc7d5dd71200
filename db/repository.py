"""Queries of the node, keyword-only, each taking the caller's session (the caller owns the transaction)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Instance, Series, SeriesRole, SeriesState, Study, utcnow


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
    result = session.execute(
        update(Series)
        .where(Series.id == series_id, Series.state == SeriesState.RECEIVING, Series.revision == revision)
        .values(state=SeriesState.COMPLETE, completed_at=at or utcnow())
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


def receiving_series_in_study(
    session: Session, *, study_id: int, roles: Iterable[SeriesRole], received_before: datetime
) -> list[tuple[int, int]]:
    """(series id, revision) of RECEIVING series of a study with one of ``roles`` whose last instance arrived
    before ``received_before``."""
    rows = session.execute(
        select(Series.id, Series.revision).where(
            Series.study_id == study_id,
            Series.state == SeriesState.RECEIVING,
            Series.role.in_(list(roles)),
            Series.last_received_at < received_before,
        )
    )
    return [(row.id, row.revision) for row in rows]
