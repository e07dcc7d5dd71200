"""A full disk: a job whose writes meet ENOSPC fails with a clear state, leaves its series alone and is retried by
the queue later; one whose failure cannot even be recorded (the database's disk is full) is taken back too; the
node's own outputs keep the [storage] min_free_mb reserve."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from huey import MemoryHuey
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from db.models import Job, JobState, SeriesState, Transfer
from dicomnode.errors import StorageFullError
from dicomnode.jobs import map_job, storage_full
from dicomnode.jobs.claims import JobOutcome
from dicomnode.jobs.creation import requeue_unfinished
from dicomnode.jobs.map_job import run_job
from dicomnode.jobs.outputs import OutputWriter
from dicomnode.jobs.queue import NodeQueue
from dicomnode.jobs.storage_full import (
    FIRST_RETRY_DELAY_S,
    STORAGE_FULL,
    is_storage_full,
    requeue_after_storage_full,
    retry_delay_s,
    storage_retry_delay_s,
)
from dicomnode.jobs.tasks import register_tasks
from dicomnode.store import durable
from tests.unit.dicomnode.jobs import test_map_job as map_job_tests

node = map_job_tests.node

_real_write = durable.os.write


def _disk_full(descriptor: int, data: object) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def _state(factory, job_id: int) -> tuple[JobState, str, SeriesState, int]:
    with factory() as session:
        job = session.get(Job, job_id)
        return job.state, job.error, job.series.state, job.attempts


def _tiny_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID = "X"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_outputs_keep_the_reserve_and_write_nothing_beyond_it(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free / (1024 * 1024)
    tight = OutputWriter("k", tmp_path, "1.2.826.0.1.5", 3, reserve_mb=free_mb + 1)
    with pytest.raises(StorageFullError, match="below the reserve"):
        tight.write(_tiny_dataset())
    assert not list(tmp_path.rglob("*.dcm"))
    path = OutputWriter("k", tmp_path, "1.2.826.0.1.5", 3, reserve_mb=1).write(_tiny_dataset())
    assert path.exists()


def test_what_counts_as_a_full_disk() -> None:
    assert is_storage_full(StorageFullError("full"))
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    database_full = OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))
    assert is_storage_full(database_full)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as error:
            raise RuntimeError("writing the SR") from error
    except RuntimeError as wrapped:
        assert is_storage_full(wrapped)
    assert not is_storage_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_storage_full(OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")))
    assert [retry_delay_s(n) for n in (1, 2, 3, 10)] == [60.0, 120.0, 240.0, 900.0]


def test_a_map_job_that_meets_enospc_fails_clearly_and_runs_again_once_there_is_room(node, monkeypatch) -> None:
    settings, factory, job_id = node
    monkeypatch.setattr(durable.os, "write", _disk_full)
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.FAILED
    )
    state, error, series_state, attempts = _state(factory, job_id)
    assert state is JobState.FAILED and attempts == 1
    assert error.startswith(f"{STORAGE_FULL}; retried in 60 s: StorageFullError")
    assert series_state is SeriesState.COMPLETE  # the series is fine: not marked failed
    assert not [p for p in settings.storage_root.rglob("*") if durable.is_temporary(p.name)]
    assert storage_retry_delay_s(job_id, factory) == FIRST_RETRY_DELAY_S

    monkeypatch.setattr(durable.os, "write", _real_write)  # room again
    assert requeue_after_storage_full(job_id, factory)
    assert not requeue_after_storage_full(job_id, factory)  # queued already: nothing to do
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.DONE
    )
    state, _, series_state, attempts = _state(factory, job_id)
    assert state is JobState.DONE and series_state is SeriesState.DONE and attempts == 2


def test_the_queue_schedules_the_retry_and_the_retry_runs_the_job(node, monkeypatch) -> None:
    settings, factory, job_id = node
    settings = settings.model_copy(update={"peers": []})
    huey = MemoryHuey(immediate=True)
    tasks = register_tasks(NodeQueue(huey=huey), settings=settings, session_factory=factory)
    monkeypatch.setattr(durable.os, "write", _disk_full)
    tasks.enqueue_job(job_id)
    assert _state(factory, job_id)[0] is JobState.FAILED
    (scheduled,) = huey.scheduled()
    assert scheduled.name.endswith("retry_job") and scheduled.args == (job_id, False)
    waits_s = (scheduled.eta - huey._get_timestamp()).total_seconds()
    assert FIRST_RETRY_DELAY_S - 5 <= waits_s <= FIRST_RETRY_DELAY_S

    monkeypatch.setattr(durable.os, "write", _real_write)
    tasks.retry_job.call_local(job_id, False)  # what the queue runs when the delay is over
    assert _state(factory, job_id)[0] is JobState.DONE


def test_a_job_whose_failure_cannot_be_recorded_is_taken_back_later(node, monkeypatch) -> None:
    settings, factory, job_id = node
    huey = MemoryHuey(immediate=True)
    tasks = register_tasks(NodeQueue(huey=huey), settings=settings.model_copy(update={"peers": []}),
                           session_factory=factory)

    def database_full(*args: object, **kwargs: object) -> None:
        raise OperationalError("UPDATE job", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(durable.os, "write", _disk_full)
    monkeypatch.setattr(storage_full, "mark_failed", database_full)
    tasks.enqueue_job(job_id)  # must not raise out of the worker
    assert _state(factory, job_id)[0] is JobState.RUNNING
    (scheduled,) = huey.scheduled()
    assert scheduled.args == (job_id, True)

    monkeypatch.setattr(durable.os, "write", _real_write)
    tasks.retry_job.call_local(job_id, True)
    assert _state(factory, job_id)[0] is JobState.DONE


def test_a_job_failed_for_another_reason_is_not_retried(node) -> None:
    settings, factory, job_id = node
    for path in settings.storage_root.rglob("*.dcm"):
        path.write_bytes(b"truncated")
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.FAILED
    )
    assert storage_retry_delay_s(job_id, factory) is None
    assert not requeue_after_storage_full(job_id, factory)


def _mount_full_tmpfs(folder: Path) -> bool:
    """An 8 MB tmpfs at ``folder`` filled to the last byte; False where this process may not mount."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        return False
    descriptor = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    return True


def test_a_real_full_volume_fails_the_job_and_the_retry_succeeds_once_there_is_room(node) -> None:
    settings, factory, job_id = node
    outputs = settings.storage_root / "outputs"
    try:
        if not _mount_full_tmpfs(outputs):
            pytest.skip("mounting a tmpfs needs root")
        huey = MemoryHuey(immediate=True)
        tasks = register_tasks(NodeQueue(huey=huey), settings=settings.model_copy(update={"peers": []}),
                               session_factory=factory)
        tasks.enqueue_job(job_id)
        state, error, series_state, _ = _state(factory, job_id)
        assert state is JobState.FAILED and error.startswith(f"{STORAGE_FULL}; retried in 60 s"), error
        assert "No space left on device" in error and series_state is SeriesState.COMPLETE
        (scheduled,) = huey.scheduled()
        assert scheduled.args == (job_id, False)
        (outputs / "filler").unlink()
        tasks.retry_job.call_local(job_id, False)
        assert _state(factory, job_id)[0] is JobState.DONE, _state(factory, job_id)
    finally:
        subprocess.run(["umount", "-l", str(outputs)], check=False, capture_output=True)


def test_a_restart_queues_the_jobs_that_failed_for_a_full_disk_and_only_those(node, monkeypatch) -> None:
    settings, factory, job_id = node
    monkeypatch.setattr(durable.os, "write", _disk_full)
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _id: None) is (
        JobOutcome.FAILED
    )
    with factory() as session:  # a second job that failed for another reason stays failed
        job = session.get(Job, job_id)
        other = Job(key=f"{job.key}-other", kind="t1_map", series_id=job.series_id, series_revision=0,
                    state=JobState.FAILED, error="SeriesLoadError: no images")
        session.add(other)
        session.commit()
        other_id = other.id
    queued: list[int] = []
    sink = SimpleNamespace(enqueue_job=queued.append, enqueue_delivery=lambda *_a, **_k: None)
    requeue_unfinished(session_factory=factory, sink=sink)
    assert queued == [job_id]
    assert _state(factory, other_id)[0] is JobState.FAILED


def test_a_disk_that_fills_after_the_maps_were_sent_retries_the_whole_job_into_one_result(node, monkeypatch) -> None:
    settings, factory, job_id = node
    real_write_reports = map_job.write_reports

    def full_at_the_reports(*args: object, **kwargs: object) -> object:
        raise StorageFullError("storage full while writing the SR: No space left on device")

    monkeypatch.setattr(map_job, "write_reports", full_at_the_reports)
    deliveries: list[int] = []
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=deliveries.append) is (
        JobOutcome.FAILED
    )
    assert deliveries  # the maps and the console's image went out at the first commit
    state, error, series_state, _ = _state(factory, job_id)
    assert state is JobState.FAILED and error.startswith(STORAGE_FULL) and series_state is SeriesState.COMPLETE

    monkeypatch.setattr(map_job, "write_reports", real_write_reports)
    assert requeue_after_storage_full(job_id, factory)
    assert run_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=deliveries.append) is (
        JobOutcome.DONE
    )
    with factory() as session:
        (result,) = session.get(Job, job_id).results
        assert result.summary.get("reports_error") in (None, "")
        assert len({t.sop_instance_uid for t in session.scalars(select(Transfer))}) == \
            session.scalar(select(func.count()).select_from(Transfer))  # no output planned twice
