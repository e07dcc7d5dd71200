"""More processes serving the node's DICOM ports, so that associations use every core.

One Python process receives at most what its interpreter lock lets through (pynetdicom's threads, parsing, the
durable write and the database row all take it). ``[dicom] processes`` (0: one per CPU core) processes serve the
node's ports: the node's own SCP accepts every connection and places it on the process with the fewest open
(:mod:`dicomnode.net.handoff`), itself or one of the ``processes - 1`` children started here, each with its own
pynetdicom AE (plain and TLS servers), the same handlers and admission checks, and its own storage path into the
shared database. They agree through the database only: storing counts each arrival with one atomic update and
completes a series by a conditional one, so a series whose instances arrive over several processes at once is
complete exactly once. A child completes series by their protocol and hands on those that need no pairing; the
node's own assembler watches quiet periods and hands on mapping series once their study has settled. Each child is
supervised like the analysis process (restarted when it dies, stopped with the node, killed with it).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from functools import partial
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray

from config import Settings
from dicomnode.app.analysis_process import (
    RESTART_MIN_INTERVAL_S,
    SPAWN,
    STOP_TIMEOUT_S,
    die_with_parent,
    picklable_settings,
)
from dicomnode.net.handoff import OpenConnections, shared_counts

LOGGER = logging.getLogger(__name__)


def scp_process_count(settings: Settings) -> int:
    """How many processes receive: ``[dicom] processes``, or one per CPU core when it is 0."""
    return settings.dicom.processes or (os.cpu_count() or 1)


def bound_settings(settings: Settings, port: int, tls_port: int | None) -> Settings:
    """``settings`` with the ports the node's own SCP bound (the configured ones, or those chosen for 0)."""
    dicom = settings.dicom.model_copy(update={"port": port, "tls_port": tls_port or 0})
    return settings.model_copy(update={"dicom": dicom})


def shared_open_connections(processes: int) -> OpenConnections:
    """Open-connection counts for the node's own SCP process and ``processes - 1`` children."""
    return shared_counts(processes, SPAWN)


class ScpProcesses:
    """Supervised child processes serving the connections the node's SCP places on them.

    Parameters
    ----------
    settings : Settings
        With the actual ports (:func:`bound_settings`).
    hold : shared float
        The background hold that a mapping image sets (:func:`dicomnode.app.analysis_process.shared_hold`), or
        None when the node's workers run in its own process (then only this process's hold matters).
    open_connections : OpenConnections
        One count per process: index 0 is the node's own, children are 1 up.
    """

    def __init__(
        self, settings: Settings, hold: Synchronized[float] | None, open_connections: OpenConnections
    ) -> None:
        self._settings = picklable_settings(settings)
        self._hold = hold
        self._open_connections = open_connections
        count = open_connections.processes - 1
        self._processes: list[BaseProcess | None] = [None] * count
        self._channels: list[socket.socket | None] = [None] * count
        self._started_at = [-float("inf")] * count
        self._stopping = False
        self._lock = threading.Lock()

    def channel(self, index: int) -> socket.socket | None:
        """The node's end of the channel to child ``index`` (1 up), None while it is not running."""
        process = self._processes[index - 1]
        if process is None or not process.is_alive():
            return None
        return self._channels[index - 1]

    def start(self) -> None:
        """Start every child (returns once they are started, not yet listening)."""
        for index in range(len(self._processes)):
            self._start(index)

    def _start(self, index: int) -> None:
        with self._lock:
            if self._stopping:
                return
            # SEQPACKET keeps each handed-on connection's message (and descriptor) apart.
            node_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            counts = self._open_connections.shared
            process = SPAWN.Process(
                target=run_scp_child, args=(self._settings, self._hold, os.getpid(), child_end, counts, index + 1),
                name=f"myomap-scp-{index + 1}", daemon=False,
            )
            process.start()
            child_end.close()
            previous = self._channels[index]
            if previous is not None:
                previous.close()
            self._open_connections.reset(index + 1)
            self._channels[index] = node_end
            self._processes[index] = process
            self._started_at[index] = time.monotonic()
        LOGGER.info("Storage SCP process %d started (%d)", index + 1, process.pid)

    def check(self) -> None:
        """Restart children that died."""
        for index, process in enumerate(self._processes):
            if process is None or self._stopping or process.is_alive():
                continue
            if time.monotonic() - self._started_at[index] < RESTART_MIN_INTERVAL_S:
                continue
            LOGGER.error("Storage SCP process %d (%d) ended (exit code %s): restarting it",
                         index + 1, process.pid, process.exitcode)
            process.close()
            self._start(index)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every child: no new associations, the running ones end."""
        with self._lock:
            self._stopping = True
        running = [p for p in self._processes if p is not None and p.is_alive() and p.pid is not None]
        for process in running:
            os.kill(int(process.pid or 0), signal.SIGTERM)
        for process in running:
            process.join(timeout_s)
            if process.is_alive():
                LOGGER.error("Storage SCP process %d did not stop within %.0f s: killing it", process.pid, timeout_s)
                process.kill()
                process.join()
        for channel in self._channels:
            if channel is not None:
                channel.close()


def run_scp_child(
    settings: Settings, hold: Synchronized[float] | None, parent_pid: int, channel: socket.socket,
    counts: SynchronizedArray[int], index: int,
) -> None:
    """A child's entry point: a Storage SCP serving the connections handed on through ``channel``, its own
    assembler notes, until SIGTERM."""
    die_with_parent(parent_pid)
    os.setpgrp()  # Ctrl-C reaches the node only, which stops this process with SIGTERM
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())

    from db.session import make_engine, make_session_factory
    from dicomnode.app.heap import freeze_start_up_objects
    from dicomnode.app.logging_setup import configure_logging
    from dicomnode.jobs.creation import enqueue_series
    from dicomnode.jobs.queue import CONSOLE_HOLD_MARGIN_S, make_queue
    from dicomnode.jobs.tasks import register_tasks
    from dicomnode.net.handoff import ChildSide
    from dicomnode.net.scp import StorageSCP
    from dicomnode.store.assembly import Assembler

    configure_logging(settings)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    queue = make_queue(settings, hold)
    tasks = register_tasks(queue, settings=settings, session_factory=session_factory)
    # Not started: the node's own assembler watches quiet periods and settled studies; this one completes series by
    # their protocol as their instances arrive here and hands on those that need no pairing.
    assembler = Assembler(
        session_factory, settings, partial(enqueue_series, session_factory=session_factory, sink=tasks),
        on_mapping_image=partial(queue.hold_background, settings.series.pairing_seconds + CONSOLE_HOLD_MARGIN_S),
    )
    scp = StorageSCP(settings, session_factory, assembler,
                     child=ChildSide(channel, OpenConnections(counts), index))
    scp.start()
    freeze_start_up_objects()
    LOGGER.info("Storage SCP process %d serving the connections the node places on it", index)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        scp.stop()
        queue.huey.storage.close()
        engine.dispose()
