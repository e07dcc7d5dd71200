"""Nothing acknowledged is lost: SIGKILL the node while storescu sends 200 instances, restart, check everything.

The 200 instances are one phantom MOLLI series (seed 23) copied 25 times, each copy a new series with new SOP
Instance UIDs, sent on one association; the node is killed once storescu has seen 100 success responses.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from db.models import Instance, Job, JobState, Result, Series
from tests.integration.node_harness import (
    Console,
    NodeProcess,
    dcmtk_env,
    free_port,
    myomap_executable,
    parse_storescu_log,
    requires_dcmtk,
    send,
    storescu_command,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    requires_dcmtk,
]

COPIES = 25
KILL_AFTER_SUCCESSES = 100


def _copies(tmp_path: Path) -> list[Path]:
    """COPIES new series of the phantom's MOLLI magnitude images, in sending order."""
    phantom = tmp_path / "phantom"
    subprocess.run(
        [*myomap_executable(), "phantom", "--out", str(phantom), "--studies", "1", "--seed", "23", "--sequence",
         "molli", "--vendor", "siemens", "--readers", "", "--slices", "1", "--workers", "1"],
        check=True, capture_output=True, timeout=300,
    )
    sources = sorted((phantom / "study_0000" / "mid").glob("*_magnitude/*.dcm"))
    assert len(sources) == 8
    originals = [pydicom.dcmread(path) for path in sources]
    files = []
    for copy in range(COPIES):
        series_uid = generate_uid()
        folder = tmp_path / "send" / f"{copy:03d}"
        folder.mkdir(parents=True)
        for index, ds in enumerate(originals):
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = 100 + copy
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = folder / f"{index:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return files


def _send_and_kill(node: NodeProcess, files: list[Path]) -> dict[Path, str]:
    """Run storescu, SIGKILL the node after KILL_AFTER_SUCCESSES responses, return what storescu reported."""
    process = subprocess.Popen(
        storescu_command(node.dicom_port, files), env=dcmtk_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, bufsize=1,
    )
    lines: list[str] = []
    killed = threading.Event()
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if not killed.is_set() and sum("Received Store Response" in x for x in lines) >= KILL_AFTER_SUCCESSES:
            node.kill()
            killed.set()
    process.wait(60)
    assert killed.is_set(), "storescu finished before the node could be killed"
    return parse_storescu_log(lines)


def test_sigkill_while_receiving_loses_nothing_and_each_series_gets_one_result(tmp_path: Path) -> None:
    files = _copies(tmp_path)
    sop_of = {path: pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files}
    series_of = {path: pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID for path in files}
    console = Console(tmp_path / "console", free_port())
    console.start()
    node = NodeProcess(tmp_path / "node", free_port(), free_port(), console.port)
    # A quiet period longer than the test: the interrupted series must be completed by its protocol (all 8
    # images, after the re-send), not by silence while the node was down.
    node.write_config(quiet_seconds=600.0)
    node.start()
    try:
        statuses = _send_and_kill(node, files)
        acknowledged = [path for path, status in statuses.items() if status in ("Success", "Warning")]
        assert KILL_AFTER_SUCCESSES <= len(acknowledged) < len(files)
        interrupted_series = next(series_of[path] for path in files if path not in statuses)

        node.start()
        engine = create_engine(f"sqlite:///{node.data / 'myomap.db'}")
        with Session(engine) as session:
            stored = {row.sop_instance_uid: row.path for row in session.scalars(select(Instance))}
        for path in acknowledged:
            assert sop_of[path] in stored, f"{path} was acknowledged but is not in the database"
            on_disk = pydicom.dcmread(node.data / stored[sop_of[path]], stop_before_pixels=True)
            assert on_disk.SOPInstanceUID == sop_of[path]

        # The scanner sends the whole lot again: acknowledged instances are idempotent, the rest is stored now.
        again = send(node.dicom_port, files, timeout_s=300)
        assert set(again.values()) == {"Success"} and len(again) == len(files)

        def all_done() -> bool:
            with Session(engine) as session:
                states = list(session.scalars(select(Job.state)))
            return len(states) == COPIES and all(state is JobState.DONE for state in states)

        wait_until(all_done, timeout_s=240, interval_s=0.5, what=f"{COPIES} map jobs done")
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(Instance)) == len(files)
            assert session.scalar(select(func.count()).select_from(Result)) == COPIES
            per_series = session.execute(
                select(Series.series_instance_uid, Series.revision, func.count(Result.id))
                .join(Job, Job.series_id == Series.id)
                .join(Result, Result.job_id == Job.id)
                .group_by(Series.series_instance_uid, Series.revision)
            ).all()
        results_of = {uid: (revision, count) for uid, revision, count in per_series}
        assert results_of[interrupted_series] == (0, 1)
        assert sorted(count for _uid, _revision, count in per_series) == [1] * COPIES
        engine.dispose()
    finally:
        node.stop()
        console.stop()
