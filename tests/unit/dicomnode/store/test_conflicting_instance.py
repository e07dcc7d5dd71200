"""A known SOP Instance UID re-sent under another patient or study is refused, recorded, and changes nothing."""

from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, load_settings
from db.migrate import upgrade
from db.models import Instance, RefusedInstance, Series, Study
from db.session import make_engine, make_session_factory, session_scope
from dicomnode.errors import ConflictingInstanceError
from dicomnode.store.storage import store_instance
from tests.dicom_builders import mr_image


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(storage={"path": tmp_path / "storage", "min_free_mb": 0})


@pytest.fixture
def session_factory(settings: Settings) -> sessionmaker[Session]:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _store(ds: pydicom.Dataset, settings: Settings, session_factory: sessionmaker[Session]):  # noqa: ANN202
    return store_instance(
        ds, calling_ae="SCANNER", calling_host="10.0.0.7", settings=settings, session_factory=session_factory
    )


def _resent(ds: pydicom.Dataset, **changes: str) -> pydicom.Dataset:
    copy = deepcopy(ds)
    for keyword, value in changes.items():
        setattr(copy, keyword, value)
    return copy


@pytest.mark.parametrize(
    ("changes", "patient_differs"),
    [
        ({"PatientID": "OTHER-PATIENT-99"}, True),
        ({"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}, False),
        ({"PatientID": "OTHER-PATIENT-99", "StudyInstanceUID": generate_uid()}, True),
    ],
)
def test_resend_under_another_patient_or_study_is_refused_and_kept_apart(
    settings: Settings,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, str],
    patient_differs: bool,
) -> None:
    ds = mr_image(images_in_acquisition=1)
    first = _store(ds, settings, session_factory)
    moved = _resent(ds, **changes)

    with caplog.at_level(logging.DEBUG), pytest.raises(ConflictingInstanceError) as refused:
        _store(moved, settings, session_factory)

    assert refused.value.dimse_status == 0xA900
    assert "another" in str(refused.value) and "OTHER-PATIENT" not in str(refused.value)
    assert ds.PatientID not in caplog.text and "OTHER-PATIENT" not in caplog.text
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]
    assert pydicom.dcmread(first.path).PatientID == ds.PatientID
    with session_scope(session_factory) as session:
        instance = session.get_one(Instance, first.instance_id)
        series = session.get_one(Series, first.series_id)
        assert (instance.series_id, instance.version, series.n_instances) == (first.series_id, 1, 1)
        assert session.scalars(select(Study.patient_id)).all() == [ds.PatientID]
        row = session.scalars(select(RefusedInstance)).one()
        assert (row.sop_instance_uid, row.instance_id) == (ds.SOPInstanceUID, first.instance_id)
        assert (row.stored_study_instance_uid, row.sent_study_instance_uid) == (
            ds.StudyInstanceUID, moved.StudyInstanceUID
        )
        assert (row.patient_id_differs, row.calling_ae, row.calling_host) == (patient_differs, "SCANNER", "10.0.0.7")


def test_changed_content_of_the_same_patient_and_study_is_still_a_new_version(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    ds = mr_image(images_in_acquisition=1)
    _store(ds, settings, session_factory)
    second = _store(_resent(ds, ImageComments="corrected"), settings, session_factory)
    assert second.changed
    with session_scope(session_factory) as session:
        assert session.scalars(select(RefusedInstance)).all() == []
