"""Series assembly: complete at once by protocol, after the quiet period otherwise, once per revision, each series by
its own evidence only; mapping series are handed on once their study has settled."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, load_settings
from db.migrate import upgrade
from db.models import Series, SeriesState
from db.session import make_engine, make_session_factory, session_scope
from dicomnode.store.assembly import Assembler
from dicomnode.store.storage import StoredInstance, store_instance
from tests.dicom_builders import molli_series, mr_image

QUIET_SECONDS = 0.3


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        storage={"path": tmp_path / "storage", "min_free_mb": 0},
        series={"quiet_seconds": QUIET_SECONDS, "pairing_seconds": 0.0},
    )


@pytest.fixture
def session_factory(settings: Settings) -> sessionmaker[Session]:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, series_id: int, revision: int) -> None:
        with self.lock:
            self.calls.append((series_id, revision))


def _store(ds, settings: Settings, session_factory: sessionmaker[Session]) -> StoredInstance:  # noqa: ANN001
    return store_instance(
        ds, calling_ae="SCANNER", calling_host="h", settings=settings, session_factory=session_factory
    )


def _state(session_factory: sessionmaker[Session], series_id: int) -> tuple[SeriesState, int]:
    with session_scope(session_factory) as session:
        series = session.get_one(Series, series_id)
        return series.state, series.revision


def test_complete_at_once_when_expected_count_reached(settings: Settings, session_factory) -> None:  # noqa: ANN001
    recorder = Recorder()
    assembler = Assembler(session_factory, settings, recorder)
    datasets = molli_series()
    stored = []
    for ds in datasets[:-1]:
        stored.append(_store(ds, settings, session_factory))
        assembler.note_instance(stored[-1])
        assert recorder.calls == []

    stored.append(_store(datasets[-1], settings, session_factory))
    assembler.note_instance(stored[-1])
    assert _state(session_factory, stored[-1].series_id) == (SeriesState.COMPLETE, 0)
    assert recorder.calls == []  # a mapping series waits for its study to settle
    assembler.check_now()

    assert recorder.calls == [(stored[-1].series_id, 0)]
    assembler.note_instance(stored[-1])  # a repeated note or check does not hand the series on twice
    assembler.check_now()
    assert len(recorder.calls) == 1


def test_complete_after_quiet_period_without_count(settings: Settings, session_factory) -> None:  # noqa: ANN001
    recorder = Recorder()
    assembler = Assembler(session_factory, settings, recorder)
    assembler.start()
    try:
        stored = [_store(ds, settings, session_factory) for ds in molli_series(images_in_acquisition=False)]
        for item in stored:
            assembler.note_instance(item)
        started = time.monotonic()
        assert recorder.calls == []
        while not recorder.calls and time.monotonic() - started < 5:
            time.sleep(0.02)
        waited_s = time.monotonic() - started
    finally:
        assembler.stop()
    assert recorder.calls == [(stored[0].series_id, 0)]
    assert QUIET_SECONDS * 0.5 < waited_s < QUIET_SECONDS + 1.0


def test_reopened_series_completes_again_as_new_revision(settings: Settings, session_factory) -> None:  # noqa: ANN001
    recorder = Recorder()
    assembler = Assembler(session_factory, settings, recorder)
    datasets = molli_series(inversion_times_ms=(100.0, 180.0))
    for ds in datasets:
        assembler.note_instance(_store(ds, settings, session_factory))
    assembler.check_now()
    changed = datasets[0].copy()
    changed.file_meta = datasets[0].file_meta
    changed.ImageComments = "corrected"

    again = _store(changed, settings, session_factory)
    assembler.note_instance(again)
    assembler.check_now()

    assert recorder.calls == [(again.series_id, 0), (again.series_id, 1)]
    identical = _store(changed, settings, session_factory)
    assembler.note_instance(identical)
    assembler.check_now()
    assert len(recorder.calls) == 2 and _state(session_factory, again.series_id) == (SeriesState.COMPLETE, 1)


def test_a_map_arriving_never_completes_another_series(settings: Settings, session_factory) -> None:  # noqa: ANN001
    """Sent slice by slice, a map follows its raw images; the raw series is complete only by its own evidence, and
    neither is handed on while the study still receives mapping images."""
    recorder = Recorder()
    assembler = Assembler(session_factory, settings, recorder)
    raw = [_store(ds, settings, session_factory) for ds in molli_series(images_in_acquisition=False)]
    for item in raw:
        assembler.note_instance(item)
    t1_map = mr_image(
        study_uid=molli_series_study(session_factory, raw[0].series_id),
        description="MOLLI_SAX_T1MAP",
        image_type=("DERIVED", "PRIMARY", "T1 MAP", "ND"),
        images_in_acquisition=1,
    )
    stored_map = _store(t1_map, settings, session_factory)
    assembler.note_instance(stored_map)
    assembler.check_now()

    assert _state(session_factory, raw[0].series_id) == (SeriesState.RECEIVING, 0)
    assert _state(session_factory, stored_map.series_id) == (SeriesState.COMPLETE, 0)
    assert recorder.calls == []  # the study still receives: the map waits for its raw series

    time.sleep(QUIET_SECONDS + 0.05)
    assembler.check_now()
    assert sorted(recorder.calls) == sorted([(raw[0].series_id, 0), (stored_map.series_id, 0)])


def test_mapping_series_wait_until_the_study_has_settled(tmp_path: Path) -> None:
    settings = load_settings(storage={"path": tmp_path / "storage", "min_free_mb": 0},
                             series={"quiet_seconds": 5.0, "pairing_seconds": 0.3})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    recorder = Recorder()
    assembler = Assembler(factory, settings, recorder)
    stored = [_store(ds, settings, factory) for ds in molli_series()]
    for item in stored:
        assembler.note_instance(item)
    assembler.check_now()
    assert recorder.calls == []
    time.sleep(0.35)
    assembler.check_now()
    assert recorder.calls == [(stored[0].series_id, 0)]
    engine.dispose()


def molli_series_study(session_factory: sessionmaker[Session], series_id: int) -> str:
    with session_scope(session_factory) as session:
        return session.get_one(Series, series_id).study.study_instance_uid


def test_start_hands_on_series_left_complete_and_completes_due_ones(
    settings: Settings,
    session_factory,  # noqa: ANN001
) -> None:
    first = Recorder()
    before_crash = Assembler(session_factory, settings, first)
    complete = [_store(ds, settings, session_factory) for ds in molli_series(inversion_times_ms=(100.0,))]
    before_crash.note_instance(complete[0])
    receiving = _store(mr_image(images_in_acquisition=2), settings, session_factory)  # never noted: "crash"
    assert first.calls == []  # the node stopped before the study settled: the complete series was not handed on

    after_restart = Recorder()
    assembler = Assembler(session_factory, settings, after_restart)
    assembler.start()
    try:
        deadline = time.monotonic() + 5
        while len(after_restart.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        assembler.stop()

    assert after_restart.calls == [(complete[0].series_id, 0), (receiving.series_id, 0)]


def test_a_completed_mapping_series_is_handed_on_when_its_study_settles_not_at_the_next_poll(
    settings: Settings, session_factory, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """The radiographer waits for the map: the assembler checks the study again right after its pairing wait."""
    monkeypatch.setattr("dicomnode.store.assembly.POLL_INTERVAL_S", 30.0)  # a poll alone would come far too late
    pairing_s = 0.3
    settings = settings.model_copy(update={"series": settings.series.model_copy(update={"pairing_seconds": pairing_s})})
    recorder = Recorder()
    assembler = Assembler(session_factory, settings, recorder)
    assembler.start()
    try:
        time.sleep(0.1)  # the first check ran; the next poll is 30 s away
        stored = [_store(ds, settings, session_factory) for ds in molli_series()]
        completed_at = time.monotonic()
        assembler.note_instance(stored[-1])
        deadline = completed_at + 5
        while not recorder.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        handed_on_after_s = time.monotonic() - completed_at
    finally:
        assembler.stop()
    assert recorder.calls == [(stored[-1].series_id, 0)]
    assert pairing_s <= handed_on_after_s < pairing_s + 0.5


def test_each_new_image_of_a_mapping_series_announces_console_work(settings: Settings, session_factory) -> None:  # noqa: ANN001
    announced: list[int] = []
    assembler = Assembler(session_factory, settings, Recorder(), on_mapping_image=lambda: announced.append(1))
    datasets = molli_series()
    for ds in datasets:
        assembler.note_instance(_store(ds, settings, session_factory))
    assert len(announced) == len(datasets)
    assembler.note_instance(_store(datasets[0], settings, session_factory))  # an identical re-send: nothing new
    assert len(announced) == len(datasets)


def test_a_failing_check_is_logged_once_then_rarely_and_polled_less_often(
    settings: Settings, session_factory, monkeypatch, caplog  # noqa: ANN001
) -> None:
    calls: list[float] = []
    failing = threading.Event()
    failing.set()

    def check_now(self: Assembler) -> None:
        calls.append(time.monotonic())
        if failing.is_set():
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(Assembler, "check_now", check_now)
    assembler = Assembler(session_factory, settings, on_complete=lambda *_: None)
    caplog.set_level("INFO", logger="dicomnode.store.assembly")
    assembler.start()
    try:
        time.sleep(3.0)
        failed_calls = len(calls)
        failing.clear()
        assert wait_for(lambda: any("recovered" in r.getMessage() for r in caplog.records), 10.0)
    finally:
        assembler.stop()
    failures = [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
    # Five checks a second would be 15 in 3 s, each logged with its traceback; backing off, a few checks and
    # one message with the traceback.
    assert 2 <= failed_calls <= 8, failed_calls
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert "No space left on device" in failures[0].getMessage() or failures[0].exc_info[1].errno == 28


def wait_for(condition, timeout_s: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_storing_reports_the_series_as_its_arrival_left_it(settings: Settings, session_factory) -> None:  # noqa: ANN001
    datasets = molli_series()
    stored = [_store(ds, settings, session_factory) for ds in datasets]
    counts = [s.arrival.n_instances for s in stored if s.arrival is not None]
    assert counts == list(range(1, len(datasets) + 1))
    last = stored[-1].arrival
    assert last is not None and last.revision == 0 and last.expected_instances == len(datasets)
    # An identical re-send changes nothing and reports nothing.
    assert _store(datasets[0], settings, session_factory).arrival is None
    # The note of the last arrival completes the series without reading it (the database already says RECEIVING
    # at that revision, so the conditional completion wins once).
    recorder = Recorder()
    Assembler(session_factory, settings, recorder).note_instance(stored[-1])
    assert _state(session_factory, stored[-1].series_id) == (SeriesState.COMPLETE, 0)
