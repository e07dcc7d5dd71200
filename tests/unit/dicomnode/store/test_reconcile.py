"""Start-up reconciliation: rows rebuilt from stored files, temporary files removed, nothing else touched."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, load_settings
from db import repository
from db.migrate import upgrade
from db.models import Instance, Series, SeriesRole, SeriesState, Study
from db.session import make_engine, make_session_factory, session_scope
from dicomnode.store import reconcile
from dicomnode.store.durable import OUTPUTS_FOLDER
from dicomnode.store.reconcile import reconcile_storage
from dicomnode.store.storage import store_instance
from tests.dicom_builders import molli_series, mr_image


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


def _count(session_factory: sessionmaker[Session], model: type) -> int:
    with session_scope(session_factory) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_nothing_missing_changes_nothing(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    stored = [_store(ds, settings, session_factory) for ds in molli_series()]
    (settings.storage_root / "outputs" / "1.2.3" / "4.5.6").mkdir(parents=True)  # not a received instance
    (settings.storage_root / "outputs" / "1.2.3" / "4.5.6" / "7.8.dcm").write_bytes(b"not a row")

    report = reconcile_storage(settings, session_factory)

    assert (report.files_on_disk, report.instances_recorded, report.instances_updated) == (len(stored), 0, 0)
    assert report.unreadable == () and report.rows_without_file == () and report.temporary_removed == 0
    assert _count(session_factory, Instance) == len(stored)


def test_lost_rows_are_rebuilt_and_the_series_reopened(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    datasets = molli_series()
    stored = [_store(ds, settings, session_factory) for ds in datasets]
    series_id = stored[0].series_id
    with session_scope(session_factory) as session:
        assert repository.mark_series_complete(session, series_id=series_id, revision=0)
        lost = [s.sop_instance_uid for s in stored[-3:]]
        session.execute(delete(Instance).where(Instance.sop_instance_uid.in_(lost)))
        session.execute(update(Series).where(Series.id == series_id).values(n_instances=len(stored) - 3))

    report = reconcile_storage(settings, session_factory)

    assert (report.instances_recorded, report.instances_updated, report.unreadable) == (3, 0, ())
    with session_scope(session_factory) as session:
        series = session.get_one(Series, series_id)
        assert (series.n_instances, series.state, series.revision) == (len(stored), SeriesState.RECEIVING, 1)
        rebuilt = session.scalars(select(Instance).where(Instance.sop_instance_uid.in_(lost))).all()
        assert sorted(i.path for i in rebuilt) == sorted(
            s.path.relative_to(settings.storage_root).as_posix() for s in stored[-3:]
        )
        assert all(i.series_id == series_id and i.version == 1 for i in rebuilt)
    assert reconcile_storage(settings, session_factory).instances_recorded == 0  # idempotent


def test_lost_study_and_series_are_rebuilt_from_the_files(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    datasets = molli_series(inversion_times_ms=(100.0, 180.0, 260.0))
    for ds in datasets:
        _store(ds, settings, session_factory)
    with session_scope(session_factory) as session:
        session.execute(delete(Instance))
        session.execute(delete(Series))
        session.execute(delete(Study))

    report = reconcile_storage(settings, session_factory)

    assert report.instances_recorded == 3
    with session_scope(session_factory) as session:
        study = session.scalars(select(Study)).one()
        series = session.scalars(select(Series)).one()
        assert study.study_instance_uid == datasets[0].StudyInstanceUID and study.patient_id == "MYO-0042"
        assert (series.role, series.n_instances, series.state) == (SeriesRole.RAW_IR, 3, SeriesState.RECEIVING)
        assert series.calling_ae == "SCANNER"  # from the Source AE Title the node wrote into the file meta
    # The ingest path's cached ids of the deleted series are not reused: the next instance finds the new row.
    late = mr_image(study_uid=datasets[0].StudyInstanceUID, series_uid=datasets[0].SeriesInstanceUID, seed=7)
    assert _store(late, settings, session_factory).series_id == series.id


def test_temporary_files_of_interrupted_writes_are_removed(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    ds = mr_image()
    stored = _store(ds, settings, session_factory)
    leftover = stored.path.parent / f".{ds.SOPInstanceUID}.dcm.x1y2z3.part"
    leftover.write_bytes(stored.path.read_bytes()[:300])

    report = reconcile_storage(settings, session_factory)

    assert report.temporary_removed == 1 and not leftover.exists()
    assert stored.path.is_file() and report.instances_recorded == 0


def test_temporary_files_of_interrupted_output_writes_are_removed(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    series_folder = settings.storage_root / OUTPUTS_FOLDER / "1.2.3" / "4.5.6"
    series_folder.mkdir(parents=True)
    written = series_folder / "7.8.dcm"
    written.write_bytes(b"a finished output")
    leftover = series_folder / ".7.9.dcm.a1b2c3.part"  # a job killed while writing its next output
    leftover.write_bytes(b"half")

    report = reconcile_storage(settings, session_factory)

    assert report.temporary_removed == 1 and not leftover.exists()
    assert written.read_bytes() == b"a finished output" and report.files_on_disk == 0


def test_newer_version_on_disk_updates_the_row(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    ds = mr_image()
    first = _store(ds, settings, session_factory)
    changed = ds.copy()
    changed.file_meta = ds.file_meta
    changed.ImageComments = "corrected"
    second = _store(changed, settings, session_factory)
    with session_scope(session_factory) as session:  # the commit of version 2 was lost, its file was not
        session.execute(
            update(Instance)
            .where(Instance.id == first.instance_id)
            .values(version=1, path=first.path.relative_to(settings.storage_root).as_posix())
        )

    report = reconcile_storage(settings, session_factory)

    assert (report.instances_recorded, report.instances_updated) == (0, 1)
    with session_scope(session_factory) as session:
        instance = session.get_one(Instance, first.instance_id)
        assert instance.version == 2 and instance.path.endswith(second.path.name)
    assert first.path.is_file() and second.path.is_file()


def test_unreadable_file_is_left_in_place_and_missing_file_reported(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    kept = _store(mr_image(), settings, session_factory)
    gone = _store(mr_image(), settings, session_factory)
    gone.path.unlink()
    broken = kept.path.parent / "1.2.826.0.1.99.dcm"
    broken.write_bytes(b"\0" * 64)

    report = reconcile_storage(settings, session_factory)

    relative = broken.relative_to(settings.storage_root).as_posix()
    assert report.unreadable == (relative,) and broken.read_bytes() == b"\0" * 64
    assert report.rows_without_file == (gone.path.relative_to(settings.storage_root).as_posix(),)
    assert _count(session_factory, Instance) == 2


@pytest.mark.slow
def test_many_files_with_nothing_missing_are_compared_not_read(
    settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20000 stored files and rows (written directly, as storing them one by one would take minutes).
    ds = mr_image()
    stored = _store(ds, settings, session_factory)
    content = stored.path.read_bytes()
    with session_scope(session_factory) as session:
        rows = []
        for index in range(20_000):
            series_folder = stored.path.parent.parent / f"1.2.826.0.1.{index // 100}"
            series_folder.mkdir(exist_ok=True)
            uid = f"1.2.826.0.2.{index}"
            (series_folder / f"{uid}.dcm").write_bytes(content)
            relative = (series_folder / f"{uid}.dcm").relative_to(settings.storage_root).as_posix()
            rows.append(
                Instance(
                    series_id=stored.series_id,
                    sop_instance_uid=uid,
                    sop_class_uid=str(ds.SOPClassUID),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    path=relative,
                    sha256="0" * 64,
                    size_bytes=len(content),
                )
            )
        session.add_all(rows)

    def must_not_read(*_args: object) -> bool:
        raise AssertionError("a file with a row was read")

    monkeypatch.setattr(reconcile, "_record_file", must_not_read)

    report = reconcile_storage(settings, session_factory)

    assert report.files_on_disk == 20_001 and report.instances_recorded == 0 and report.unreadable == ()
