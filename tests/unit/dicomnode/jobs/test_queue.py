"""The queue: one Huey instance per URL scheme, and workers that pick up a task at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from huey import RedisHuey, SqliteHuey

from config import load_settings
from dicomnode.jobs.queue import QueueUrlError, make_consumer, make_huey, make_queue


def test_embedded_default_is_a_sqlite_queue_in_the_storage_folder(tmp_path: Path) -> None:
    huey = make_huey(load_settings(storage={"path": tmp_path}))
    assert isinstance(huey, SqliteHuey)
    assert Path(huey.storage.filename) == tmp_path / "queue.db"


def test_redis_url_gives_a_redis_queue(tmp_path: Path) -> None:
    huey = make_huey(load_settings(storage={"path": tmp_path}, queue={"url": "redis://127.0.0.1:6399/3"}))
    assert isinstance(huey, RedisHuey)


def test_unknown_queue_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QueueUrlError, match="amqp://host"):
        make_huey(load_settings(storage={"path": tmp_path}, queue={"url": "amqp://host"}))


def test_consumer_runs_an_enqueued_task(tmp_path: Path) -> None:
    queue = make_queue(load_settings(storage={"path": tmp_path}))
    ran = threading.Event()
    seen: list[int] = []

    @queue.huey.task(name="test.record")
    def record(value: int) -> None:
        seen.append(value)
        ran.set()

    consumer = make_consumer(queue, 1, handle_signals=False)
    consumer.start()
    try:
        record(42)
        queue.notify()
        assert ran.wait(10), "the worker did not run the task"
    finally:
        consumer.stop(graceful=True)
    assert seen == [42]
