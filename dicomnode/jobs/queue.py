"""The node's job queue: one Huey instance built from the settings, and the consumer that runs its tasks.

SQLite (one durable file beside the database) is the embedded default; a ``redis://`` URL spreads the work over
several worker machines. Both go through the same code: only the storage class differs.

Latency matters more than polling cost here (a radiographer waits for the map), so idle workers poll the SQLite
queue every few tens of milliseconds and are woken at once when this process enqueues a task (:meth:`NodeQueue.
notify`). Redis storage blocks on the queue and needs neither.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer, Worker

from config import Settings

LOGGER = logging.getLogger(__name__)

QUEUE_NAME = "myomap"
#: Idle polling of a non-blocking (SQLite) queue: first wait, growth factor, longest wait.
POLL_INITIAL_S = 0.01
POLL_BACKOFF = 1.5
POLL_MAX_S = 0.05
#: Seconds a SQLite connection waits for a lock held by another thread or process before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0


class QueueUrlError(ValueError):
    """The queue URL names a backend the node does not support."""


@dataclass
class NodeQueue:
    """A Huey instance plus the wake-up signal of this process's idle workers."""

    huey: Huey
    wake: threading.Condition = field(default_factory=threading.Condition)

    def notify(self) -> None:
        """Wake idle workers of this process: a task was just enqueued."""
        with self.wake:
            self.wake.notify_all()


def make_huey(settings: Settings) -> Huey:
    """The Huey instance for ``settings.queue_url`` (``sqlite:///path`` or ``redis://host:port/db``).

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
        return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, timeout=SQLITE_BUSY_TIMEOUT_S)
    if scheme in ("redis", "rediss"):
        return RedisHuey(QUEUE_NAME, url=url, results=False)
    raise QueueUrlError(f"queue url must start with sqlite:/// or redis://, got {url!r}")


def make_queue(settings: Settings) -> NodeQueue:
    """A :class:`NodeQueue` around :func:`make_huey`."""
    return NodeQueue(huey=make_huey(settings))


class _WakeableWorker(Worker):
    """A Huey worker whose idle wait ends early when :meth:`NodeQueue.notify` is called."""

    wake: threading.Condition
    # Set by Huey's Worker.__init__ (huey ships no types): the idle wait in seconds, its cap and growth factor.
    delay: float
    max_delay: float
    backoff: float

    def sleep(self) -> None:
        self.delay = min(self.delay, self.max_delay)
        with self.wake:
            self.wake.wait(self.delay)
        self.delay *= self.backoff


def make_consumer(queue: NodeQueue, workers: int, *, handle_signals: bool = True) -> Consumer:
    """A thread-based Huey consumer with ``workers`` workers, short polling and in-process wake-up.

    With ``handle_signals`` the consumer installs Huey's handlers when started (SIGTERM: finish running tasks,
    then stop; SIGINT: stop now), as the stand-alone worker wants; without, the caller handles signals (the
    one-process server, which must also stop its other services, or a consumer started off the main thread).
    """

    class WakeableWorker(_WakeableWorker):
        wake = queue.wake

    class NodeConsumer(Consumer):
        worker_class = WakeableWorker

        def _set_signal_handlers(self) -> None:
            if handle_signals:
                super()._set_signal_handlers()

    return NodeConsumer(
        queue.huey,
        workers=workers,
        worker_type="thread",
        initial_delay=POLL_INITIAL_S,
        backoff=POLL_BACKOFF,
        max_delay=POLL_MAX_S,
        periodic=False,
        graceful_signal="TERM",
    )
