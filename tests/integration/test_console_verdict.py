"""The radiographer's verdict: a DCMTK storescp as scanner console receives the node's Secondary Captures for a
MOLLI slice, with the motion verdict in words, and they pass dciodvfy.

Two phantom studies: one where breathing moved the heart during the MOLLI breath-hold (the phantom's labels name
the spoiled AHA segments) and one held still.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from tests.integration.node_harness import (
    CONSOLE_AE,
    Console,
    NodeProcess,
    magnitude_files,
    make_phantom,
    phantom_sidecar,
    requires_dcmtk,
    send,
    serve,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_dcmtk]

MOLLI = "molli_5(3)3"
MOTION_SEED = 67  # test seeds stay below 100000
STILL_SEED = 63
# The banner names the sequence and the slice level, then the verdict: "segment 6" or "segments 7, 10".
_SEGMENTS = re.compile(r"^MOLLI 5\(3\)3, mid: motion artefact in segments? ([\d, ]+) - consider repeating the "
                       r"breath-hold$")


@pytest.fixture
def node(tmp_path: Path, console: Console) -> Iterator[NodeProcess]:
    yield from serve(tmp_path / "node", console.port)


def _molli_study(folder: Path, seed: int, motion_rate: float) -> tuple[list[Path], dict[int, bool]]:
    study = make_phantom(folder, seed=seed, sequence="molli", motion_rate=motion_rate)
    record = next(s for s in phantom_sidecar(study)["sequences"] if s["scheme"]["sequence"].startswith("molli"))
    labels = {int(segment): bool(flag) for segment, flag in record["motion"]["labels"].items()}
    return magnitude_files(study, record["scheme"]["sequence"]), labels


def _captures_when_delivered(node: NodeProcess, console: Console) -> list[Path]:
    """The console's Secondary Captures once the first have arrived and the node has nothing left to send it."""
    wait_until(lambda: len(console.files_of(SecondaryCaptureImageStorage)) >= 2, timeout_s=60,
               what="Secondary Captures at the console")
    transfers = node.wait_delivered(CONSOLE_AE)
    assert all(t["state"] == "sent" for t in transfers), transfers
    return console.files_of(SecondaryCaptureImageStorage)


def _banners(console: Console) -> list[str]:
    return [str(pydicom.dcmread(path).ImageComments) for path in console.files_of(SecondaryCaptureImageStorage)]


def _dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def test_motion_verdict_reaches_the_console_in_words(tmp_path: Path, node: NodeProcess, console: Console) -> None:
    files, labels = _molli_study(tmp_path / "moved", MOTION_SEED, motion_rate=1.0)
    spoiled = {segment for segment, flag in labels.items() if flag}
    assert spoiled, "the phantom drew no motion across a border for this seed; choose another"
    send(node.dicom_port, files)
    captures = _captures_when_delivered(node, console)
    assert len(captures) == 3  # map with contours, AHA bullseye, attention map of the motion segments
    banners = set(_banners(console))
    assert len(banners) == 1, banners  # every image of the slice carries the same verdict
    (banner,) = banners
    found = _SEGMENTS.match(banner)
    assert found, banner
    named = {int(s) for s in found.group(1).split(", ")}
    assert named & spoiled, f"{banner!r} names none of the spoiled segments {sorted(spoiled)}"
    assert named <= set(labels), "segments outside the slice's level"
    if shutil.which("dciodvfy"):
        for path in captures:
            assert _dciodvfy_errors(path) == [], path.name


def test_a_still_slice_gets_no_motion_verdict(tmp_path: Path, node: NodeProcess, console: Console) -> None:
    files, labels = _molli_study(tmp_path / "still", STILL_SEED, motion_rate=0.0)
    assert not any(labels.values())
    send(node.dicom_port, files)
    captures = _captures_when_delivered(node, console)
    assert len(captures) == 2  # no attention map without motion
    assert set(_banners(console)) == {"MOLLI 5(3)3, mid: no motion artefact detected"}
