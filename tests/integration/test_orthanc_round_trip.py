"""Orthanc as the PACS: scanner -> Orthanc -> node -> SR, SEG and Secondary Captures back into the same study.

storescu (the scanner) sends a phantom study (seed 29, one mid-ventricular slice: the MOLLI variant and T2-prep
magnitude images) to Orthanc; Orthanc forwards the study to the node through its REST API
(``/modalities/myomap/store``); the node, with Orthanc as a peer receiving ``sr``, ``seg`` and ``sc``, analyses
the series and sends its objects back. The test reads them through Orthanc's REST API.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import Job, JobState, Result, Transfer, TransferState
from tests.integration.node_harness import (
    NodeProcess,
    dcmtk_env,
    free_port,
    magnitude_files,
    make_phantom,
    phantom_sidecar,
    requires_dcmtk,
    wait_until,
)
from tests.integration.orthanc import ORTHANC_AE, Modality, Orthanc, orthanc_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not orthanc_available(), reason="Orthanc is not installed (make deps installs it)"),
    requires_dcmtk,
]

PHANTOM_SEED = 29
SCANNER_AE = "SCANNER"
#: What each output kind must arrive as: Modality and the SOP classes allowed.
EXPECTED = {
    "sr": ("SR", {EnhancedSRStorage, ComprehensiveSRStorage, Comprehensive3DSRStorage}),
    "seg": ("SEG", {SegmentationStorage}),
    "sc": ("OT", {SecondaryCaptureImageStorage, MultiFrameTrueColorSecondaryCaptureImageStorage}),
}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("phantom"), seed=PHANTOM_SEED)


@pytest.fixture
def orthanc_and_node(tmp_path: Path) -> tuple[Orthanc, NodeProcess]:
    node = NodeProcess(tmp_path / "node", free_port(), free_port(), free_port())
    modalities = {"myomap": Modality("MYOMAP", node.dicom_port), "scanner": Modality(SCANNER_AE, 104)}
    orthanc = Orthanc(tmp_path / "orthanc", modalities)
    orthanc.start()
    try:
        node.write_config(peers=[{"ae_title": ORTHANC_AE, "host": "127.0.0.1", "port": orthanc.dicom_port,
                                  "receives": ["sr", "seg", "sc"]}])
        node.start()
        yield orthanc, node
        assert node.stop() == 0, node.log()
    finally:
        node.kill()
        orthanc.stop()


def _database(node: NodeProcess) -> Session:
    return Session(create_engine(f"sqlite:///{node.data / 'myomap.db'}"))


def _node_finished(node: NodeProcess, n_jobs: int) -> bool:
    """All jobs finished and no transfer waiting."""
    with _database(node) as session:
        jobs = session.scalars(select(Job)).all()
        pending = session.scalars(select(Transfer).where(Transfer.state == TransferState.PENDING)).all()
    return len(jobs) == n_jobs and all(job.state in (JobState.DONE, JobState.FAILED) for job in jobs) and not pending


def _dciodvfy_errors(data: bytes, folder: Path, name: str) -> list[str]:
    path = folder / f"{name}.dcm"
    path.write_bytes(data)
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def test_orthanc_forwards_the_study_and_receives_sr_seg_and_sc(
    phantom: Path, orthanc_and_node: tuple[Orthanc, NodeProcess], tmp_path: Path
) -> None:
    orthanc, node = orthanc_and_node
    molli = next(s["scheme"]["sequence"] for s in phantom_sidecar(phantom)["sequences"]
                 if s["scheme"]["sequence"].startswith("molli"))
    files = [*magnitude_files(phantom, molli), *magnitude_files(phantom, "t2prep")]
    sent = subprocess.run(
        ["storescu", "-aet", SCANNER_AE, "-aec", orthanc.ae_title, "127.0.0.1", str(orthanc.dicom_port),
         *map(str, files)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    study_id = orthanc.find_study(study_uid)
    assert study_id is not None and len(orthanc.study_series(study_id)) == 2

    job = orthanc.send_to_modality("myomap", [study_id])
    assert job["InstancesCount"] == len(files) and job["FailedInstancesCount"] == 0

    wait_until(lambda: _node_finished(node, 2), timeout_s=120, interval_s=0.5, what="both jobs done, all sent")
    with _database(node) as session:
        results = session.scalars(select(Result)).all()
        failed_jobs = [job.error for job in session.scalars(select(Job)) if job.state is JobState.FAILED]
        transfers = session.scalars(select(Transfer).where(Transfer.ae_title == ORTHANC_AE)).all()
        outputs = {kind: [path for result in results for path in result.summary.get("outputs", {}).get(kind, [])]
                   for kind in EXPECTED}
    assert failed_jobs == []
    assert sorted(result.kind for result in results) == ["t1_map", "t2_map"]
    missing = [kind for kind, paths in outputs.items() if not paths]
    assert not missing, f"the node's results list no {', '.join(missing)} outputs (summary['outputs'])"
    assert transfers and {t.state for t in transfers} == {TransferState.SENT}, [t.last_error for t in transfers]

    verify = shutil.which("dciodvfy") is not None
    for kind, paths in outputs.items():
        modality, sop_classes = EXPECTED[kind]
        for relative in paths:
            written = pydicom.dcmread(node.data / relative, stop_before_pixels=True)
            assert written.StudyInstanceUID == study_uid
            # The object is in Orthanc, in the scanner's study.
            matches = orthanc.post("/tools/lookup", written.SOPInstanceUID)
            (instance_id,) = [match["ID"] for match in matches if match["Type"] == "Instance"]
            tags = orthanc.instance_tags(instance_id)
            assert tags["Modality"] == modality and tags["SOPClassUID"] in sop_classes, (kind, tags["SOPClassUID"])
            assert tags["StudyInstanceUID"] == study_uid
            data = orthanc.instance_file(instance_id)
            if kind == "sr":
                report = hd.sr.srread(io.BytesIO(data))
                assert isinstance(report.content, hd.sr.MeasurementReport)  # TID 1500
                groups = [*report.content.get_planar_roi_measurement_groups(),
                          *report.content.get_volumetric_roi_measurement_groups(),
                          *report.content.get_image_measurement_groups()]
                units = {m.unit.value for group in groups for m in group.get_measurements()}
                assert "ms" in units, units
            elif kind == "seg":
                seg = hd.seg.segread(io.BytesIO(data))
                assert seg.number_of_segments >= 1
            else:
                image = pydicom.dcmread(io.BytesIO(data))
                assert image.SamplesPerPixel == 3 and image.pixel_array.shape[-1] == 3
            if verify:
                assert _dciodvfy_errors(data, tmp_path, f"{kind}-{instance_id}") == [], (kind, relative)

    # Orthanc's study now holds the scanner's two series and the node's new ones.
    modalities = [series["MainDicomTags"].get("Modality") for series in orthanc.study_series(study_id)]
    assert modalities.count("MR") >= 2 and {"SR", "SEG", "OT"} <= set(modalities)
