"""The map job: scheme and RR decisions, outputs written once, one result per analysis unit and revision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    MRImageStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings, load_settings
from db import migrate
from db.models import AnalysisUnit, Instance, Job, JobState, Result, Series, SeriesRole, SeriesState, Study, Transfer
from db.session import make_engine, make_session_factory
from dicomnode.io.acquisition import inversion_index, mapping_scheme, rr_interval_ms
from dicomnode.io.series_loader import LoadedSeries, SliceStack, TimingKind
from dicomnode.jobs.map_job import JobOutcome, run_job
from inference.mapping import MappingScheme
from inference.molli_correction import correct_t1, protocol_from_tags

TRUE_T1_MS = 1000.0
# MOLLI 5(3)3 at RR 1000 ms in acquisition order: first inversion, then the second one 80 ms later.
TIS_ACQUISITION_ORDER_MS = [100.0, 1100.0, 2100.0, 3100.0, 4100.0, 180.0, 1180.0, 2180.0]


def _stack(times_ms: list[float], acquisition_s: list[float] | None = None) -> SliceStack:
    n = len(times_ms)
    order = np.argsort(times_ms, kind="stable")
    acquisition = np.full(n, np.nan) if acquisition_s is None else np.asarray(acquisition_s)[order]
    return SliceStack(
        image_position_patient_mm=(0.0, 0.0, 0.0),
        image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        pixel_spacing_mm=(1.0, 1.0),
        images=np.ones((n, 2, 2)),
        times_ms=np.asarray(times_ms, dtype=np.float64)[order],
        acquisition_times_s=acquisition,
        sources=tuple(Dataset() for _ in range(n)),
        frame_numbers=tuple(range(1, n + 1)),
    )


def _loaded(stack: SliceStack, *, description: str = "", rr_ms: float | None = None,
            timing: TimingKind = TimingKind.INVERSION) -> LoadedSeries:
    return LoadedSeries(
        series_instance_uid="1.2", study_instance_uid="1.1", series_number=3, series_description=description,
        sequence_name="*tfi2d1_192", timing=timing, slices=(stack,), nominal_interval_ms=rr_ms,
    )


@pytest.mark.parametrize(
    ("description", "n_images", "timing", "expected"),
    [
        ("ShMOLLI_SAX_MID", 7, TimingKind.INVERSION, MappingScheme.SHMOLLI),
        ("MOLLI 5(3)3 SA mid", 8, TimingKind.INVERSION, MappingScheme.MOLLI),
        ("T1 SAX Mid", 7, TimingKind.INVERSION, MappingScheme.SHMOLLI),
        ("T1 SAX Mid", 8, TimingKind.INVERSION, MappingScheme.MOLLI),
        ("T2prep SAX Mid", 3, TimingKind.T2_PREP, MappingScheme.T2PREP),
    ],
)
def test_mapping_scheme_from_names_then_image_count(
    description: str, n_images: int, timing: TimingKind, expected: MappingScheme
) -> None:
    stack = _stack([100.0 * (i + 1) for i in range(n_images)])
    assert mapping_scheme(_loaded(stack, description=description, timing=timing), stack) is expected


def test_inversion_index_follows_acquisition_order() -> None:
    stack = _stack(TIS_ACQUISITION_ORDER_MS, acquisition_s=[float(i) for i in range(8)])
    # Sorted by TI: 100, 180, 1100, 1180, 2100, 2180, 3100, 4100.
    assert inversion_index(stack).tolist() == [0, 1, 0, 1, 0, 1, 0, 0]
    assert inversion_index(_stack(TIS_ACQUISITION_ORDER_MS)) is None


def test_rr_interval_from_tags_then_inversion_steps_then_common_difference() -> None:
    timed = _stack(TIS_ACQUISITION_ORDER_MS, acquisition_s=[float(i) for i in range(8)])
    assert rr_interval_ms(_loaded(timed, rr_ms=950.0), timed) == 950.0
    assert rr_interval_ms(_loaded(timed), timed) == pytest.approx(1000.0)
    untimed = _stack(TIS_ACQUISITION_ORDER_MS)
    assert rr_interval_ms(_loaded(untimed), untimed) == pytest.approx(1000.0)
    assert rr_interval_ms(_loaded(_stack([100.0, 150.0])), _stack([100.0, 150.0])) is None


# --- the whole job on a small synthetic MOLLI slice ---------------------------------------------------------------


def _t1_map(folder: Path, raw_paths: list[Path], t1_ms: float, *, series_uid: str | None = None) -> Path:
    """The scanner's T1 map of the synthetic slice (uint16 ms, 0 outside the square), naming its raw images."""
    raw = [pydicom.dcmread(path, stop_before_pixels=True) for path in raw_paths]
    ds = pydicom.dcmread(raw_paths[0])
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesNumber, ds.InstanceNumber = 13, 1
    ds.SeriesDescription = "MOLLI_5(3)3_SAX_MID_T1MAP"
    ds.ImageType = ["DERIVED", "PRIMARY", "T1 MAP", "ND"]
    del ds.InversionTime
    ds.SourceImageSequence = [Dataset() for _ in raw]
    for item, source in zip(ds.SourceImageSequence, raw, strict=True):
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    pixels = np.zeros((12, 12), dtype=np.uint16)
    pixels[3:9, 3:9] = round(t1_ms)
    ds.PixelData = pixels.tobytes()
    path = folder.parent / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    path.parent.mkdir(parents=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _add_series(factory: sessionmaker[Session], settings: Settings, study_uid: str, paths: list[Path],
                role: SeriesRole, kind: str) -> int:
    """Record a complete series of the study and its job; the job's id."""
    with factory() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        header = pydicom.dcmread(paths[0], stop_before_pixels=True)
        series = Series(study=study, series_instance_uid=header.SeriesInstanceUID, series_number=13, role=role,
                        state=SeriesState.COMPLETE, calling_ae="CONSOLE", calling_host="127.0.0.1")
        session.add(series)
        for path in paths:
            item = pydicom.dcmread(path, stop_before_pixels=True)
            session.add(Instance(
                series=series, sop_instance_uid=item.SOPInstanceUID, sop_class_uid=MRImageStorage,
                transfer_syntax_uid=ExplicitVRLittleEndian, instance_number=int(item.InstanceNumber),
                path=str(path.relative_to(settings.storage_root)), sha256="0" * 64, size_bytes=path.stat().st_size,
            ))
        job = Job(key=f"{header.SeriesInstanceUID}/0/{kind}", kind=kind, series=series, series_revision=0)
        session.add(job)
        session.commit()
        return job.id


def _molli_slice(folder: Path, study_uid: str, series_uid: str) -> list[Path]:
    """Eight noiseless MOLLI images of an 12x12 slice: T1 = 1000 ms inside a 6x6 square, air outside."""
    a, b = 1000.0, 1900.0
    t1_star = TRUE_T1_MS / (b / a - 1.0)
    frame_of_reference = generate_uid()
    paths = []
    for number, ti in enumerate(TIS_ACQUISITION_ORDER_MS, start=1):
        pixels = np.zeros((12, 12), dtype=np.uint16)
        pixels[3:9, 3:9] = round(abs(a - b * np.exp(-ti / t1_star)) * 20)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID, ds.StudyInstanceUID = "PHANTOM^TEST", "MYO1", study_uid
        ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "19700101", "F", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "101500", "1", "PH1"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 12, "MR"
        ds.SeriesDescription = "MOLLI_5(3)3_SAX_MID"
        ds.FrameOfReferenceUID = frame_of_reference
        ds.InstanceNumber = number
        ds.InversionTime = ti
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.5, 1.5]
        ds.SliceThickness = 8.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def node(tmp_path: Path) -> tuple[Settings, sessionmaker[Session], int]:
    settings = load_settings(
        storage={"path": tmp_path / "data"},
        peers=[{"ae_title": "CONSOLE", "host": "127.0.0.1", "port": 11113}],
    )
    settings.storage_root.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    study_uid, series_uid = generate_uid(), generate_uid()
    folder = settings.storage_root / study_uid / series_uid
    folder.mkdir(parents=True)
    paths = _molli_slice(folder, study_uid, series_uid)
    with factory() as session:
        study = Study(study_instance_uid=study_uid)
        series = Series(
            study=study, series_instance_uid=series_uid, series_number=12, role=SeriesRole.RAW_IR,
            state=SeriesState.COMPLETE, calling_ae="CONSOLE", calling_host="127.0.0.1",
        )
        session.add_all([study, series])
        for path in paths:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            session.add(Instance(
                series=series, sop_instance_uid=header.SOPInstanceUID, sop_class_uid=MRImageStorage,
                transfer_syntax_uid=ExplicitVRLittleEndian, instance_number=int(header.InstanceNumber),
                path=str(path.relative_to(settings.storage_root)), sha256="0" * 64, size_bytes=path.stat().st_size,
            ))
        job = Job(key=f"{series_uid}/0/t1_map", kind="t1_map", series=series, series_revision=0)
        session.add(job)
        session.commit()
        job_id = job.id
    yield settings, factory, job_id
    engine.dispose()


def test_map_job_writes_both_maps_records_one_result_and_plans_transfers(node) -> None:
    settings, factory, job_id = node
    deliveries: list[int] = []
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=deliveries.append) is (
        JobOutcome.DONE
    )
    with factory() as session:
        job = session.get(Job, job_id)
        (result,) = job.results
        transfers = session.scalars(select(Transfer)).all()
        assert job.state is JobState.DONE
        assert job.series.state is SeriesState.DONE
    assert result.summary["scheme"] == "molli"
    assert result.summary["slices"] == 1
    # The synthetic images follow the ideal Look-Locker model, which the plain fit recovers exactly; the plain fit
    # is what a scanner's MOLLI map shows, and the node reports it by default ([mapping] report_t1 = "scanner").
    assert result.summary["report_t1"] == "scanner" and result.summary["map_source"] == "node reconstruction"
    assert result.summary["median_ms"] == pytest.approx(TRUE_T1_MS, rel=0.01)
    assert sorted(deliveries) == sorted(t.id for t in transfers)
    assert {t.ae_title for t in transfers} == {"CONSOLE"}
    # The MR map and the Parametric Map of the one slice, and a Secondary Capture first: this uniform test image
    # holds no heart, so the console is told in words that the analysis was not possible, and no SR or SEG is made.
    assert len(transfers) == 3
    files = [pydicom.dcmread(settings.storage_root / path) for path in result.paths]
    assert {str(ds.SOPClassUID) for ds in files} == {MRImageStorage, ParametricMapStorage, SecondaryCaptureImageStorage}
    capture = next(ds for ds in files if ds.SOPClassUID == SecondaryCaptureImageStorage)
    # The banner names the sequence (scheme and protocol) and the level (series description) before the verdict.
    assert capture.ImageComments.startswith("MOLLI 5(3)3, mid: analysis not possible: ")
    (slice_summary,) = result.summary["analysis"]["slices"]
    assert slice_summary["status"] == "failed"
    assert slice_summary["banner"].startswith("Analysis not possible: ")
    assert capture.ImageComments == "MOLLI 5(3)3, mid: a" + slice_summary["banner"][1:]
    # Every output series says what it holds.
    descriptions = {str(ds.SOPClassUID): ds.SeriesDescription for ds in files}
    assert descriptions == {MRImageStorage: "myomap T1 MOLLI mid T1MAP",
                            ParametricMapStorage: "myomap T1 MOLLI mid float T1MAP",
                            SecondaryCaptureImageStorage: "myomap T1 MOLLI mid SC"}
    assert result.summary["sequence"] == "MOLLI 5(3)3" and result.summary["source_series_number"] == 12
    assert result.summary["level"] == "mid" and not result.summary["level_assumed"]
    assert result.summary["slice_images"] == [result.summary["outputs"]["maps"][0]]  # the node's MR map
    assert result.summary["outputs"]["sr"] == result.summary["outputs"]["seg"] == []
    mr_map = next(ds for ds in files if ds.SOPClassUID == MRImageStorage)
    assert mr_map.SeriesInstanceUID == result.output_series_uid
    assert int(np.median(mr_map.pixel_array[3:9, 3:9])) == pytest.approx(TRUE_T1_MS, rel=0.01)
    assert "scanner-comparable" in mr_map.DerivationDescription


def test_the_corrected_t1_is_reported_when_the_site_chooses_it(node) -> None:
    settings, factory, job_id = node
    corrected = settings.model_copy(update={"mapping": settings.mapping.model_copy(update={"report_t1": "corrected"})})
    assert run_job(job_id, settings=corrected, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.DONE
    )
    with factory() as session:
        (result,) = session.get(Job, job_id).results
    # The node's Bloch correction for the bSSFP readout a real MOLLI acquisition has (docs/mapping.md).
    protocol = protocol_from_tags(TIS_ACQUISITION_ORDER_MS, rr_ms=1000.0)
    corrected_ms = float(correct_t1(np.array([TRUE_T1_MS]), protocol)[0])
    assert corrected_ms > TRUE_T1_MS * 1.05
    assert result.summary["report_t1"] == "corrected"
    assert result.summary["median_ms"] == pytest.approx(corrected_ms, rel=0.01)
    mr_map = pydicom.dcmread(settings.storage_root / result.summary["outputs"]["maps"][0])
    assert "Bloch-corrected" in mr_map.DerivationDescription


def test_raw_images_and_the_scanner_map_of_a_slice_are_analysed_once_from_the_scanner_map(node) -> None:
    settings, factory, raw_job = node
    with factory() as session:
        raw_paths = [settings.storage_root / i.path for i in session.get(Job, raw_job).series.instances]
        study_uid = session.get(Job, raw_job).series.study.study_instance_uid
    scanner_ms = 1010.0
    map_job_id = _add_series(factory, settings, study_uid, [_t1_map(raw_paths[0].parent, raw_paths, scanner_ms)],
                             SeriesRole.T1_MAP, "t1_map")

    assert run_job(map_job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.DONE
    )
    assert run_job(raw_job, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.DONE
    )
    with factory() as session:
        (result,) = session.scalars(select(Result)).all()
        (unit,) = session.scalars(select(AnalysisUnit)).all()
        assert result.job_id == map_job_id == unit.job_id
        assert session.get(Job, raw_job).error == ("analysed with the other series of its slices: the result is under "
                                                   f"series 13 (job {map_job_id})")
        assert session.get(Job, raw_job).series.state is SeriesState.DONE
    summary = result.summary
    assert summary["map_source"] == "scanner map" and summary["slices"] == 1
    assert summary["median_ms"] == pytest.approx(scanner_ms)
    assert len(summary["unit_series"]) == 2
    assert summary["outputs"]["maps"] == []  # the scanner's map is the map: the node writes no second one
    (figures,) = summary["analysis"]["slices"]
    assert figures["map_source"] == "scanner map"


def test_a_map_that_arrives_after_its_raw_images_were_analysed_supersedes_that_analysis(node) -> None:
    settings, factory, raw_job = node
    run_job(raw_job, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None)
    with factory() as session:
        raw_paths = [settings.storage_root / i.path for i in session.get(Job, raw_job).series.instances]
        study_uid = session.get(Job, raw_job).series.study.study_instance_uid
    map_job_id = _add_series(factory, settings, study_uid, [_t1_map(raw_paths[0].parent, raw_paths, 1010.0)],
                             SeriesRole.T1_MAP, "t1_map")
    assert run_job(map_job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.DONE
    )
    with factory() as session:
        first, second = session.scalars(select(AnalysisUnit).order_by(AnalysisUnit.id)).all()
        assert second.supersedes_unit_id == first.id
        result = session.scalars(select(Result).where(Result.job_id == map_job_id)).one()
    assert result.summary["supersedes"]["job_id"] == raw_job
    assert all(path.startswith("outputs/") for path in result.paths)


def test_job_that_ran_already_is_not_run_again(node) -> None:
    settings, factory, job_id = node
    run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None)
    again: list[int] = []
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=again.append) is (
        JobOutcome.SKIPPED
    )
    assert again == []
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 1


def test_rerun_after_a_crash_rewrites_the_same_outputs_and_keeps_one_result(node) -> None:
    settings, factory, job_id = node
    run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None)
    with factory() as session:
        first_paths = sorted(session.scalars(select(Result)).one().paths)
        # As if the node died after writing the files but before committing: no result, job back in the queue.
        session.execute(delete(Transfer))
        session.execute(delete(Result))
        job = session.get(Job, job_id)
        job.state = JobState.QUEUED
        session.commit()
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.DONE
    )
    with factory() as session:
        results = session.scalars(select(Result)).all()
        assert len(results) == 1
        assert sorted(results[0].paths) == first_paths
        assert session.get(Job, job_id).attempts == 2
    outputs = (settings.storage_root / "outputs").rglob("*.dcm")
    written = sorted(str(p.relative_to(settings.storage_root)) for p in outputs)
    assert written == first_paths


def test_job_of_a_superseded_revision_does_no_work(node) -> None:
    settings, factory, job_id = node
    with factory() as session:
        session.get(Job, job_id).series.revision = 1
        session.commit()
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.SUPERSEDED
    )
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 0
        assert session.get(Job, job_id).error == "superseded by revision 1"


def test_unreadable_series_fails_the_job_with_the_reason(node) -> None:
    settings, factory, job_id = node
    for path in (settings.storage_root).rglob("*.dcm"):
        path.write_bytes(b"truncated")
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.FAILED
    )
    with factory() as session:
        job = session.get(Job, job_id)
        assert job.state is JobState.FAILED
        assert "SeriesLoadError" in job.error
        assert job.series.state is SeriesState.FAILED


def test_warm_up_builds_both_map_objects() -> None:
    from dicomnode.jobs.map_job import warm_up

    assert warm_up() > 0.0


def test_a_fault_in_the_analysis_or_the_reports_leaves_the_maps_and_the_verdict(node, monkeypatch) -> None:
    settings, factory, job_id = node

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("unexpected")

    monkeypatch.setattr("dicomnode.analysis.slices.analyse_batch", broken)
    monkeypatch.setattr("dicomnode.jobs.map_job.write_reports", broken)
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.DONE
    )
    with factory() as session:
        (result,) = session.get(Job, job_id).results
        n_transfers = session.scalar(select(func.count()).select_from(Transfer))
    (slice_summary,) = result.summary["analysis"]["slices"]
    assert slice_summary["status"] == "failed" and "internal error" in slice_summary["reason"]
    assert result.summary["reports_error"] == "RuntimeError: unexpected"
    assert len(result.summary["outputs"]["maps"]) == 2 and len(result.summary["outputs"]["sc"]) == 1
    assert n_transfers == 3
