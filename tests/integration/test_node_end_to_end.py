"""The node end to end: storescu (scanner) -> `myomap serve` -> maps back to storescp (console).

Phantom studies: seed 21, Siemens flavour, one mid-ventricular slice, MOLLI 5(3)3, ShMOLLI and T2-prep.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage, ParametricMapStorage, SecondaryCaptureImageStorage
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from db.models import Instance, Job, JobState, Result, Transfer, TransferState
from tests.integration.node_harness import (
    Console,
    NodeProcess,
    dcmtk_env,
    echo,
    magnitude_files,
    make_phantom,
    myomap_executable,
    phantom_sidecar,
    requires_dcmtk,
    send,
    serve,
    truth_myocardium,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    requires_dcmtk,
]

PHANTOM_SEED = 21
# The node's T1 map (plain MOLLI fit + Bloch correction, docs/mapping.md) and T2 map against the phantom's truth.
T1_TOLERANCE = 0.03
T2_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("phantom"), seed=PHANTOM_SEED)


@pytest.fixture
def node(tmp_path: Path, console: Console) -> Iterator[NodeProcess]:
    yield from serve(tmp_path / "node", console.port)


def _database(node: NodeProcess) -> Session:
    return Session(create_engine(f"sqlite:///{node.data / 'myomap.db'}"))


MAP_CLASSES = (MRImageStorage, ParametricMapStorage)


def _counts(node: NodeProcess) -> tuple[int, int, int, int]:
    with _database(node) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table)) for table in (Instance, Job, Result, Transfer)
        )


def _all_sent(node: NodeProcess) -> None:
    """Wait until the job is done and every transfer it planned was sent (the SR and SEG come after the maps)."""

    def done() -> bool:
        with _database(node) as session:
            jobs = session.scalars(select(Job)).all()
            states = [t.state for t in session.scalars(select(Transfer))]
        return bool(jobs) and all(j.state is JobState.DONE for j in jobs) and set(states) == {TransferState.SENT}

    wait_until(done, timeout_s=60, what="every transfer sent")


def _received(console: Console, sop_class: str, suffix: str) -> list[pydicom.Dataset]:
    found = []
    for path in console.files():
        ds = pydicom.dcmread(path)
        if ds.SOPClassUID == sop_class and str(ds.SeriesDescription).endswith(suffix):
            found.append(ds)
    return found


def test_raw_series_come_back_as_maps_with_the_true_relaxation_times(
    phantom: Path, node: NodeProcess, console: Console
) -> None:
    molli, t2prep = magnitude_files(phantom, "molli_5(3)3"), magnitude_files(phantom, "t2prep")
    statuses = send(node.dicom_port, [*molli, *t2prep])
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(molli) + len(t2prep)

    # One MR map and one Parametric Map per series (and the Secondary Captures with the verdict).
    wait_until(lambda: len(console.files_of(*MAP_CLASSES)) >= 4, timeout_s=60, what="4 maps at the console")
    truth = phantom_sidecar(phantom)
    myocardium = truth_myocardium(phantom)
    (t1_mr,) = _received(console, MRImageStorage, "T1MAP")
    (t1_pm,) = _received(console, ParametricMapStorage, "T1MAP")
    (t2_mr,) = _received(console, MRImageStorage, "T2MAP")
    (t2_pm,) = _received(console, ParametricMapStorage, "T2MAP")
    assert t1_mr.StudyInstanceUID == pydicom.dcmread(molli[0]).StudyInstanceUID

    # The scanner's own map is the plain MOLLI fit, which reads myocardium several percent low; the node reports the
    # same scanner-comparable estimate by default ([mapping] report_t1 = "scanner", what normal ranges are built
    # on) and its Bloch-corrected estimate, from the acquisition the raw series' tags describe, as a second one.
    scanner_plain_ms = next(
        s["scanner_map_mean_in_true_myocardium_ms"] for s in truth["sequences"]
        if s["scheme"]["sequence"] == "molli_5(3)3"
    )
    true_t1_ms = truth["truth"]["t1_ms"]["global"]
    true_t2_ms = truth["truth"]["t2_ms"]["global"]
    assert scanner_plain_ms < true_t1_ms * (1 - T1_TOLERANCE)
    for t1_map in (t1_mr.pixel_array.astype(float), t1_pm.pixel_array.astype(float)):
        t1_ms = float(np.mean(t1_map[myocardium]))
        assert t1_ms == pytest.approx(scanner_plain_ms, rel=0.01)
    for t2_map in (t2_mr.pixel_array.astype(float), t2_pm.pixel_array.astype(float)):
        assert float(np.mean(t2_map[myocardium])) == pytest.approx(true_t2_ms, rel=T2_TOLERANCE)

    _all_sent(node)  # the Secondary Captures may still be on their way
    assert stat.S_IMODE(node.data.stat().st_mode) == 0o700  # the node made the folder: for its user only
    with _database(node) as session:
        results = session.scalars(select(Result)).all()
        assert sorted(r.kind for r in results) == ["t1_map", "t2_map"]
        assert all(r.summary["median_ms"] > 0 for r in results)

    # The node logged its work (UIDs, AE titles) at DEBUG, but never the patient's name or ID.
    source = pydicom.dcmread(molli[0])
    log = node.log()
    assert source.SeriesInstanceUID in log
    for value in (str(source.PatientName), *str(source.PatientName).split("^"), str(source.PatientID)):
        assert value and value not in log


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed")
def test_maps_sent_to_the_console_pass_dciodvfy(phantom: Path, node: NodeProcess, console: Console) -> None:
    send(node.dicom_port, magnitude_files(phantom, "molli_5(3)3"))
    wait_until(lambda: len(console.files_of(*MAP_CLASSES)) >= 2 and console.files_of(SecondaryCaptureImageStorage),
               timeout_s=60, what="2 maps and the Secondary Captures at the console")
    _all_sent(node)
    for path in console.files():
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


def test_resending_the_same_instances_creates_no_duplicate_work(
    phantom: Path, node: NodeProcess, console: Console
) -> None:
    files = magnitude_files(phantom, "molli_5(3)3")
    send(node.dicom_port, files)
    wait_until(lambda: len(console.files_of(*MAP_CLASSES)) >= 2, timeout_s=60, what="2 maps at the console")
    _all_sent(node)
    before = _counts(node)
    received = len(console.files())
    assert before[:3] == (len(files), 1, 1) and before[3] == received >= 3  # maps and Secondary Captures

    statuses = send(node.dicom_port, files)
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(files)
    # Longer than the quiet period, so that a completion by either rule would have queued work by now.
    time.sleep(4.0)
    assert _counts(node) == before
    assert len(console.files()) == received
    with _database(node) as session:
        assert [job.state for job in session.scalars(select(Job))] == [JobState.DONE]


def test_status_counts_what_the_node_holds(phantom: Path, node: NodeProcess, console: Console) -> None:
    send(node.dicom_port, magnitude_files(phantom, "t2prep"))
    wait_until(lambda: len(console.files_of(*MAP_CLASSES)) >= 2, timeout_s=60, what="2 maps at the console")
    _all_sent(node)
    done = node.myomap("status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["series"]["done"] == 1
    assert status["jobs"] == {"queued": 0, "running": 0, "done": 1, "failed": 0, "waiting": 0}
    assert status["transfers"]["sent"] == _counts(node)[3] == len(console.files())


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_serve_with_embedded_defaults_answers_echo(tmp_path: Path) -> None:
    if not (_port_free(11112) and _port_free(8080)):
        pytest.skip("the default ports 11112 and 8080 are in use on this machine")
    # As `make run` does: no configuration file, no MYOMAP_* variables, a fresh working folder.
    env = {key: value for key, value in dcmtk_env().items() if not key.startswith("MYOMAP_")}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([*myomap_executable(), "serve"], cwd=tmp_path, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: echo(11112) or process.poll() is not None, timeout_s=60, interval_s=0.3,
                   what="C-ECHO on port 11112")
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        assert (tmp_path / "data" / "myomap.db").is_file()
        assert (tmp_path / "data" / "queue.db").is_file()
    finally:
        process.terminate()
        assert process.wait(30) == 0, (tmp_path / "serve.log").read_text()
