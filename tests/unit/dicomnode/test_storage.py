"""Durable storage: files in place, rows committed, idempotent re-sends, versions, watermark."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, load_settings
from db import repository
from db.migrate import upgrade
from db.models import Instance, Series, SeriesRole, SeriesState, Study
from db.session import make_engine, make_session_factory, session_scope
from dicomnode.errors import DatasetMismatchError, StorageFullError
from dicomnode.storage import check_free_space, store_instance
from tests.dicom_builders import molli_series, mr_image, write_part10


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(storage={"path": tmp_path / "storage", "min_free_mb": 0})


@pytest.fixture
def session_factory(settings: Settings) -> sessionmaker[Session]:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _store(ds: pydicom.Dataset | bytes, settings: Settings, session_factory: sessionmaker[Session]):  # noqa: ANN202
    return store_instance(
        ds, calling_ae="SCANNER", calling_host="127.0.0.1", settings=settings, session_factory=session_factory
    )


def test_store_writes_part10_file_and_rows(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    ds = mr_image(inversion_time_ms=180.0, images_in_acquisition=8)

    stored = _store(ds, settings, session_factory)

    expected = settings.storage_root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert stored.path == expected and stored.created and not stored.changed
    copy = pydicom.dcmread(expected)
    assert (
        copy.SOPInstanceUID == ds.SOPInstanceUID and copy.file_meta.SourceApplicationEntityTitle == "SCANNER"
    )
    assert not list(expected.parent.glob("*.part"))
    with session_scope(session_factory) as session:
        study = session.scalars(select(Study)).one()
        series = session.scalars(select(Series)).one()
        instance = session.scalars(select(Instance)).one()
        assert (study.patient_name, study.patient_id) == ("Doe^Jane", "MYO-0042")
        assert (series.role, series.expected_instances, series.n_instances) == (SeriesRole.RAW_IR, 8, 1)
        assert (series.calling_ae, series.state) == ("SCANNER", SeriesState.RECEIVING)
        assert instance.path == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert instance.size_bytes == expected.stat().st_size and instance.version == 1


def test_identical_resend_creates_nothing(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ds = mr_image()
    first = _store(ds, settings, session_factory)

    again = _store(ds, settings, session_factory)

    assert not again.created and not again.changed
    assert (again.instance_id, again.path) == (first.instance_id, first.path)
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 1
        assert session.scalars(select(Series)).one().n_instances == 1


def test_changed_resend_keeps_both_versions_and_reopens(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    ds = mr_image(images_in_acquisition=1)
    first = _store(ds, settings, session_factory)
    with session_scope(session_factory) as session:
        assert repository.mark_series_complete(session, series_id=first.series_id, revision=0)
    changed = ds.copy()
    changed.file_meta = ds.file_meta
    changed.ImageComments = "corrected"

    second = _store(changed, settings, session_factory)

    assert second.changed and not second.created and second.instance_id == first.instance_id
    assert second.path.name == f"{ds.SOPInstanceUID}.v2.dcm" and first.path.is_file()
    assert pydicom.dcmread(second.path).ImageComments == "corrected"
    with session_scope(session_factory) as session:
        series = session.get_one(Series, first.series_id)
        instance = session.get_one(Instance, first.instance_id)
        assert (series.state, series.revision, series.n_instances) == (SeriesState.RECEIVING, 1, 1)
        assert instance.version == 2 and instance.path.endswith(".v2.dcm")


def test_late_instance_reopens_a_complete_series(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    first, second = molli_series(inversion_times_ms=(100.0, 180.0))
    stored = _store(first, settings, session_factory)
    with session_scope(session_factory) as session:
        repository.mark_series_complete(session, series_id=stored.series_id, revision=0)

    _store(second, settings, session_factory)

    with session_scope(session_factory) as session:
        series = session.get_one(Series, stored.series_id)
        assert (series.state, series.revision, series.n_instances) == (SeriesState.RECEIVING, 1, 2)


def test_part10_bytes_are_accepted(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    ds = mr_image()
    data = write_part10(ds, tmp_path / "in.dcm").read_bytes()

    stored = _store(data, settings, session_factory)

    assert stored.created
    assert stored.path.read_bytes().endswith(data[-600:])


def test_invalid_instance_writes_nothing(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ds = mr_image()
    del ds.PixelData
    with pytest.raises(DatasetMismatchError):
        _store(ds, settings, session_factory)
    assert not list(settings.storage_root.rglob("*.dcm"))
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 0


def test_watermark_refuses_before_writing(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    full = load_settings(storage={"path": tmp_path / "storage", "min_free_mb": 10**12})
    with pytest.raises(StorageFullError, match="below the watermark"):
        check_free_space(full)
    with pytest.raises(StorageFullError):
        _store(mr_image(), full, session_factory)
    assert not list(full.storage_root.rglob("*.dcm"))


def test_concurrent_stores_share_one_study_and_series(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [
        mr_image(study_uid=study_uid, series_uid=series_uid, instance_number=i, seed=i) for i in range(24)
    ]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda ds: _store(ds, settings, session_factory), datasets))

    assert all(r.created for r in results)
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 1
        series = session.scalars(select(Series)).one()
        assert series.n_instances == 24 == repository.count_instances(session, series_id=series.id)
