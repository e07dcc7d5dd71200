"""The study bullseye over DCMTK: a three-level MOLLI phantom study sent to a running node gives the console one
study bullseye Secondary Capture after the slices' own images, with the node's study SR beside it; both pass
dciodvfy, and every series the console receives says what it holds. With ``[console] not_for_diagnostic_use``
every image the console receives carries that line."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from reports.console_images import NOT_FOR_DIAGNOSIS
from tests.integration.node_harness import (
    CONSOLE_AE,
    Console,
    NodeProcess,
    myomap_executable,
    requires_dcmtk,
    send,
    serve,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_dcmtk]

SEED = 33
LEVELS = ("basal", "mid", "apical")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("three_levels")
    subprocess.run(
        [*myomap_executable(), "phantom", "--out", str(out), "--studies", "1", "--seed", str(SEED), "--sequence",
         "molli", "--vendor", "siemens", "--readers", "", "--slices", "3", "--workers", "1", "--motion-rate", "0"],
        check=True, capture_output=True, timeout=300,
    )
    return out / "study_0000"


@pytest.fixture
def node(tmp_path: Path, console: Console) -> Iterator[NodeProcess]:
    yield from serve(tmp_path / "node", console.port, quiet_seconds=1.0, console_receives=["sc"],
                     overrides={"series": {"pairing_seconds": 2.0}, "console": {"not_for_diagnostic_use": True}})


def _files(study: Path) -> list[Path]:
    return [f for level in LEVELS for folder in sorted((study / level).iterdir())
            if folder.is_dir() and folder.name.endswith(("_magnitude", "_map")) for f in sorted(folder.glob("*.dcm"))]


def _dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def _captures(console: Console) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in console.files_of(SecondaryCaptureImageStorage)]


def test_three_levels_give_one_study_bullseye_and_one_study_sr(study: Path, node: NodeProcess,
                                                              console: Console) -> None:
    statuses = send(node.dicom_port, _files(study))
    assert set(statuses.values()) == {"Success"}
    wait_until(lambda: any("study bullseye" in str(ds.SeriesDescription) for ds in _captures(console)),
               timeout_s=120, what="the study bullseye at the console")
    transfers = node.wait_delivered(CONSOLE_AE)
    assert all(t["state"] == "sent" for t in transfers), transfers
    captures = _captures(console)
    study_captures = [ds for ds in captures if "study bullseye" in ds.SeriesDescription]
    assert len(study_captures) == 1
    (bullseye,) = study_captures
    assert bullseye.SeriesDescription == "myomap T1 MOLLI study bullseye SC"
    # The phantom draws the MOLLI variant per study; the banner names the one the protocol says.
    assert re.match(r"Study bullseye, MOLLI \d+s?\(\d+s?\)\d+s?: ", bullseye.ImageComments), bullseye.ImageComments
    per_slice = {ds.SeriesDescription for ds in captures if ds is not bullseye}
    assert per_slice == {f"myomap T1 MOLLI {level} SC" for level in LEVELS}
    for ds in captures:  # the site asked for it: every image says it is not for diagnosis
        pixels = ds.pixel_array
        assert np.count_nonzero(np.all(pixels == np.asarray(NOT_FOR_DIAGNOSIS, dtype=np.uint8), axis=-1)) > 300
    for path in console.files_of(SecondaryCaptureImageStorage):
        assert _dciodvfy_errors(path) == [], path.name

    reports = [p for p in (node.data / "outputs").rglob("*.dcm")
               if pydicom.dcmread(p, stop_before_pixels=True).get("SeriesDescription") == "myomap T1 MOLLI study SR"]
    assert len(reports) == 1
    assert _dciodvfy_errors(reports[0]) == []
    report = pydicom.dcmread(reports[0])
    assert report.StudyInstanceUID == bullseye.StudyInstanceUID
    evidence = {item.ReferencedSOPInstanceUID for series in report.CurrentRequestedProcedureEvidenceSequence
                for s in series.ReferencedSeriesSequence for item in s.ReferencedSOPSequence}
    assert len(evidence) == 3  # one map image per level
