"""Enhanced MR raw series over DCMTK: a multi-frame MOLLI and a multi-frame T2-prep series (the phantom's enhanced
flavour, without the scanner's maps) sent with storescu get the node's maps, Secondary Captures, SR and SEG at the
console, each passing dciodvfy. The geometry of these images lives in their functional groups only."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    Comprehensive3DSRStorage,
    MRImageStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import Job, JobState, Result
from tests.integration.node_harness import (
    Console,
    NodeProcess,
    myomap_executable,
    phantom_sidecar,
    requires_dcmtk,
    send,
    serve,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_dcmtk]


@pytest.fixture(scope="module")
def enhanced_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("enhanced")
    subprocess.run(
        [*myomap_executable(), "phantom", "--out", str(out), "--studies", "1", "--seed", "7", "--readers", "",
         "--workers", "1", "--motion-rate", "0", "--vendor", "enhanced", "--slices", "1", "--sequence", "all"],
        check=True, capture_output=True, timeout=300,
    )
    return out / "study_0000"


@pytest.fixture
def node(tmp_path: Path, console: Console) -> Iterator[NodeProcess]:
    yield from serve(tmp_path / "node", console.port, quiet_seconds=1.0, console_receives=["sr", "sc", "seg"],
                     overrides={"series": {"pairing_seconds": 1.5}})


def _magnitude(study: Path, sequence: str) -> list[Path]:
    record = next(s for s in phantom_sidecar(study)["sequences"] if s["scheme"]["sequence"] == sequence)
    return [study / path for path in record["series"]["magnitude"]["paths"]]


def _jobs_settled(node: NodeProcess) -> list[Job]:
    engine = create_engine(f"sqlite:///{node.data / 'myomap.db'}")
    found: list[Job] = []

    def settled() -> bool:
        with Session(engine) as session:
            jobs = list(session.scalars(select(Job)))
        found[:] = jobs
        return bool(jobs) and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs)

    wait_until(settled, timeout_s=180, what="every job done or failed")
    return found


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed")
def test_enhanced_molli_and_t2prep_get_maps_captures_and_reports(enhanced_study: Path, node: NodeProcess,
                                                                 console: Console) -> None:
    molli, t2prep = _magnitude(enhanced_study, "molli_5(3)3"), _magnitude(enhanced_study, "t2prep")
    for path in (*molli, t2prep[0]):
        assert "PerFrameFunctionalGroupsSequence" in pydicom.dcmread(path, stop_before_pixels=True)
    statuses = send(node.dicom_port, [*molli, *t2prep])
    assert set(statuses.values()) == {"Success"}

    jobs = _jobs_settled(node)
    assert all(job.state is JobState.DONE for job in jobs), [(j.key, j.error) for j in jobs]
    assert "must carry ImagePositionPatient" not in node.log()
    with Session(create_engine(f"sqlite:///{node.data / 'myomap.db'}")) as session:
        maps = [r.summary for r in session.scalars(select(Result)) if r.kind in ("t1_map", "t2_map")]
    assert len(maps) == 2
    for summary in maps:  # the SR and the SEG were written too, from the node's own maps
        assert not summary.get("reports_error") and summary["outputs"]["sr"] and summary["outputs"]["seg"], summary

    def arrived() -> bool:
        maps = console.files_of(MRImageStorage)
        return (len(maps) >= 2 and len(console.files_of(ParametricMapStorage)) >= 2
                and len(console.files_of(SecondaryCaptureImageStorage)) >= 2
                and len(console.files_of(Comprehensive3DSRStorage)) >= 2
                and len(console.files_of(SegmentationStorage)) >= 2)

    wait_until(arrived, timeout_s=120, what="T1 and T2 maps, Secondary Captures, SRs and SEGs at the console")
    kinds = {str(pydicom.dcmread(p, stop_before_pixels=True).ImageType[2])
             for p in console.files_of(MRImageStorage)}
    assert kinds == {"T1 MAP", "T2 MAP"}
    for path in console.files_of(MRImageStorage):
        mr_map = pydicom.dcmread(path)
        # The map sits where the raw frames were: the functional groups' position, now at the top level.
        assert len(mr_map.ImagePositionPatient) == 3 and len(mr_map.ImageOrientationPatient) == 6
        assert mr_map.pixel_array.max() > 0
    for path in console.files():
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"
