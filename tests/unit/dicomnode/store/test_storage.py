"""Durable storage: files in place, rows committed, idempotent re-sends, versions, watermark."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, load_settings
from db import repository
from db.migrate import upgrade
from db.models import Instance, Series, SeriesRole, SeriesState, Study
from db.session import make_engine, make_session_factory, session_scope
from dicomnode.errors import DatasetMismatchError, StorageFullError
from dicomnode.store import storage
from dicomnode.store.storage import check_free_space, engine_of, store_instance
from dicomnode.store.validate import encode_file_meta, split_part10
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


def test_received_bytes_are_written_unchanged(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    meta, data = split_part10(Path(get_testdata_file("JPEG2000.dcm")).read_bytes())

    stored = store_instance(
        data,
        file_meta=meta,
        calling_ae="SCANNER",
        calling_host="127.0.0.1",
        settings=settings,
        session_factory=session_factory,
        context_sop_class_uid=meta.MediaStorageSOPClassUID,
    )

    written = stored.path.read_bytes()
    assert written.endswith(data) and len(written) == 132 + len(encode_file_meta(_with_source(meta))) + len(data)
    assert pydicom.dcmread(stored.path).file_meta.SourceApplicationEntityTitle == "SCANNER"


def _with_source(meta: pydicom.dataset.FileMetaDataset) -> pydicom.dataset.FileMetaDataset:
    copy = pydicom.dataset.FileMetaDataset(meta)
    copy.SourceApplicationEntityTitle = "SCANNER"
    return copy


def test_rolled_back_series_is_not_cached(
    settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = molli_series(inversion_times_ms=(100.0, 180.0))
    original = repository.insert_instance_row

    def fail_once(*args: object, **kwargs: object) -> int:
        monkeypatch.setattr(repository, "insert_instance_row", original)
        raise OSError("database unavailable")

    monkeypatch.setattr(repository, "insert_instance_row", fail_once)
    with pytest.raises(OSError, match="database unavailable"):
        _store(first, settings, session_factory)
    with session_scope(session_factory) as session:  # the study and series inserts were rolled back
        assert session.scalar(select(func.count()).select_from(Series)) == 0
    assert storage._series_cache(engine_of(session_factory)).get(first.SeriesInstanceUID) is None

    stored = [_store(ds, settings, session_factory) for ds in (first, second)]

    with session_scope(session_factory) as session:
        series = session.scalars(select(Series)).one()
        assert stored[0].series_id == stored[1].series_id == series.id and series.n_instances == 2


def test_cached_ids_of_deleted_rows_are_not_used(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    first, second = molli_series(inversion_times_ms=(100.0, 180.0))
    old = _store(first, settings, session_factory)
    with session_scope(session_factory) as session:
        session.execute(delete(Instance))
        session.execute(delete(Series))
        session.execute(delete(Study))
        # A series of another study takes the freed id (SQLite re-uses the highest rowid).
        other_study = Study(study_instance_uid=generate_uid())
        session.add(other_study)
        session.flush()
        session.add(Series(id=old.series_id, study_id=other_study.id, series_instance_uid=generate_uid()))

    new = _store(second, settings, session_factory)

    with session_scope(session_factory) as session:
        series = session.get_one(Series, new.series_id)
        assert new.series_id != old.series_id and series.series_instance_uid == second.SeriesInstanceUID
        assert series.n_instances == 1 and session.get_one(Study, new.study_id).patient_id == "MYO-0042"


def test_series_learns_role_and_expected_count_from_later_instances(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    plain = mr_image(study_uid=study_uid, series_uid=series_uid, description="localizer", sequence_name="fl2d")
    marked = mr_image(
        study_uid=study_uid, series_uid=series_uid, inversion_time_ms=180.0, images_in_acquisition=8, seed=1
    )
    first = _store(plain, settings, session_factory)
    with session_scope(session_factory) as session:
        series = session.get_one(Series, first.series_id)
        assert (series.role, series.expected_instances) == (SeriesRole.OTHER, None)

    _store(marked, settings, session_factory)
    _store(mr_image(study_uid=study_uid, series_uid=series_uid, seed=2), settings, session_factory)

    with session_scope(session_factory) as session:
        series = session.get_one(Series, first.series_id)
        assert (series.role, series.expected_instances, series.n_instances) == (SeriesRole.RAW_IR, 8, 3)


def test_a_raw_series_without_a_count_is_classified_once_until_an_instance_states_its_count(
    settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    classified: list[str] = []
    classify_header = storage.series_facts

    def counting(header: pydicom.Dataset, **kwargs: str) -> storage.SeriesFacts:
        classified.append(str(header.SOPInstanceUID))
        return classify_header(header, **kwargs)

    monkeypatch.setattr(storage, "series_facts", counting)
    for seed in range(3):  # a MOLLI series that states no count: its role is settled by the first image
        _store(mr_image(study_uid=study_uid, series_uid=series_uid, inversion_time_ms=180.0 + seed, seed=seed),
               settings, session_factory)
    assert len(classified) == 1
    counted = _store(mr_image(study_uid=study_uid, series_uid=series_uid, inversion_time_ms=900.0,
                              images_in_acquisition=5, seed=3), settings, session_factory)
    _store(mr_image(study_uid=study_uid, series_uid=series_uid, inversion_time_ms=1000.0, images_in_acquisition=5,
                    seed=4), settings, session_factory)

    assert len(classified) == 2  # the first image with a count taught it; the series then knew both
    with session_scope(session_factory) as session:
        series = session.get_one(Series, counted.series_id)
        assert (series.role, series.expected_instances, series.n_instances) == (SeriesRole.RAW_IR, 5, 5)



def _source_reference() -> pydicom.Dataset:
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    reference.ReferencedSOPInstanceUID = generate_uid()
    return reference

def test_a_map_series_waits_for_quiet_when_its_maps_copied_their_acquisitions_count(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    for slice_index in range(3):  # one map per slice, each carrying its 8-image acquisition's count
        t1_map = mr_image(study_uid=study_uid, series_uid=series_uid, description="MOLLI SAX_T1 MAP",
                          image_type=("DERIVED", "PRIMARY", "T1 MAP", "ND"), images_in_acquisition=8,
                          instance_number=slice_index + 1, seed=slice_index)
        t1_map.SourceImageSequence = [_source_reference() for _ in range(8)]
        stored = _store(t1_map, settings, session_factory)
    with session_scope(session_factory) as session:
        series = session.get_one(Series, stored.series_id)
        assert (series.role, series.expected_instances, series.n_instances) == (SeriesRole.T1_MAP, None, 3)


def test_implicit_little_endian_is_stored(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    ds = mr_image(inversion_time_ms=180.0)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta, data = split_part10(write_part10(ds, tmp_path / "implicit.dcm").read_bytes())

    stored = _store(write_part10(ds, tmp_path / "implicit.dcm").read_bytes(), settings, session_factory)

    assert stored.created and stored.path.read_bytes().endswith(data)
    with session_scope(session_factory) as session:
        assert session.get_one(Instance, stored.instance_id).transfer_syntax_uid == ImplicitVRLittleEndian
        assert session.get_one(Series, stored.series_id).role == SeriesRole.RAW_IR


def test_a_series_first_seen_by_a_phase_image_becomes_raw_when_a_magnitude_image_arrives(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    # Philips keeps the magnitude and phase images of one acquisition in one series, in any order.
    series_uid, study_uid = generate_uid(), generate_uid()
    phase = mr_image(series_uid=series_uid, study_uid=study_uid, image_type=("ORIGINAL", "PRIMARY", "P_FFE", "P"))
    magnitude = mr_image(series_uid=series_uid, study_uid=study_uid,
                         image_type=("ORIGINAL", "PRIMARY", "M_FFE", "M"))
    first = _store(phase, settings, session_factory)
    with session_scope(session_factory) as session:
        assert session.get_one(Series, first.series_id).role is SeriesRole.RAW_IR_PHASE
    _store(magnitude, settings, session_factory)
    with session_scope(session_factory) as session:
        assert session.get_one(Series, first.series_id).role is SeriesRole.RAW_IR
