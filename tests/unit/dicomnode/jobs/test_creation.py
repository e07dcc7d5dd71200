"""Queueing work for complete series: one job per (series, revision, kind), and recovery after a restart."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from db.models import (
    Job,
    JobState,
    Result,
    Series,
    SeriesRole,
    SeriesState,
    Study,
    Transfer,
    TransferState,
)
from db.session import make_engine, make_session_factory
from dicomnode.jobs.claims import lock_study
from dicomnode.jobs.creation import (
    JobKind,
    enqueue_series,
    job_key,
    reference_digest_of,
    requeue_orphaned,
    requeue_overdue_transfers,
    requeue_unfinished,
    wake_waiting_jobs,
)


class RecordingSink:
    """Collects what would go on the queue."""

    def __init__(self) -> None:
        self.jobs: list[int] = []
        self.deliveries: list[tuple[int, float]] = []

    def enqueue_job(self, job_id: int) -> None:
        self.jobs.append(job_id)

    def enqueue_delivery(self, transfer_id: int, *, delay_s: float = 0.0) -> None:
        self.deliveries.append((transfer_id, delay_s))


@pytest.fixture
def session_factory(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _series(factory: sessionmaker[Session], role: SeriesRole, *, uid: str = "1.2.3.4", revision: int = 0) -> int:
    with factory() as session:
        study = Study(study_instance_uid=f"{uid}.0")
        series = Series(
            study=study, series_instance_uid=uid, role=role, state=SeriesState.COMPLETE, revision=revision
        )
        session.add_all([study, series])
        session.commit()
        return series.id


def test_job_key_names_series_revision_and_kind() -> None:
    assert job_key("1.2.3", 2, JobKind.T1_MAP) == "1.2.3/2/t1_map"
    assert job_key("1.2.3", 0, "t2_map") == "1.2.3/0/t2_map"


def test_a_rescoring_job_key_ends_with_its_reference() -> None:
    first = job_key("1.2.3", 1, JobKind.READER_SCORE)
    assert job_key("1.2.3", 1, JobKind.READER_SCORE, reference_digest="0123abcd") == f"{first}/0123abcd"
    assert job_key("1.2.3", 1, JobKind.READER_SCORE, reference_digest="ffff") != \
        job_key("1.2.3", 1, JobKind.READER_SCORE, reference_digest="0123abcd")


@pytest.mark.parametrize(("role", "kind"), [(SeriesRole.RAW_IR, "t1_map"), (SeriesRole.T2_PREP, "t2_map")])
def test_complete_raw_series_gets_one_map_job(session_factory: sessionmaker[Session], role: SeriesRole,
                                              kind: str) -> None:
    series_id = _series(session_factory, role)
    sink = RecordingSink()
    created = enqueue_series(series_id, 0, session_factory=session_factory, sink=sink)
    assert len(created) == 1
    assert sink.jobs == created
    with session_factory() as session:
        job = session.get(Job, created[0])
        assert (job.kind, job.state, job.series_revision) == (kind, JobState.QUEUED, 0)


def test_handling_the_same_revision_twice_creates_no_duplicate_work(session_factory: sessionmaker[Session]) -> None:
    series_id = _series(session_factory, SeriesRole.RAW_IR)
    sink = RecordingSink()
    first = enqueue_series(series_id, 0, session_factory=session_factory, sink=sink)
    second = enqueue_series(series_id, 0, session_factory=session_factory, sink=sink)
    assert second == []
    assert sink.jobs == first
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_a_new_revision_gets_its_own_job(session_factory: sessionmaker[Session]) -> None:
    series_id = _series(session_factory, SeriesRole.RAW_IR)
    sink = RecordingSink()
    enqueue_series(series_id, 0, session_factory=session_factory, sink=sink)
    enqueue_series(series_id, 1, session_factory=session_factory, sink=sink)
    assert len(sink.jobs) == 2
    with session_factory() as session:
        keys = set(session.scalars(select(Job.key)))
    assert keys == {"1.2.3.4/0/t1_map", "1.2.3.4/1/t1_map"}


@pytest.mark.parametrize("role", [SeriesRole.FIT_QUALITY, SeriesRole.OTHER, SeriesRole.RAW_IR_PHASE, SeriesRole.MOCO])
def test_series_without_analysis_get_no_job(session_factory: sessionmaker[Session], role: SeriesRole) -> None:
    series_id = _series(session_factory, role)
    sink = RecordingSink()
    assert enqueue_series(series_id, 0, session_factory=session_factory, sink=sink) == []
    assert sink.jobs == []
    with session_factory() as session:
        assert session.get(Series, series_id).state is SeriesState.STORED


def test_unknown_series_queues_nothing(session_factory: sessionmaker[Session]) -> None:
    sink = RecordingSink()
    assert enqueue_series(999, 0, session_factory=session_factory, sink=sink) == []
    assert sink.jobs == []


def test_restart_requeues_running_and_queued_jobs_and_pending_transfers(
    session_factory: sessionmaker[Session],
) -> None:
    ids = [_series(session_factory, SeriesRole.RAW_IR, uid=f"1.2.{n}") for n in range(4)]
    with session_factory() as session:
        jobs = [
            Job(key=f"k{n}", kind="t1_map", series_id=series_id, state=state)
            for n, (series_id, state) in enumerate(
                zip(ids, [JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.FAILED], strict=True)
            )
        ]
        session.add_all(jobs)
        session.flush()
        result = Result(job_id=jobs[2].id, kind="t1_map")
        session.add(result)
        session.flush()
        transfers = [
            Transfer(result_id=result.id, path=f"p{n}", sop_instance_uid="1.9", ae_title=f"AE{n}", host="h",
                     port=104, state=state)
            for n, state in enumerate([TransferState.PENDING, TransferState.SENT, TransferState.GIVEN_UP])
        ]
        session.add_all(transfers)
        session.commit()
        expected_jobs = [jobs[0].id, jobs[1].id]
        expected_transfers = [(transfers[0].id, 0.0)]
    sink = RecordingSink()
    recovery = requeue_unfinished(session_factory=session_factory, sink=sink)
    assert (recovery.jobs, recovery.transfers) == (2, 1)
    assert sorted(sink.jobs) == sorted(expected_jobs)
    assert sink.deliveries == expected_transfers
    with session_factory() as session:
        states = dict(session.execute(select(Job.key, Job.state)).all())
    assert states == {"k0": JobState.QUEUED, "k1": JobState.QUEUED, "k2": JobState.DONE, "k3": JobState.FAILED}


def _contour_jobs(factory: sessionmaker[Session], study_uid: str, states: list[JobState]) -> tuple[int, list[int]]:
    """A study with one SEG series per state, each with a reader-score job in that state; the study's and jobs'
    ids."""
    with factory() as session:
        study = Study(study_instance_uid=study_uid)
        jobs = [
            Job(key=f"{study_uid}.{n}/0/reader_score", kind=JobKind.READER_SCORE.value, state=state,
                error="waiting for the map" if state is JobState.WAITING else "",
                series=Series(study=study, series_instance_uid=f"{study_uid}.{n}", role=SeriesRole.SEG,
                              state=SeriesState.COMPLETE))
            for n, state in enumerate(states)
        ]
        session.add_all([study, *jobs])
        session.commit()
        return study.id, [job.id for job in jobs]


def test_restart_requeues_waiting_jobs(session_factory: sessionmaker[Session]) -> None:
    _, (waiting, done) = _contour_jobs(session_factory, "1.6", [JobState.WAITING, JobState.DONE])
    sink = RecordingSink()
    assert requeue_unfinished(session_factory=session_factory, sink=sink).jobs == 1
    assert sink.jobs == [waiting]
    with session_factory() as session:
        assert session.get(Job, waiting).state is JobState.QUEUED
        assert session.get(Job, done).state is JobState.DONE


@pytest.mark.parametrize("role", [SeriesRole.T1_MAP, SeriesRole.T2_MAP])
def test_a_complete_map_series_wakes_the_waiting_jobs_of_its_study_only(session_factory: sessionmaker[Session],
                                                                       role: SeriesRole) -> None:
    study_id, (waiting, running, failed) = _contour_jobs(
        session_factory, "1.7", [JobState.WAITING, JobState.RUNNING, JobState.FAILED]
    )
    _, (elsewhere,) = _contour_jobs(session_factory, "1.8", [JobState.WAITING])
    with session_factory() as session:
        map_series = Series(study_id=study_id, series_instance_uid="1.7.9", role=role, state=SeriesState.COMPLETE)
        session.add(map_series)
        session.commit()
        map_series_id = map_series.id
    sink = RecordingSink()
    # The map is analysed by a job of its own, and readers' contours waiting for it are queued again.
    (analysis,) = enqueue_series(map_series_id, 0, session_factory=session_factory, sink=sink)
    assert sink.jobs == [analysis, waiting]
    with session_factory() as session:
        states = {job_id: (session.get(Job, job_id).state, session.get(Job, job_id).error)
                  for job_id in (waiting, running, failed, elsewhere)}
        assert session.get(Job, analysis).kind == ("t1_map" if role is SeriesRole.T1_MAP else "t2_map")
    assert states == {waiting: (JobState.QUEUED, ""), running: (JobState.RUNNING, ""), failed: (JobState.FAILED, ""),
                      elsewhere: (JobState.WAITING, "waiting for the map")}
    # Nothing waits any more: a second wake-up queues nothing.
    assert wake_waiting_jobs(session_factory=session_factory, sink=sink, study_id=study_id) == []
    assert sink.jobs == [analysis, waiting]


def test_a_contour_series_completing_wakes_nothing(session_factory: sessionmaker[Session]) -> None:
    study_id, (waiting,) = _contour_jobs(session_factory, "1.9", [JobState.WAITING])
    with session_factory() as session:
        seg = Series(study_id=study_id, series_instance_uid="1.9.9", role=SeriesRole.SEG, state=SeriesState.COMPLETE)
        session.add(seg)
        session.commit()
        seg_id = seg.id
    sink = RecordingSink()
    (created,) = enqueue_series(seg_id, 0, session_factory=session_factory, sink=sink)
    assert sink.jobs == [created]
    with session_factory() as session:
        assert session.get(Job, waiting).state is JobState.WAITING


def test_wake_up_waits_for_a_job_being_marked_waiting_under_the_study_lock(
    session_factory: sessionmaker[Session],
) -> None:
    study_id, (job_id,) = _contour_jobs(session_factory, "1.10", [JobState.RUNNING])
    sink = RecordingSink()
    woken: list[int] = []
    wake = threading.Thread(
        target=lambda: woken.extend(wake_waiting_jobs(session_factory=session_factory, sink=sink, study_id=study_id))
    )
    with session_factory() as marking:
        # As mark_waiting does: the study's lock first, then the job (no map found) marked WAITING.
        lock_study(marking, study_id)
        wake.start()
        wake.join(timeout=0.5)
        assert wake.is_alive()  # the wake-up waits for the study's lock
        marking.get(Job, job_id).state = JobState.WAITING
        marking.commit()
    wake.join(timeout=20)
    assert not wake.is_alive()
    # The wake-up ran after the job was marked WAITING, so it found the job: the map is not waited for in vain.
    assert woken == sink.jobs == [job_id]
    with session_factory() as session:
        assert session.get(Job, job_id).state is JobState.QUEUED


def test_orphan_sweep_requeues_queued_jobs_missing_from_the_queue_only(
    session_factory: sessionmaker[Session],
) -> None:
    ids = [_series(session_factory, SeriesRole.RAW_IR, uid=f"1.3.{n}") for n in range(3)]
    with session_factory() as session:
        jobs = [
            Job(key=f"o{n}", kind="t1_map", series_id=series_id, state=state)
            for n, (series_id, state) in enumerate(
                zip(ids, [JobState.QUEUED, JobState.QUEUED, JobState.RUNNING], strict=True)
            )
        ]
        session.add_all(jobs)
        session.commit()
        waiting, lost, running = (job.id for job in jobs)
    sink = RecordingSink()
    # The first job's task waits on the queue; the second's was taken by a worker that died before it started.
    assert requeue_orphaned(session_factory=session_factory, sink=sink, queued_job_ids={waiting}) == [lost]
    assert sink.jobs == [lost]
    # On SQLite nothing tells whether a running job's worker lives: it is left to the restart of the node.
    with session_factory() as session:
        assert session.get(Job, running).state is JobState.RUNNING


def test_overdue_sweep_requeues_only_long_overdue_pending_transfers(session_factory: sessionmaker[Session]) -> None:
    series_id = _series(session_factory, SeriesRole.RAW_IR, uid="1.4.1")
    now = datetime.now(UTC)
    with session_factory() as session:
        job = Job(key="t0", kind="t1_map", series_id=series_id, state=JobState.DONE)
        session.add(job)
        session.flush()
        result = Result(job_id=job.id, kind="t1_map")
        session.add(result)
        session.flush()
        transfers = [
            Transfer(result_id=result.id, path=f"q{n}", sop_instance_uid="1.9", ae_title="AE", host="h", port=104,
                     state=state, next_attempt_at=now - timedelta(seconds=age_s))
            for n, (state, age_s) in enumerate(
                [(TransferState.PENDING, 600.0), (TransferState.PENDING, 5.0), (TransferState.GIVEN_UP, 600.0)]
            )
        ]
        session.add_all(transfers)
        session.commit()
        overdue = transfers[0].id
    sink = RecordingSink()
    assert requeue_overdue_transfers(session_factory=session_factory, sink=sink, overdue_s=60.0) == [overdue]
    assert [transfer_id for transfer_id, _ in sink.deliveries] == [overdue]


def test_reference_digest_is_read_back_from_a_rescoring_key_only() -> None:
    assert reference_digest_of(job_key("1.2.3", 0, JobKind.READER_SCORE, reference_digest="0123abcd")) == "0123abcd"
    assert reference_digest_of(job_key("1.2.3", 0, JobKind.READER_SCORE)) is None
