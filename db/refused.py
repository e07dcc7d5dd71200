"""Refused conflicting instances: a known SOP Instance UID re-sent under another Patient ID or Study Instance UID.

The ingest path asks for the stored identity of an instance's study (:func:`study_identity`) and records a refusal
(:func:`record_refusal`); the admin page lists the latest (:func:`latest_refusals`). Rows hold UIDs, AE titles and
hosts, never patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, func, insert, select
from sqlalchemy.orm import Session

from db.models import RefusedInstance, Study, utcnow

_STUDY = cast(Table, Study.__table__)
_REFUSED = cast(Table, RefusedInstance.__table__)


@dataclass(frozen=True)
class StudyIdentity:
    """Who and what a stored study is, as a re-send is compared with it."""

    study_instance_uid: str
    patient_id: str


def study_identity(connection: Connection, *, study_id: int) -> StudyIdentity | None:
    row = connection.execute(
        select(_STUDY.c.study_instance_uid, _STUDY.c.patient_id).where(_STUDY.c.id == study_id)
    ).first()
    return None if row is None else StudyIdentity(row.study_instance_uid, row.patient_id)


def record_refusal(
    connection: Connection,
    *,
    sop_instance_uid: str,
    instance_id: int | None,
    stored_study_instance_uid: str,
    sent_study_instance_uid: str,
    patient_id_differs: bool,
    calling_ae: str,
    calling_host: str,
    refused_at: datetime | None = None,
) -> None:
    connection.execute(
        insert(_REFUSED).values(
            sop_instance_uid=sop_instance_uid,
            instance_id=instance_id,
            stored_study_instance_uid=stored_study_instance_uid,
            sent_study_instance_uid=sent_study_instance_uid,
            patient_id_differs=patient_id_differs,
            calling_ae=calling_ae[:16],
            calling_host=calling_host[:255],
            refused_at=refused_at or utcnow(),
        )
    )


def latest_refusals(session: Session, *, limit: int = 20) -> list[RefusedInstance]:
    """The newest refusals first."""
    statement = select(RefusedInstance).order_by(RefusedInstance.refused_at.desc(), RefusedInstance.id.desc())
    return list(session.scalars(statement.limit(limit)))


def count_refusals(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(RefusedInstance)) or 0)
