"""`myomap analyze` as a user runs it, in a real process with real pipes: a folder without DICOM gets one sentence
and exit status 2; piped output keeps whole lines whatever COLUMNS says; progress covers reading, the analysis units
and the slices; notes name a slice by series description and number, never by UID."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dicomnode.analysis.study import analyze_paths
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study

UID = re.compile(r"\b\d+(\.\d+){6,}\b")  # a DICOM UID: many dot-separated numbers


def _myomap(*args: str, columns: int = 40) -> subprocess.CompletedProcess[str]:
    """Run the command with stdout and stderr piped and a narrow COLUMNS, as `myomap analyze ... | less` would."""
    script = Path(sys.executable).with_name("myomap")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dicomnode.app.cli"]
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([*command, "analyze", *args], capture_output=True, text=True, timeout=300, env=env,
                          check=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-slice MOLLI phantom study: scanner map, raw images, readers' SEG/RTSTRUCT, a few non-DICOM files."""
    request = StudyRequest(seed=5, n_slices=1, matrix=(80, 96), pixel_spacing_mm=2.2, vendor=Vendor.SIEMENS,
                           sequence=SequenceChoice.MOLLI, motion_rate=0.0)
    return generate_study(plan_study(request, 0), tmp_path_factory.mktemp("study")).folder


@pytest.mark.parametrize("content", [{}, {"notes.txt": b"not an image", "scan.dcm": b"\x00" * 64}],
                         ids=["empty", "non-dicom"])
def test_a_folder_without_dicom_gets_one_sentence_and_status_2(tmp_path: Path, content: dict[str, bytes]) -> None:
    for name, data in content.items():
        (tmp_path / name).write_bytes(data)
    result = _myomap(str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("No DICOM files to analyse in ") and str(tmp_path) in lines[0]
    assert lines[0].endswith(".") and "Traceback" not in result.stderr
    assert ("none of them DICOM" in lines[0]) == bool(content)


@pytest.mark.slow
def test_piped_output_is_whole_and_names_slices_by_series(study: Path) -> None:
    result = _myomap(str(study), "--gold-standard", "truth", "--no-models", columns=40)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "…" not in out  # nothing cut to the terminal's width
    rows = [line for line in out.splitlines() if "trainee" in line and "│" in line]
    assert rows and all(len(line) > 40 for line in rows)
    # Every row holds all its columns: slice, reader, 8 figures and the error mode.
    assert all(len([cell for cell in line.split("│") if cell.strip()]) == 11 for line in rows)
    assert "values in ms over each reader's myocardium; diff: reader minus reference;" in out  # caption on one line
    notes = [line for line in out.splitlines() if line.startswith("note ")]
    assert notes and all(re.search(r"slice 1 \(.*MOLLI.*, series \d+\)", line) for line in notes)
    assert not UID.search(out), "a UID in the output"
    assert "\x1b[" not in out  # no terminal colour codes in a pipe
    # Progress of the whole analysis on stderr, one line per stage step, after the files are read.
    progress = result.stderr.splitlines()
    assert progress[0].startswith("read ") and progress[0].endswith(" files")
    assert "maps of analysis unit 1/1 ready" in progress
    assert "slice 1/1 analysed" in progress


@pytest.mark.slow
def test_progress_reaches_every_stage_s_total(study: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    report = analyze_paths([study], gold_standard="truth", on_progress=lambda *step: seen.append(step))
    stages = [stage for stage, _, _ in seen]
    assert stages.index("reading") < stages.index("maps") < stages.index("slices")
    last = {stage: (done, total) for stage, done, total in seen}
    assert last["reading"][0] == last["reading"][1] == report.files_read + report.non_dicom_skipped
    assert last["maps"] == (1, 1)
    assert last["slices"] == (len(report.slices), len(report.slices)) == (1, 1)
    for stage in ("reading", "maps", "slices"):
        done = [d for s, d, _ in seen if s == stage]
        assert done == sorted(done)
    assert report.slices[0].series_number is not None
