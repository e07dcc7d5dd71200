"""Queue priorities on real Huey storages (the embedded SQLite file and a Redis server): console work first, and a
backlog of background work never holds the worker kept for the console."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huey import RedisHuey
from huey.api import TaskWrapper
from huey.consumer import Consumer

from config import load_settings
from dicomnode.jobs.queue import NodeQueue, Priority, make_consumer, make_queue, yield_to_console
from tests.integration.conftest import RedisServer, wait_until

pytestmark = pytest.mark.integration

BACKGROUND_WORKERS = 2


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.create_database()


@pytest.fixture
def node_queue(queue_url: str, tmp_path: Path) -> Iterator[NodeQueue]:
    queue = make_queue(load_settings(storage={"path": tmp_path}, queue={"url": queue_url}))
    yield queue
    queue.huey.storage.close()


class Recorder:
    """Tasks that record when they start and end; ``blocking`` ones wait for :attr:`release`."""

    def __init__(self, queue: NodeQueue) -> None:
        self.queue = queue
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.running_background = 0
        self.most_background_at_once = 0
        self.release = threading.Event()

        @queue.huey.task(name="test.work")
        def work(label: str, background: bool, blocking: bool) -> None:
            with self.lock:
                self.started.append(label)
                if background:
                    self.running_background += 1
                    self.most_background_at_once = max(self.most_background_at_once, self.running_background)
            if blocking:
                self.release.wait(30)
            with self.lock:
                self.finished.append(label)
                if background:
                    self.running_background -= 1

        self.work: TaskWrapper = work

    def enqueue(self, label: str, priority: Priority, *, blocking: bool = False) -> None:
        background = priority < Priority.CONSOLE
        self.queue.huey.enqueue(self.work.s(label, background, blocking, priority=int(priority)))
        self.queue.notify()


def _dequeued_labels(queue: NodeQueue) -> list[str]:
    labels = []
    while (task := queue.huey.dequeue()) is not None:
        labels.append(task.args[0])
    return labels


def test_the_storage_hands_out_the_highest_priority_first_then_oldest_first(node_queue: NodeQueue) -> None:
    recorder = Recorder(node_queue)
    for index in range(20):
        recorder.enqueue(f"reader{index}", Priority.READER)
    recorder.enqueue("rescore", Priority.RESCORE)
    recorder.enqueue("pacs", Priority.ARCHIVE_TRANSFER)
    recorder.enqueue("map", Priority.CONSOLE)
    recorder.enqueue("console-transfer", Priority.CONSOLE_TRANSFER)
    assert _dequeued_labels(node_queue) == [
        "console-transfer", "map", "pacs", *(f"reader{index}" for index in range(20)), "rescore",
    ]


def test_console_only_dequeue_leaves_background_work_queued(node_queue: NodeQueue) -> None:
    recorder = Recorder(node_queue)
    recorder.enqueue("reader", Priority.READER)
    assert node_queue.dequeue(background=False) is None
    recorder.enqueue("map", Priority.CONSOLE)
    task = node_queue.dequeue(background=False)
    assert task is not None and task.args[0] == "map"
    assert _dequeued_labels(node_queue) == ["reader"]


def _start(queue: NodeQueue) -> Consumer:
    consumer = make_consumer(queue, BACKGROUND_WORKERS, handle_signals=False)
    consumer.start()
    return consumer


def test_a_backlog_of_readers_never_holds_the_console_worker(node_queue: NodeQueue) -> None:
    recorder = Recorder(node_queue)
    consumer = _start(node_queue)
    try:
        for index in range(30):
            recorder.enqueue(f"reader{index}", Priority.READER, blocking=True)
        # Every background slot is taken by a reader that does not end until released.
        assert wait_until(lambda: recorder.running_background == BACKGROUND_WORKERS, timeout_s=10)
        queued_at = time.monotonic()
        recorder.enqueue("map", Priority.CONSOLE)
        assert wait_until(lambda: "map" in recorder.finished, timeout_s=10), "the console task waited for readers"
        waited_s = time.monotonic() - queued_at
        assert waited_s < 2.0
        with recorder.lock:
            assert recorder.running_background == BACKGROUND_WORKERS
            assert len(recorder.started) == BACKGROUND_WORKERS + 1
        recorder.release.set()
        assert wait_until(lambda: len(recorder.finished) == 31, timeout_s=30)
    finally:
        recorder.release.set()
        consumer.stop(graceful=True)
    assert recorder.most_background_at_once == BACKGROUND_WORKERS


def test_no_background_task_starts_while_console_work_runs(node_queue: NodeQueue) -> None:
    recorder = Recorder(node_queue)
    consumer = _start(node_queue)
    try:
        recorder.enqueue("map", Priority.CONSOLE, blocking=True)
        assert wait_until(lambda: "map" in recorder.started, timeout_s=10)
        for index in range(3):
            recorder.enqueue(f"reader{index}", Priority.READER)
        recorder.enqueue("console-transfer", Priority.CONSOLE_TRANSFER)
        # Console work still runs on an idle worker; background work waits for the console's work to end.
        assert wait_until(lambda: "console-transfer" in recorder.finished, timeout_s=10)
        time.sleep(0.5)
        assert recorder.started == ["map", "console-transfer"]
        recorder.release.set()
        assert wait_until(lambda: len(recorder.finished) == 5, timeout_s=10)
    finally:
        recorder.release.set()
        consumer.stop(graceful=True)
    assert sorted(recorder.started[2:]) == ["reader0", "reader1", "reader2"]


def test_a_plain_redis_queue_left_by_an_earlier_node_is_taken_over(redis_server: RedisServer, tmp_path: Path) -> None:
    url = redis_server.create_database()
    plain = RedisHuey("myomap", url=url, results=False)

    @plain.task(name="test.work")
    def work(label: str, background: bool, blocking: bool) -> None:
        del label, background, blocking

    work("first", True, False)
    work("second", True, False)
    queue = make_queue(load_settings(storage={"path": tmp_path}, queue={"url": url}))
    recorder = Recorder(queue)
    try:
        assert queue.huey.pending_count() == 2
        recorder.enqueue("map", Priority.CONSOLE)
        assert _dequeued_labels(queue) == ["map", "first", "second"]
    finally:
        queue.huey.storage.close()
        plain.storage.close()


def test_a_background_task_pauses_at_its_yield_points_while_console_work_runs(node_queue: NodeQueue) -> None:
    go_on = threading.Event()
    console_release = threading.Event()
    events: list[str] = []

    @node_queue.huey.task(name="test.staged")
    def staged() -> None:
        events.append("first stage")
        go_on.wait(30)
        yield_to_console()
        events.append("second stage")

    @node_queue.huey.task(name="test.console")
    def console() -> None:
        events.append("console started")
        console_release.wait(30)
        events.append("console finished")

    consumer = _start(node_queue)
    try:
        node_queue.huey.enqueue(staged.s(priority=int(Priority.READER)))
        node_queue.notify()
        assert wait_until(lambda: "first stage" in events, timeout_s=10)
        node_queue.huey.enqueue(console.s(priority=int(Priority.CONSOLE)))
        node_queue.notify()
        assert wait_until(lambda: "console started" in events, timeout_s=10)
        go_on.set()
        time.sleep(0.3)
        assert "second stage" not in events  # paused while the console's work runs
        console_release.set()
        assert wait_until(lambda: "second stage" in events, timeout_s=10)
    finally:
        go_on.set()
        console_release.set()
        consumer.stop(graceful=True)
    assert events == ["first stage", "console started", "console finished", "second stage"]
    yield_to_console()  # outside a worker: returns at once


def test_a_hold_for_console_work_on_its_way_keeps_background_tasks_from_starting(node_queue: NodeQueue) -> None:
    recorder = Recorder(node_queue)
    consumer = _start(node_queue)
    try:
        node_queue.hold_background(0.6)  # a scanner is sending a mapping series
        held_at = time.monotonic()
        recorder.enqueue("reader", Priority.READER)
        recorder.enqueue("console-transfer", Priority.CONSOLE_TRANSFER)
        assert wait_until(lambda: "console-transfer" in recorder.finished, timeout_s=10)
        assert "reader" not in recorder.started
        assert wait_until(lambda: "reader" in recorder.finished, timeout_s=10)
        assert time.monotonic() - held_at >= 0.6
    finally:
        consumer.stop(graceful=True)
