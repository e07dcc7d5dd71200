"""The node scaled out: PostgreSQL as the database, Redis as the queue, `myomap serve` plus a `myomap worker`.

storescu (scanner) -> `myomap serve` (SCP, assembly, one queue worker) -> Redis -> the workers of both processes
-> maps back to storescp (console). Phantom: seed 21 (and its MOLLI series copied for the kill test), Siemens
flavour, one mid-ventricular slice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage, ParametricMapStorage, generate_uid
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from db.models import Instance, Job, JobState, Result, Transfer, TransferState
from tests.integration.conftest import PostgresServer, RedisServer
from tests.integration.node_harness import (
    Console,
    NodeProcess,
    WorkerProcess,
    free_port,
    magnitude_files,
    make_phantom,
    phantom_sidecar,
    requires_dcmtk,
    send,
    truth_myocardium,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    requires_dcmtk,
]

PHANTOM_SEED = 21
MOLLI = "molli_5(3)3"
T2PREP = "t2prep"
# As in test_node_end_to_end.py: the node's T1 map reports the scanner-comparable plain fit ([mapping] report_t1 =
# "scanner"), so it matches the phantom's scanner map; its T2 map matches the truth.
T1_TOLERANCE = 0.01
T2_TOLERANCE = 0.05
#: Queue workers of `myomap serve` and of the separate `myomap worker`.
SERVE_WORKERS = 1
WORKER_WORKERS = 2
#: MOLLI series (copies with new UIDs) sent for the kill test: more jobs than all workers together can hold.
KILL_TEST_SERIES = 6
#: Short DICOM timeouts: a transfer a killed worker had claimed is leased for ACSE + DIMSE timeout + 10 s
#: (dicomnode.net.scu), then re-queued by the node's health check (every 10 s) once 10 s overdue.
DICOM_TIMEOUT_S = 2.0
TRANSFER_RECOVERY_S = 2 * DICOM_TIMEOUT_S + 10.0 + 2 * 10.0


@dataclass
class ScaledOutNode:
    """`myomap serve` and one `myomap worker` sharing a PostgreSQL database and a Redis queue."""

    node: NodeProcess
    worker: WorkerProcess
    engine: Engine

    def counts(self) -> tuple[int, ...]:
        """Rows of instance, job, result and transfer."""
        with Session(self.engine) as session:
            return tuple(
                session.scalar(select(func.count()).select_from(table)) for table in (Instance, Job, Result, Transfer)
            )


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("phantom"), seed=PHANTOM_SEED)


@pytest.fixture
def scaled_out(
    tmp_path: Path, console: Console, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[ScaledOutNode]:
    database_url = postgres_server.create_database()
    node = NodeProcess(tmp_path / "node", free_port(), free_port(), console.port)
    node.write_config(
        workers=SERVE_WORKERS,
        database_url=database_url,
        queue_url=redis_server.create_database(),
        # Only the maps go back to the console here: these tests count transfers to check exactly-once work
        # across processes (test_node_end_to_end and test_console_verdict cover the Secondary Captures).
        overrides={"dicom": {"acse_timeout_s": DICOM_TIMEOUT_S, "dimse_timeout_s": DICOM_TIMEOUT_S},
                   "routing": {"return_outputs": ["maps"]}},
    )
    node.start()
    worker = node.worker()
    engine = create_engine(database_url)
    try:
        worker.start(workers=WORKER_WORKERS)
        yield ScaledOutNode(node, worker, engine)
        assert worker.stop() == 0, worker.log()
        assert node.stop() == 0, node.log()
    finally:
        worker.kill()
        node.kill()
        engine.dispose()


def _received(console: Console, sop_class: str, suffix: str) -> list[pydicom.Dataset]:
    found = []
    for path in console.files():
        ds = pydicom.dcmread(path)
        if ds.SOPClassUID == sop_class and str(ds.SeriesDescription).endswith(suffix):
            found.append(ds)
    return found


def _myocardial_mean(dataset: pydicom.Dataset, myocardium: np.ndarray) -> float:
    return float(np.mean(dataset.pixel_array.astype(float)[myocardium]))


def test_serve_and_a_separate_worker_return_true_maps(
    phantom: Path, scaled_out: ScaledOutNode, console: Console
) -> None:
    molli, t2prep = magnitude_files(phantom, MOLLI), magnitude_files(phantom, T2PREP)
    statuses = send(scaled_out.node.dicom_port, [*molli, *t2prep])
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(molli) + len(t2prep)

    # One MR map and one Parametric Map per series.
    wait_until(lambda: len(console.files()) >= 4, timeout_s=60, what="4 maps at the console")
    sidecar = phantom_sidecar(phantom)
    truth = sidecar["truth"]
    scanner_t1_ms = next(s["scanner_map_mean_in_true_myocardium_ms"] for s in sidecar["sequences"]
                         if s["scheme"]["sequence"] == MOLLI)
    myocardium = truth_myocardium(phantom)
    for sop_class in (MRImageStorage, ParametricMapStorage):
        (t1_map,) = _received(console, sop_class, "T1MAP")
        (t2_map,) = _received(console, sop_class, "T2MAP")
        assert _myocardial_mean(t1_map, myocardium) == pytest.approx(scanner_t1_ms, rel=T1_TOLERANCE)
        assert _myocardial_mean(t2_map, myocardium) == pytest.approx(truth["t2_ms"]["global"], rel=T2_TOLERANCE)

    wait_until(lambda: scaled_out.counts()[3] == 4, timeout_s=10, what="4 transfers recorded")
    # The maps go out before the job builds its SR and SEG; the job is done after those.
    wait_until(lambda: _jobs_done(scaled_out, 2), timeout_s=60, what="both jobs done")
    with Session(scaled_out.engine) as session:
        results = session.scalars(select(Result)).all()
        assert sorted(result.kind for result in results) == ["t1_map", "t2_map"]
        assert len({result.job.series_id for result in results}) == 2
        assert [job.state for job in session.scalars(select(Job))] == [JobState.DONE] * 2
        assert {transfer.state for transfer in session.scalars(select(Transfer))} == {TransferState.SENT}
    # Each job ran once, in one of the two processes (the node logs "job <id>: <kind> of ..." when done).
    logs = scaled_out.node.log() + scaled_out.worker.log()
    for result in results:
        assert logs.count(f"job {result.job_id}: {result.kind} of ") == 1


def test_resending_on_postgresql_and_redis_creates_no_duplicate_work(
    phantom: Path, scaled_out: ScaledOutNode, console: Console
) -> None:
    files = magnitude_files(phantom, MOLLI)
    send(scaled_out.node.dicom_port, files)
    wait_until(lambda: len(console.files()) >= 2, timeout_s=60, what="2 maps at the console")
    wait_until(lambda: scaled_out.counts()[3] == 2, timeout_s=10, what="2 transfers recorded")
    wait_until(lambda: _jobs_done(scaled_out, 1), timeout_s=60, what="the job done")
    before = scaled_out.counts()
    assert before == (len(files), 1, 1, 2)

    statuses = send(scaled_out.node.dicom_port, files)
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(files)
    # Longer than the quiet period (3 s), so that a completion by either rule would have queued work by now.
    time.sleep(4.0)
    assert scaled_out.counts() == before
    assert len(console.files()) == 2
    with Session(scaled_out.engine) as session:
        assert [job.state for job in session.scalars(select(Job))] == [JobState.DONE]
        assert {transfer.state for transfer in session.scalars(select(Transfer))} == {TransferState.SENT}


def _jobs_done(scaled_out: ScaledOutNode, count: int) -> bool:
    with Session(scaled_out.engine) as session:
        return list(session.scalars(select(Job.state))) == [JobState.DONE] * count


def _molli_copies(phantom: Path, folder: Path, copies: int) -> list[Path]:
    """``copies`` new series (new series and SOP Instance UIDs) of the phantom's MOLLI magnitude images.

    In sending order, image by image across the series, so that every series completes with the last few
    instances and all their jobs are queued at once.
    """
    originals = [pydicom.dcmread(path) for path in magnitude_files(phantom, MOLLI)]
    files: list[Path] = []
    for copy in range(copies):
        series_uid = generate_uid()
        for index, ds in enumerate(originals):
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = 100 + copy
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = folder / f"{copy:03d}" / f"{index:03d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return sorted(files, key=lambda path: (path.name, path.parent.name))


def test_jobs_survive_a_killed_worker(
    phantom: Path, scaled_out: ScaledOutNode, console: Console, tmp_path: Path
) -> None:
    files = _molli_copies(phantom, tmp_path / "send", KILL_TEST_SERIES)

    def running() -> int:
        with Session(scaled_out.engine) as session:
            return int(session.scalar(select(func.count()).where(Job.state == JobState.RUNNING)))

    statuses = send(scaled_out.node.dicom_port, files)
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(files)
    # More jobs running than `serve` has workers: the separate worker is running at least one of them.
    wait_until(lambda: running() > SERVE_WORKERS, timeout_s=60, interval_s=0.01, what="the worker running a job")
    scaled_out.worker.kill()
    # The killed worker's jobs stay RUNNING (their tasks left the queue with it) until someone re-queues them.
    assert running() > SERVE_WORKERS

    scaled_out.worker.start(workers=WORKER_WORKERS)

    def all_done() -> bool:
        with Session(scaled_out.engine) as session:
            states = list(session.scalars(select(Job.state)))
        return len(states) == KILL_TEST_SERIES and set(states) == {JobState.DONE}

    wait_until(all_done, timeout_s=60, interval_s=0.2, what=f"{KILL_TEST_SERIES} jobs done")
    with Session(scaled_out.engine) as session:
        per_job = session.execute(
            select(Job.id, func.count(Result.id)).outerjoin(Result, Result.job_id == Job.id).group_by(Job.id)
        ).all()
        assert sorted(count for _job, count in per_job) == [1] * KILL_TEST_SERIES
        assert session.scalar(select(func.count(func.distinct(Job.series_id)))) == KILL_TEST_SERIES
    # Deliveries the killed worker had taken are lost with it too, until the node re-queues them (one it sent
    # but could not record is sent again: the console keeps one copy per SOP Instance UID).
    def all_sent() -> bool:
        with Session(scaled_out.engine) as session:
            states = list(session.scalars(select(Transfer.state)))
        return len(states) == 2 * KILL_TEST_SERIES and set(states) == {TransferState.SENT}

    wait_until(all_sent, timeout_s=TRANSFER_RECOVERY_S + 15, interval_s=0.5, what="every map sent")
    received = {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in console.files()}
    with Session(scaled_out.engine) as session:
        assert received == set(session.scalars(select(Transfer.sop_instance_uid)))
