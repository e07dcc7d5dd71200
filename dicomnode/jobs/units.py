"""The analysis unit of a map job: which series of the study it analyses together, and the claim that lets one job
analyse a unit once.

Every complete raw or map series gets a job (:mod:`dicomnode.jobs.creation`); when it runs, the job finds the unit
its series belongs to among the study's complete series of its map kind (:func:`dicomnode.io.slice_groups.
mapping_units`). The unit's key is unique in the database, so the first of the unit's jobs to insert it analyses
it, and the others (the map's job when the raw series' job won) end without a result of their own.

A unit that shares a series with an earlier unit of the study (the raw images came after the map had been
analysed alone, or a series got more images) supersedes the newest such unit: its report names the earlier one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import AnalysisUnit, Instance, Job, Result, Series, SeriesRole, SeriesState
from dicomnode.io.slice_groups import KIND_OF_ROLE, MappingSeries, mapping_units, unit_key

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitMember:
    """One series of a unit, at the revision the unit analyses."""

    series_id: int
    revision: int
    role: SeriesRole
    series_instance_uid: str
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class UnitPlan:
    """The unit a job's series belongs to."""

    key: str
    kind: str  # "T1" or "T2"
    study_id: int
    members: tuple[UnitMember, ...]


@dataclass(frozen=True)
class Superseded:
    """The earlier analysis a unit replaces: its job and the SR it wrote (to name it as predecessor)."""

    unit_id: int
    job_id: int
    job_key: str
    sr_paths: tuple[Path, ...]


@dataclass(frozen=True)
class UnitClaim:
    """The unit a job analyses, and the earlier analysis it replaces, if any."""

    unit_id: int
    superseded: Superseded | None


def plan_unit(series_id: int, *, session_factory: sessionmaker[Session], storage_root: Path) -> UnitPlan:
    """The unit of series ``series_id``: it and the study's complete series of its map kind that it is linked to.

    Series still receiving are left out: the assembler hands a mapping series on only when its study has
    settled, so those arrived later and make a unit of their own (which then supersedes this one).
    """
    with session_factory() as session:
        series = session.get(Series, series_id)
        if series is None:
            raise LookupError(f"series {series_id} is not in the database")
        kind = KIND_OF_ROLE[series.role]
        roles = [role for role, role_kind in KIND_OF_ROLE.items() if role_kind == kind]
        candidates = list(session.scalars(
            select(Series).where(Series.study_id == series.study_id, Series.role.in_(roles),
                                 Series.state != SeriesState.RECEIVING).order_by(Series.id)
        ))
        if series not in candidates:
            candidates.append(series)
        study_uid = series.study.study_instance_uid
        study_id = series.study_id
        found = {
            s.id: (s, [storage_root / p for p in session.scalars(
                select(Instance.path).where(Instance.series_id == s.id).order_by(Instance.id))])
            for s in candidates
        }
        described = [
            MappingSeries(s.id, s.revision, s.role, s.series_instance_uid, tuple(_headers(paths)))
            for s, paths in found.values()
        ]
    unit = next(u for u in mapping_units(described) if any(m.series_id == series_id for m in u))
    members = tuple(
        UnitMember(m.series_id, m.revision, m.role, m.series_instance_uid, tuple(found[m.series_id][1]))
        for m in unit
    )
    return UnitPlan(key=unit_key(study_uid, kind, unit), kind=kind, study_id=study_id, members=members)


def claim_unit(plan: UnitPlan, job_id: int, *, session_factory: sessionmaker[Session]) -> UnitClaim | int:
    """Record that job ``job_id`` analyses the unit; the id of the job that already does when it is taken.

    A job that runs again (after a crash) finds its own claim and goes on.
    """
    with session_factory() as session:
        existing = session.scalars(select(AnalysisUnit).where(AnalysisUnit.key == plan.key)).one_or_none()
        if existing is None:
            previous = _latest_sharing(session, plan)
            unit = AnalysisUnit(
                key=plan.key, study_id=plan.study_id, kind=plan.kind, job_id=job_id,
                members=[{"series_id": m.series_id, "revision": m.revision, "role": m.role.value}
                         for m in plan.members],
                supersedes_unit_id=previous.id if previous is not None else None,
            )
            session.add(unit)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = session.scalars(select(AnalysisUnit).where(AnalysisUnit.key == plan.key)).one()
            else:
                return UnitClaim(unit.id, _superseded(session, previous))
        if existing.job_id != job_id:
            return existing.job_id
        previous = session.get(AnalysisUnit, existing.supersedes_unit_id) if existing.supersedes_unit_id else None
        return UnitClaim(existing.id, _superseded(session, previous))


def _latest_sharing(session: Session, plan: UnitPlan) -> AnalysisUnit | None:
    """The newest earlier unit of the study and kind that holds one of the plan's series (any revision)."""
    series_ids = {m.series_id for m in plan.members}
    earlier = session.scalars(
        select(AnalysisUnit).where(AnalysisUnit.study_id == plan.study_id, AnalysisUnit.kind == plan.kind)
        .order_by(AnalysisUnit.id.desc())
    )
    return next((u for u in earlier if series_ids & {int(m["series_id"]) for m in u.members}), None)


def _superseded(session: Session, unit: AnalysisUnit | None) -> Superseded | None:
    if unit is None:
        return None
    job = session.get(Job, unit.job_id)
    if job is None:
        return None
    results = session.scalars(select(Result).where(Result.job_id == job.id)).all()
    sr_paths = tuple(
        Path(path) for result in results for path in (result.summary or {}).get("outputs", {}).get("sr", [])
    )
    return Superseded(unit.id, job.id, job.key, sr_paths)


def _headers(paths: list[Path]) -> list[Dataset]:
    headers: list[Dataset] = []
    for path in paths:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as error:  # a file the store accepted is readable; one that is not is left out, said
            LOGGER.warning("cannot read the header of %s: %s", path.name, error)
    return headers
