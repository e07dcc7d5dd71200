"""The Orthanc harness: real C-STORE over loopback into Orthanc and out of it, read back through its REST API.

Phantom: seed 23, Siemens flavour, one mid-ventricular T2-prep slice (generated in-process, no readers).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_studies
from tests.integration.node_harness import Console, dcmtk_env, magnitude_files, requires_dcmtk, wait_until
from tests.integration.orthanc import Modality, Orthanc, orthanc_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not orthanc_available(), reason="Orthanc is not installed (make deps installs it)"),
    requires_dcmtk,
]

PHANTOM_SEED = 23
SCANNER_AE = "SCANNER"


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("phantom")
    request = StudyRequest(seed=PHANTOM_SEED, vendor=Vendor.SIEMENS, sequence=SequenceChoice.T2PREP, motion_rate=0.0,
                           with_experts=False, with_trainees=False, n_slices=1)
    generate_studies(request, out, n_studies=1, workers=1, progress=False)
    return magnitude_files(out / "study_0000", "t2prep")


@pytest.fixture
def orthanc(tmp_path: Path, console: Console) -> Orthanc:
    modalities = {"scanner": Modality(SCANNER_AE, 104), "console": Modality("CONSOLE", console.port)}
    with Orthanc(tmp_path / "orthanc", modalities) as running:
        yield running


def _storescu(orthanc: Orthanc, files: list[Path], *, calling_ae: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["storescu", "-aet", calling_ae, "-aec", orthanc.ae_title, "127.0.0.1", str(orthanc.dicom_port),
         *map(str, files)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=60,
    )


def test_storescu_study_is_listed_by_the_rest_api(orthanc: Orthanc, phantom_files: list[Path]) -> None:
    done = _storescu(orthanc, phantom_files, calling_ae=SCANNER_AE)
    assert done.returncode == 0, done.stderr
    sent = [pydicom.dcmread(path, stop_before_pixels=True) for path in phantom_files]

    (study_id,) = orthanc.studies()
    assert orthanc.find_study(sent[0].StudyInstanceUID) == study_id
    assert orthanc.find_study(sent[0].StudyInstanceUID + ".9") is None
    (series,) = orthanc.study_series(study_id)
    assert series["MainDicomTags"]["Modality"] == "MR"
    assert series["MainDicomTags"]["SeriesInstanceUID"] == sent[0].SeriesInstanceUID
    instances = orthanc.series_instances(series["ID"])
    assert len(instances) == len(phantom_files)
    tags = orthanc.instance_tags(instances[0]["ID"])
    assert tags["SOPInstanceUID"] in {ds.SOPInstanceUID for ds in sent}
    stored = pydicom.dcmread(pydicom.filebase.DicomBytesIO(orthanc.instance_file(instances[0]["ID"])))
    assert stored.SOPInstanceUID == tags["SOPInstanceUID"] and stored.pixel_array.ndim == 2


def test_unknown_callers_are_refused(orthanc: Orthanc, phantom_files: list[Path]) -> None:
    done = _storescu(orthanc, phantom_files[:1], calling_ae="STRANGER")
    assert done.returncode != 0 and "Calling AE Title Not Recognized" in done.stderr
    assert orthanc.studies() == []


def test_rest_upload_then_send_to_a_modality(orthanc: Orthanc, console: Console, phantom_files: list[Path]) -> None:
    answers = [orthanc.upload(path) for path in phantom_files[:2]]
    assert {answer["Status"] for answer in answers} == {"Success"}
    study_uid = pydicom.dcmread(phantom_files[0], stop_before_pixels=True).StudyInstanceUID
    study_id = orthanc.find_study(study_uid)
    assert study_id == answers[0]["ParentStudy"]

    job = orthanc.send_to_modality("console", [study_id])
    assert job["InstancesCount"] == 2 and job["FailedInstancesCount"] == 0
    wait_until(lambda: len(console.files()) == 2, timeout_s=10, what="2 files at the console")
    received = {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in console.files()}
    assert received == {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in phantom_files[:2]}
