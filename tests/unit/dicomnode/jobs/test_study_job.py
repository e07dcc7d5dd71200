"""The study bullseye: a three-level phantom study analysed by its map jobs gives exactly one study bullseye
Secondary Capture and one study SR per state, both dciodvfy-clean; a re-run rewrites the same objects, a late slice
makes a new bullseye that names the earlier SR as its predecessor, and a study of one level gets none."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings, load_settings
from db import migrate
from db.models import Instance, Job, JobState, Result, Series, SeriesRole, SeriesState, Study, Transfer
from db.session import make_engine, make_session_factory
from dicomnode.io.classify import classify_series
from dicomnode.jobs.creation import JOBS_FOR_ROLE, job_key
from dicomnode.jobs.map_job import JobOutcome, run_job
from dicomnode.jobs.study_job import STUDY_JOB_KIND, queue_after
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from tests.report_builders import DCIODVFY

PHANTOM_SEED = 4321  # test seeds stay below 100000
LEVELS = ("basal", "mid", "apical")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-level MOLLI study, held still (no motion), raw images and the scanner's maps."""
    plan = plan_study(StudyRequest(seed=PHANTOM_SEED, vendor=Vendor.SIEMENS, sequence=SequenceChoice.MOLLI,
                                   motion_rate=0.0, with_experts=False, with_trainees=False, n_slices=3), 0)
    return generate_study(plan, tmp_path_factory.mktemp("phantom")).folder


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    settings = load_settings(storage={"path": tmp_path / "data"},
                             peers=[{"ae_title": "CONSOLE", "host": "127.0.0.1", "port": 11113}])
    settings.storage_root.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    yield settings, make_session_factory(engine)
    engine.dispose()


def _store_level(phantom: Path, level: str, settings: Settings, factory: sessionmaker[Session]) -> list[int]:
    """Store the level's magnitude and map series as the node would (files, rows, jobs); the new jobs' ids."""
    job_ids = []
    for folder in sorted((phantom / level).iterdir()):
        if not folder.is_dir() or not folder.name.endswith(("_magnitude", "_map")):
            continue
        datasets = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
        role = classify_series(datasets)
        assert role in (SeriesRole.RAW_IR, SeriesRole.T1_MAP), (folder.name, role)
        first = datasets[0]
        with factory() as session:
            study = session.scalars(select(Study).where(Study.study_instance_uid == first.StudyInstanceUID)
                                    ).one_or_none() or Study(study_instance_uid=first.StudyInstanceUID)
            series = Series(study=study, series_instance_uid=first.SeriesInstanceUID,
                            series_number=int(first.SeriesNumber), description=str(first.SeriesDescription),
                            role=role, state=SeriesState.COMPLETE, calling_ae="CONSOLE", calling_host="127.0.0.1")
            session.add(series)
            for path, ds in zip(sorted(folder.glob("*.dcm")), datasets, strict=True):
                target = settings.storage_root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                session.add(Instance(
                    series=series, sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                    transfer_syntax_uid=ExplicitVRLittleEndian, instance_number=int(ds.InstanceNumber),
                    path=str(target.relative_to(settings.storage_root)), sha256="0" * 64,
                    size_bytes=target.stat().st_size,
                ))
            for kind in JOBS_FOR_ROLE[role]:
                job = Job(key=job_key(series.series_instance_uid, 0, kind), kind=kind.value, series=series,
                          series_revision=0)
                session.add(job)
                session.flush()
                job_ids.append(job.id)
            session.commit()
    return job_ids


def _run(job_ids: list[int], settings: Settings, factory: sessionmaker[Session]) -> list[int]:
    deliveries: list[int] = []
    for job_id in job_ids:
        assert run_job(job_id, settings=settings, session_factory=factory,
                       enqueue_delivery=deliveries.append) is JobOutcome.DONE
    return deliveries


def _study_jobs(factory: sessionmaker[Session]) -> list[Job]:
    with factory() as session:
        return list(session.scalars(select(Job).where(Job.kind == STUDY_JOB_KIND).order_by(Job.id)))


def _study_result(factory: sessionmaker[Session], job_id: int) -> Result:
    with factory() as session:
        return session.scalars(select(Result).where(Result.job_id == job_id)).one()


def _dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.slow
def test_a_three_level_study_gets_one_study_bullseye_and_one_study_sr(phantom: Path, node) -> None:
    settings, factory = node
    job_ids = [job_id for level in LEVELS for job_id in _store_level(phantom, level, settings, factory)]
    assert len(job_ids) == 6  # the raw images and the scanner's map of each level
    deliveries = _run(job_ids[:-1], settings, factory)
    assert _study_jobs(factory) == []  # a map job of the study is still queued: no bullseye yet
    deliveries += _run(job_ids[-1:], settings, factory)
    (study_job,) = _study_jobs(factory)
    assert study_job.state is JobState.DONE
    # Another end of a map job in the same study state (a job closed late, a redelivered task) queues nothing.
    assert all(queue_after(job_id, factory) is None for job_id in job_ids)
    result = _study_result(factory, study_job.id)
    summary = result.summary
    assert summary["kind"] == "t1" and summary["slices"] == 3
    assert [s["level"] for s in summary["analysis"]["slices"]] == ["basal", "mid", "apical"]
    (sc_path,) = summary["outputs"]["sc"]
    (sr_path,) = summary["outputs"]["sr"]
    with factory() as session:
        transfers = session.scalars(select(Transfer).where(Transfer.result_id == result.id)).all()
        assert {t.path for t in transfers} == {sc_path}  # the console takes Secondary Captures
        assert {t.id for t in transfers} <= set(deliveries)
        units = {r.job_id for r in session.scalars(select(Result).where(Result.kind == "t1_map"))}
    assert set(summary["study_of_jobs"]) == units and len(units) == 3

    capture = pydicom.dcmread(settings.storage_root / sc_path)
    assert capture.SOPClassUID == SecondaryCaptureImageStorage
    assert capture.SeriesDescription == "myomap T1 MOLLI study bullseye SC"
    assert capture.ImageComments.startswith("Study bullseye, MOLLI 5(3)3: ")
    assert _dciodvfy_errors(settings.storage_root / sc_path) == []
    report = hd.sr.srread(settings.storage_root / sr_path)
    assert report.SeriesDescription == "myomap T1 MOLLI study SR"
    assert report.StudyInstanceUID == capture.StudyInstanceUID
    assert _dciodvfy_errors(settings.storage_root / sr_path) == []
    groups = report.content.get_image_measurement_groups()
    assert len(groups) == 3 + 16  # per level its myocardium, then each AHA segment
    segment_groups = [g for g in groups if "AHA segment" in g.tracking_identifier]
    assert sorted(int(g.tracking_identifier.rsplit(" ", 1)[1]) for g in segment_groups) == list(range(1, 17))
    # Each segment's values are those the unit's own analysis recorded for its slice.
    basal = summary["analysis"]["slices"][0]
    segment_1 = next(g for g in segment_groups if g.tracking_identifier.endswith(" 1"))
    means = [m.value for m in segment_1.get_measurements() if m.derivation is not None
             and m.derivation.meaning == "Mean" and m.unit.value == "ms"]
    if not basal["quality"]["doubtful"]:
        assert means == [pytest.approx(basal["segments"]["1"]["mean_ms"])]
    else:
        assert means == []

    # A re-run (a crash after the files, before the commit) rewrites the same objects and keeps one result.
    with factory() as session:
        session.execute(delete(Transfer).where(Transfer.result_id == result.id))
        session.execute(delete(Result).where(Result.id == result.id))
        session.get(Job, study_job.id).state = JobState.QUEUED
        session.commit()
    assert run_job(study_job.id, settings=settings, session_factory=factory,
                   enqueue_delivery=lambda _id: None) is JobOutcome.DONE
    again = _study_result(factory, study_job.id)
    assert again.summary["outputs"] == summary["outputs"]
    assert pydicom.dcmread(settings.storage_root / sr_path).SOPInstanceUID == report.SOPInstanceUID
    assert len(_study_jobs(factory)) == 1


@pytest.mark.slow
def test_a_late_slice_makes_a_new_bullseye_that_supersedes_the_first(phantom: Path, node) -> None:
    settings, factory = node
    _run(_store_level(phantom, "basal", settings, factory), settings, factory)
    assert _study_jobs(factory) == []  # one level: the slice's own bullseye is all the study has
    _run(_store_level(phantom, "mid", settings, factory), settings, factory)
    (first,) = _study_jobs(factory)
    first_summary = _study_result(factory, first.id).summary
    assert [s["level"] for s in first_summary["analysis"]["slices"]] == ["basal", "mid"]
    first_sr = pydicom.dcmread(settings.storage_root / first_summary["outputs"]["sr"][0])

    _run(_store_level(phantom, "apical", settings, factory), settings, factory)
    first_again, second = _study_jobs(factory)
    assert first_again.id == first.id and second.key != first.key
    summary = _study_result(factory, second.id).summary
    assert [s["level"] for s in summary["analysis"]["slices"]] == ["basal", "mid", "apical"]
    sr = pydicom.dcmread(settings.storage_root / summary["outputs"]["sr"][0])
    assert sr.SOPInstanceUID != first_sr.SOPInstanceUID and sr.SeriesInstanceUID != first_sr.SeriesInstanceUID
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first_sr.SOPInstanceUID
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Result).where(Result.kind == STUDY_JOB_KIND)) == 2
