"""The README's first run, as a new user runs it: `make run` in one terminal, `make demo` in another.

From an empty data folder, on free ports of 127.0.0.1 (the Makefile's NODE_PORT, WEB_PORT, DATA_DIR and DEMO_PORT),
with the interpreter's own virtualenv (the test never installs anything): the demo's storescp console must receive
the Secondary Captures of every analysis, among them a red motion banner for a series the phantom moved, the node
must have delivered every transfer, and its log must be free of the libraries' chatter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from tests.integration.node_harness import REPO_ROOT, echo, free_port, requires_dcmtk

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    requires_dcmtk,
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]

VENV = Path(sys.prefix)
#: The Makefile's install stamp for `make run`: taken as up to date, so the test runs the installed node as is.
NODE_STAMP = VENV / ".installed-node"
ALERT_RGB = np.array([170, 20, 20])  # reports/console_images.py ALERT: motion found or analysis failed


def _make(*args: str) -> list[str]:
    return ["make", "--no-print-directory", "-o", str(NODE_STAMP), *args, f"VENV={VENV}"]


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already ended
        os.killpg(process.pid, sig)


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


class MakeRun:
    """`make run` in its own process group (make, the shell and `myomap serve`), logging to a file."""

    def __init__(self, folder: Path) -> None:
        self.variables = [f"NODE_PORT={free_port()}", f"WEB_PORT={free_port()}", f"DATA_DIR={folder / 'data'}",
                          f"DEMO_PORT={free_port()}"]
        self.node_port = int(self.variables[0].split("=")[1])
        self.data = folder / "data"
        self.log_file = folder / "make-run.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(_make("run", *self.variables), cwd=REPO_ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not echo(self.node_port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`make run` did not start the node:\n{self.log()}")
            time.sleep(0.3)

    def stop(self) -> int | None:
        """SIGTERM to the group, which stops the node gracefully as Ctrl-C in the terminal does; make's status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        _kill_group(self.process, signal.SIGTERM)
        status = self.process.wait(10)  # make returns at once; the node finishes its running jobs first
        deadline = time.monotonic() + 60
        while _group_alive(self.process):
            if time.monotonic() > deadline:
                _kill_group(self.process, signal.SIGKILL)
                break
            time.sleep(0.2)
        return status

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[MakeRun]:
    node = MakeRun(tmp_path)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _banner_is_red(path: Path) -> bool:
    """Whether the image's top rows (the banner, behind white text) are mostly the alert red."""
    rgb = pydicom.dcmread(path).pixel_array[:40].reshape(-1, 3).astype(int)
    return bool(np.mean(np.abs(rgb - ALERT_RGB).max(axis=1) <= 10) > 0.5)


def test_make_demo_shows_a_motion_banner_at_its_console(make_run: MakeRun) -> None:
    done = subprocess.run(_make("demo", *make_run.variables), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output}\n--- node log ---\n{make_run.log()}"

    demo = make_run.data / "demo"
    manifest = json.loads(next(demo.glob("study_*/manifest.json")).read_text())
    moved = [sequence["series"]["magnitude"]["series_description"]
             for level in manifest["slices"]
             for sequence in json.loads((next(demo.glob("study_*")) / level["sidecar"]).read_text())["sequences"]
             if any(sequence["motion"]["labels"].values())]
    assert moved, "the demo's phantom study has no motion across a border: choose another DEMO_SEED"

    captures = [path for path in sorted((demo / "console").glob("*.dcm"))
                if pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID == SecondaryCaptureImageStorage]
    banners = {path: str(pydicom.dcmread(path, stop_before_pixels=True).ImageComments) for path in captures}
    analyses = {str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID) for path in captures}
    assert len(analyses) >= 3 * len(manifest["slices"]), banners  # MOLLI, ShMOLLI and T2-prep of every slice
    assert not [b for b in banners.values() if "not possible" in b.lower()], banners
    red = [path for path in captures if _banner_is_red(path)]
    assert red, f"no red banner at the console for the moved series {moved}: {set(banners.values())}"
    for path in red:  # red says motion here, since no analysis failed
        assert "motion" in banners[path].lower() and "no motion" not in banners[path].lower(), banners[path]

    status = subprocess.run([str(VENV / "bin" / "myomap"), "status", "--json"], capture_output=True, text=True,
                            env={**os.environ, "MYOMAP_STORAGE__PATH": str(make_run.data)}, timeout=60, check=True)
    transfers = json.loads(status.stdout)["transfers"]
    assert transfers["sent"] >= len(captures) and transfers["given_up"] == transfers["pending"] == 0, transfers

    make_run.stop()  # make itself reports the signal; the node must have stopped gracefully
    log = make_run.log()
    assert "myomap node stopped" in log, log
    assert "no [[peers]] entry" not in log
    assert " ERROR " not in log, log
    assert "copy attributes of module" not in log  # highdicom's INFO lines stay out of the node's log
