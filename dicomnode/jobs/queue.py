"""The node's job queue: one Huey instance built from the settings, and the consumer that runs its tasks.

SQLite (one durable file beside the database) is the embedded default; a ``redis://`` URL spreads the work over
several worker machines. Both go through the same code: only the storage class differs.

Latency matters more than polling cost here (a radiographer waits for the map), so idle workers poll the SQLite
queue every few tens of milliseconds and are woken at once when this process enqueues a task (:meth:`NodeQueue.
notify`). Redis storage blocks on the queue and needs neither.

Tasks carry a :class:`Priority` and both storages hand out the highest first (SQLite: Huey's ``priority`` column;
Redis: a sorted set, Huey's priority Redis storage). Console work (map jobs, whose Secondary Captures the
radiographer waits for, and transfers to a console) comes before reader scoring, archive transfers and re-scoring.
Priority alone would still let a backlog of readers hold every worker, so each consumer runs
:data:`CONSOLE_WORKERS` workers more than ``[queue] workers`` and lets at most ``workers`` of them run background
tasks: two are always free for console work (a map job, and the delivery of the images it has just written while
it goes on with its reports). While console work runs in a process, or is on its way (a scanner is sending a
mapping series: :meth:`NodeQueue.hold_background`), its workers start no background task and the background tasks
running pause between their stages (:func:`yield_to_console`), so that it has the CPUs; and the
interpreter switches threads every millisecond rather than every 5 ms, so that console work waiting for the
interpreter lock behind a running background task gets it back sooner.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huey import Huey, PriorityRedisHuey, SqliteHuey
from huey.api import Task
from huey.consumer import Consumer, Worker
from huey.storage import PriorityRedisStorage, SqliteStorage

from config import Settings

LOGGER = logging.getLogger(__name__)

QUEUE_NAME = "myomap"
#: Idle polling of a non-blocking (SQLite) queue: first wait, growth factor, longest wait.
POLL_INITIAL_S = 0.01
POLL_BACKOFF = 1.5
POLL_MAX_S = 0.05
#: Seconds a SQLite connection waits for a lock held by another thread or process before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0
#: Workers of a consumer kept for console work, on top of ``[queue] workers``: a map job, and the delivery of its
#: console images while it writes its reports.
CONSOLE_WORKERS = 2
#: How long past a study's pairing wait a mapping image holds background work back: the time to complete its
#: series and queue its analysis, which then holds it back while it runs.
CONSOLE_HOLD_MARGIN_S = 1.0
#: The interpreter's thread switch interval while a consumer runs (Python's default is 5 ms).
GIL_SWITCH_INTERVAL_S = 0.001


class Priority(IntEnum):
    """Queue priorities, highest first out; :attr:`CONSOLE` and above is console work."""

    CONSOLE_TRANSFER = 110  # a finished result's images to a console: quick, and what the radiographer waits for
    CONSOLE = 100  # a map job: its Secondary Captures go to the console
    ARCHIVE_TRANSFER = 20  # outputs to a PACS or a reader's workstation
    READER = 10  # a reader's contours scored
    RESCORE = 0  # a reader scored again against a changed reference


def is_console_priority(priority: int | None) -> bool:
    """Whether a task of this priority is console work (None: Huey's default, background)."""
    return priority is not None and priority >= Priority.CONSOLE


_running = threading.local()  # the NodeQueue whose background task this thread runs, if any


def yield_to_console() -> None:
    """Wait while console work runs in this process, when called from a background task (a no-op elsewhere).

    Long background tasks call it between their stages, so that a map job that starts while they run gets the
    CPUs (and the interpreter lock) for the rest of it.
    """
    queue: NodeQueue | None = getattr(_running, "queue", None)
    if queue is not None:
        queue.wait_for_console_work()


class QueueUrlError(ValueError):
    """The queue URL names a backend the node does not support."""


class NodeSqliteStorage(SqliteStorage):
    """Huey's SQLite storage that can also hand out only the tasks of a least priority."""

    def dequeue_at_least(self, priority: int) -> bytes | None:
        """Take the highest-priority, oldest task of at least ``priority`` off the queue; None when there is none."""
        if not self.sql("select 1 from task where queue = ? and priority >= ? limit 1", (self.name, priority),
                        results=True):
            return None
        with self.db(commit=True) as cursor:
            cursor.execute("select id, data from task where queue = ? and priority >= ? "
                           "order by priority desc, id limit 1", (self.name, priority))
            row = cursor.fetchone()
            if row is not None:
                task_id, data = row
                cursor.execute("delete from task where id = ?", (task_id,))
                if cursor.rowcount == 1:
                    return bytes(data)
        return None


class NodeRedisStorage(PriorityRedisStorage):
    """Huey's priority Redis storage (a sorted set scored by minus the priority, then by time of enqueueing) that
    can also hand out only the tasks of a least priority.

    A queue left by an earlier node in Huey's plain Redis storage (a list under the same key) is moved into the
    sorted set, at the background priority, before the first task is queued or taken (not when the storage is
    made: that needs no server yet).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._adopted = False
        self._adopt_lock = threading.Lock()

    def _adopt_list_queue(self) -> None:
        if self._adopted:
            return
        with self._adopt_lock:
            if self._adopted:
                return
            if self.conn.type(self.queue_key) in (b"list", "list"):
                with self.conn.pipeline(transaction=True) as pipe:
                    pipe.lrange(self.queue_key, 0, -1)
                    pipe.delete(self.queue_key)
                    items, _deleted = pipe.execute()
                # The list is pushed on the left and popped on the right: its oldest task is last.
                for data in reversed(items):
                    super().enqueue(data, int(Priority.RESCORE))
                LOGGER.info("moved %d queued tasks into the priority queue", len(items))
            self._adopted = True

    def enqueue(self, data: bytes, priority: int | None = None) -> None:
        self._adopt_list_queue()
        super().enqueue(data, priority)

    def dequeue(self) -> bytes | None:
        self._adopt_list_queue()
        result: bytes | None = super().dequeue()
        return result

    def queue_size(self) -> int:
        self._adopt_list_queue()
        return int(super().queue_size())

    def enqueued_items(self, limit: int | None = None) -> list[bytes]:
        self._adopt_list_queue()
        return list(super().enqueued_items(limit))

    def dequeue_at_least(self, priority: int) -> bytes | None:
        """Take the highest-priority, oldest task of at least ``priority`` off the queue; None when there is none."""
        self._adopt_list_queue()
        while True:
            # Scores are minus the priority: a least priority is a greatest score.
            items = self.conn.zrangebyscore(self.queue_key, "-inf", -priority, start=0, num=1)
            if not items:
                return None
            if self.conn.zrem(self.queue_key, items[0]):  # only one worker removes it; the others look again
                return bytes(items[0][8:])  # the storage prefixes each task with its enqueue time


class NodeSqliteHuey(SqliteHuey):
    storage_class = NodeSqliteStorage


class NodeRedisHuey(PriorityRedisHuey):
    storage_class = NodeRedisStorage


@dataclass
class NodeQueue:
    """A Huey instance plus the wake-up signal of this process's idle workers and its count of running console
    tasks."""

    huey: Huey
    wake: threading.Condition = field(default_factory=threading.Condition)
    console_running: int = 0
    hold_until: float = 0.0  # time.monotonic() until which background work waits: console images on their way
    # The same deadline shared with the node's other processes (a multiprocessing Value of a float): the SCP's
    # process holds back the workers of its analysis process.
    shared_hold: Any = None

    def hold_background(self, seconds: float) -> None:
        """Hold background work back for ``seconds`` from now (console work on its way: a scanner sends a mapping
        series whose analysis is queued once its study settles)."""
        until = time.monotonic() + seconds
        with self.wake:
            self.hold_until = max(self.hold_until, until)
        if self.shared_hold is not None:
            with self.shared_hold.get_lock():
                self.shared_hold.value = max(self.shared_hold.value, until)

    def _held_until(self) -> float:
        shared = 0.0 if self.shared_hold is None else float(self.shared_hold.value)
        return max(self.hold_until, shared)

    def background_may_run(self) -> bool:
        """Whether background work may run now: no console work runs or is on its way in this process."""
        return self.console_running == 0 and time.monotonic() >= self._held_until()

    def notify(self) -> None:
        """Wake idle workers of this process: a task was just enqueued."""
        with self.wake:
            self.wake.notify_all()

    def console_started(self) -> None:
        with self.wake:
            self.console_running += 1

    def console_finished(self) -> None:
        with self.wake:
            self.console_running -= 1
            self.wake.notify_all()  # idle workers may take background tasks again

    def wait_for_console_work(self) -> None:
        """Return once no console work runs or is on its way in this process."""
        with self.wake:
            while not self.background_may_run():
                held_s = self._held_until() - time.monotonic()
                self.wake.wait(held_s if self.console_running == 0 else None)

    def dequeue(self, *, background: bool) -> Task | None:
        """The next task: the highest-priority one, or with ``background`` false only console work."""
        storage = self.huey.storage
        if background:
            return self.huey.dequeue()
        data = storage.dequeue_at_least(int(Priority.CONSOLE))
        return None if data is None else self.huey.deserialize_task(data)


def make_huey(settings: Settings) -> Huey:
    """The Huey instance for ``settings.queue_url`` (``sqlite:///path`` or ``redis://host:port/db``), with
    priorities.

    Raises
    ------
    QueueUrlError
        If the URL scheme is neither ``sqlite`` nor ``redis``/``rediss``.
    """
    url = settings.queue_url
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # results=False: tasks report through the database, not through Huey's result store.
        return NodeSqliteHuey(QUEUE_NAME, filename=str(path), results=False, timeout=SQLITE_BUSY_TIMEOUT_S)
    if scheme in ("redis", "rediss"):
        return NodeRedisHuey(QUEUE_NAME, url=url, results=False)
    raise QueueUrlError(f"queue url must start with sqlite:/// or redis://, got {url!r}")


def make_queue(settings: Settings, shared_hold: Any = None) -> NodeQueue:
    """A :class:`NodeQueue` around :func:`make_huey`; ``shared_hold`` is the background hold shared with the
    node's other processes (see :mod:`dicomnode.app.analysis_process`)."""
    return NodeQueue(huey=make_huey(settings), shared_hold=shared_hold)


class _NodeWorker(Worker):
    """A Huey worker that takes background tasks only when a background slot is free and no console task runs in
    this process, and whose idle wait ends early when :meth:`NodeQueue.notify` is called."""

    queue: NodeQueue
    background_slots: threading.BoundedSemaphore
    # Set by Huey's Worker.__init__ (huey ships no types): the idle wait in seconds, its cap and growth factor.
    delay: float
    default_delay: float
    max_delay: float
    backoff: float
    task_count: int
    max_tasks: int | None

    def loop(self, now: Any = None) -> None:
        background = self.queue.background_may_run() and self.background_slots.acquire(blocking=False)
        console = False
        try:
            try:
                task = self.queue.dequeue(background=background)
            except Exception:
                self._logger.exception("Error reading from queue")
                self.sleep()
                return
            if task is None:
                # A blocking storage (Redis) has waited already, unless only console work was looked for.
                if not background or not self.huey.storage.blocking:
                    self.sleep()
                return
            console = is_console_priority(task.priority)
            if console:
                if background:
                    self.background_slots.release()
                    background = False
                self.queue.console_started()
            else:
                # A blocking storage may hand out a background task that console work has overtaken meanwhile.
                self.queue.wait_for_console_work()
            self.delay = self.default_delay
            self.task_count += 1
            _running.queue = None if console else self.queue
            try:
                self.huey.execute(task, now)
            except Exception:
                self._logger.exception("Unhandled error during execution of task %s.", task.id)
            finally:
                _running.queue = None
        finally:
            if console:
                self.queue.console_finished()
            if background:
                self.background_slots.release()

    def sleep(self) -> None:
        self.delay = min(self.delay, self.max_delay)
        with self.queue.wake:
            self.queue.wake.wait(self.delay)
        self.delay *= self.backoff


def make_consumer(queue: NodeQueue, workers: int, *, handle_signals: bool = True) -> Consumer:
    """A thread-based Huey consumer with ``workers`` background workers plus :data:`CONSOLE_WORKERS` kept for
    console work, short polling and in-process wake-up.

    With ``handle_signals`` the consumer installs Huey's handlers when started (SIGTERM: finish running tasks,
    then stop; SIGINT: stop now), as the stand-alone worker wants; without, the caller handles signals (the
    one-process server, which must also stop its other services, or a consumer started off the main thread).
    """

    # Console work shares the interpreter lock with the background tasks running on: a thread that gave it up for
    # I/O (a transfer's socket, a map job's file) waits up to the switch interval to get it back, many times over.
    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))

    class NodeWorker(_NodeWorker):
        pass

    NodeWorker.queue = queue
    NodeWorker.background_slots = threading.BoundedSemaphore(workers)

    class NodeConsumer(Consumer):
        worker_class = NodeWorker

        def _set_signal_handlers(self) -> None:
            if handle_signals:
                super()._set_signal_handlers()

    return NodeConsumer(
        queue.huey,
        workers=workers + CONSOLE_WORKERS,
        worker_type="thread",
        initial_delay=POLL_INITIAL_S,
        backoff=POLL_BACKOFF,
        max_delay=POLL_MAX_S,
        periodic=False,
        graceful_signal="TERM",
    )
