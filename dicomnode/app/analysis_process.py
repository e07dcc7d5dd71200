"""The queue's workers in a child process of the node, so that analysis never shares the SCP's interpreter lock.

Model inference and fitting hold the interpreter lock for long stretches; in the SCP's process they throttled
ingest twenty-fold. :class:`AnalysisProcess` runs the same consumer as ``myomap worker`` (``[queue] workers``
background workers plus the ones kept for console work) in a spawned process over the same queue (SQLite-backed
Huey works across processes on one host, Redis anywhere), restarts it when it dies, and stops it with the node.

A mapping image arriving holds background work back (:meth:`dicomnode.jobs.queue.NodeQueue.hold_background`): the
hold is a shared value the SCP's process writes and the workers' process reads. The child dies with the node
(``PR_SET_PDEATHSIG``, and a watch of its parent for systems without it), so a node killed with SIGKILL leaves no
worker behind to race the restarted one, and it leaves the terminal's process group so that Ctrl-C reaches only
the node, which then stops it gracefully (running jobs finish).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized

from config import Settings

LOGGER = logging.getLogger(__name__)

#: How long a stopping node waits for the workers' process to finish its running jobs before killing it.
STOP_TIMEOUT_S = 60.0
#: How often the child checks that its parent still lives (where the kernel cannot tell it).
PARENT_WATCH_INTERVAL_S = 1.0
#: Restarts closer together than this are delayed, so that a process that dies at start-up does not spin.
RESTART_MIN_INTERVAL_S = 5.0
#: The workers' scheduling priority below the node's (nice): when the CPUs are short, receiving goes first (a scanner
#: waits for each C-STORE response), analysis takes what is left and all of an idle machine.
ANALYSIS_NICENESS = 10
_PR_SET_PDEATHSIG = 1

SPAWN = multiprocessing.get_context("spawn")  # the node's process has threads: never fork it


def shared_hold() -> Synchronized[float]:
    """A ``time.monotonic()`` deadline shared between processes (CLOCK_MONOTONIC is system-wide on Linux)."""
    return SPAWN.Value("d", 0.0)


class AnalysisProcess:
    """The queue's workers in a supervised child process.

    Parameters
    ----------
    settings : Settings
    hold : shared float
        The background hold deadline, from :func:`shared_hold`, that the node's queue writes.
    before_restart : callable, optional
        Called after the process died and before its successor starts, while no worker of the node runs: the node
        puts back on the queue the jobs the dead process was running (on SQLite nothing else can tell they are
        lost).
    """

    def __init__(
        self, settings: Settings, hold: Synchronized[float], before_restart: Callable[[], object] | None = None
    ) -> None:
        self._settings = settings
        self._hold = hold
        self._before_restart = before_restart
        self._process: BaseProcess | None = None
        self._started_at = -float("inf")
        self._stopping = False
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id, while one runs."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the workers' process (returns at once; the child loads the models itself)."""
        with self._lock:
            if self._stopping:
                return
            process = SPAWN.Process(
                target=run_analysis_child, args=(picklable_settings(self._settings), self._hold, os.getpid()),
                name="myomap-analysis", daemon=False,
            )
            process.start()
            self._process = process
            self._started_at = time.monotonic()
        LOGGER.info("analysis workers started in process %d", process.pid)

    def check(self) -> None:
        """Restart the workers' process if it died (jobs it held are re-queued by the node's health check)."""
        process = self._process
        if process is None or self._stopping or process.is_alive():
            return
        if time.monotonic() - self._started_at < RESTART_MIN_INTERVAL_S:
            return
        LOGGER.error("analysis workers' process %d ended (exit code %s): restarting it", process.pid, process.exitcode)
        process.close()
        if self._before_restart is not None:
            try:
                self._before_restart()
            except Exception:  # the database may be briefly away; the next start of the node recovers them
                LOGGER.exception("re-queueing the dead analysis process's jobs failed")
        self.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the workers to finish their running jobs and stop; kill them after ``timeout_s``."""
        with self._lock:
            self._stopping = True
            process = self._process
        if process is None:
            return
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)  # Huey's graceful stop: running tasks finish
            process.join(timeout_s)
            if process.is_alive():
                LOGGER.error("analysis workers did not stop within %.0f s: killing them", timeout_s)
                process.kill()
                process.join()
        LOGGER.info("analysis workers stopped")


def picklable_settings(settings: Settings) -> Settings:
    """``settings`` as a plain :class:`Settings` that a spawned process can receive."""
    # load_settings builds a subclass of Settings inside a function (its sources), which cannot be pickled; the
    # values, already validated, go over as a plain Settings.
    return Settings.model_construct(
        _fields_set=set(settings.model_fields_set),
        **{name: getattr(settings, name) for name in Settings.model_fields},
    )


def die_with_parent(parent_pid: int) -> None:
    """Have this (child) process killed when the node's process ``parent_pid`` ends, however it ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above ran
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_WATCH_INTERVAL_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_analysis_child(settings: Settings, hold: Synchronized[float], parent_pid: int) -> None:
    """The child's entry point: the consumer of ``myomap worker`` with the node's shared background hold."""
    die_with_parent(parent_pid)
    os.setpgrp()  # Ctrl-C goes to the node's process group; the node stops this process with SIGTERM
    os.nice(ANALYSIS_NICENESS)
    from dicomnode.app.logging_setup import configure_logging
    from dicomnode.app.server import run_worker

    configure_logging(settings)
    run_worker(settings, hold=hold)
