"""A reader-score job that meets a full disk fails saying so, keeps its series, and scores once there is room."""

from __future__ import annotations

import errno

from db.models import JobState, SeriesState
from dicomnode.jobs.map_job import JobOutcome
from dicomnode.jobs.storage_full import STORAGE_FULL, requeue_after_storage_full, storage_retry_delay_s
from dicomnode.store import durable
from tests.unit.dicomnode.jobs import test_reader_job as reader_job_tests
from tests.unit.dicomnode.jobs.test_reader_job import Node, PhantomStudy, _all_contours

phantom = reader_job_tests.phantom
node = reader_job_tests.node


def test_a_reader_job_on_a_full_disk_is_retried_and_then_scored(phantom: PhantomStudy, node: Node,
                                                                monkeypatch) -> None:  # noqa: ANN001
    node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",))])
    job_id = node.job_for(phantom.contour_series_uid("trainee2", "seg"))
    real_write = durable.os.write

    def disk_full(descriptor: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable.os, "write", disk_full)
    assert node.run(job_id) is JobOutcome.FAILED
    state, error, series_state = node.job(job_id)
    assert state is JobState.FAILED and error.startswith(f"{STORAGE_FULL}; retried in 60 s")
    assert series_state is not SeriesState.FAILED
    assert storage_retry_delay_s(job_id, node.factory) == 60.0

    monkeypatch.setattr(durable.os, "write", real_write)
    assert requeue_after_storage_full(job_id, node.factory)
    assert node.run(job_id) is JobOutcome.DONE
    assert node.result(job_id).summary["slices"][0]["status"] == "scored"
