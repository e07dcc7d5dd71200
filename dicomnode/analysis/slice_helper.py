"""Forked copies of the analysis process that each take a share of a series' slices, so that a series is analysed
on every core without its threads queueing for one interpreter lock.

Two threads analysing a series' halves keep stopping for each other: every numpy call on a large array releases
and retakes the lock (22-24 thousand hand-overs per 100 slices), and 100 slices took 3.1-3.4 s on 2 cores where
two processes take 2.6-2.7 s. A helper is forked once, after the models are loaded and before any worker thread
runs, so it shares the loaded models' memory with its parent (copy-on-write) and never forks a process with
threads at work. It is sent the slices' maps only: the raw images the motion model reads are ten times the map
(the helper's share of a 100-slice series, 140 MB), so the parent, which holds them, finds the motion of the
helper's slices once their segmentation is back (:func:`inference.slice_analysis.with_motion`).

A helper that dies or stops answering is killed and its share analysed by the caller: no slice is lost to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.process import BaseProcess
from typing import NoReturn

from dicomnode.analysis.memory import release_freed_memory
from inference.model_set import ModelSet
from inference.slice_analysis import SliceAnalysis, SliceRequest
from inference.slice_analysis import analyse_slices as analyse_batch

LOGGER = logging.getLogger(__name__)

#: A helper that has not taken the slices sent to it within this long, or not answered within it plus
#: :data:`ANSWER_S_PER_SLICE` for each slice, is taken to hang: it is killed and the caller analyses its share (a
#: slice takes 50-80 ms on one core).
ANSWER_BASE_S = 60.0
ANSWER_S_PER_SLICE = 2.0
_PR_SET_PDEATHSIG = 1
_LENGTH = struct.Struct("!Q")

FORK = multiprocessing.get_context("fork")


class HelperLostError(Exception):
    """The helper died, hung or sent what could not be read; its share must be analysed elsewhere."""


class _Channel:
    """Pickled messages, each after its length, over one end of a socket pair; a send or a receive given a time
    limit raises TimeoutError when it is not done by then (a stopped peer never blocks the caller for longer)."""

    def __init__(self, end: socket.socket) -> None:
        self._socket = end

    def send(self, message: object, timeout_s: float | None = None) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._socket.settimeout(timeout_s)  # since Python 3.5 the limit of sendall() is for the whole of the data
        self._socket.sendall(_LENGTH.pack(len(data)))
        self._socket.sendall(data)

    def receive(self, timeout_s: float | None = None) -> object:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        (length,) = _LENGTH.unpack(self._exactly(_LENGTH.size, deadline))
        return pickle.loads(self._exactly(length, deadline))

    def close(self) -> None:
        self._socket.close()

    def _exactly(self, count: int, deadline: float | None) -> bytearray:
        buffer = bytearray(count)
        view = memoryview(buffer)
        received = 0
        while received < count:
            self._socket.settimeout(None if deadline is None else max(deadline - time.monotonic(), 1e-3))
            got = self._socket.recv_into(view[received:])
            if got == 0:
                raise EOFError("the other end closed the connection")
            received += got
        return buffer


class SliceHelper:
    """One forked helper process and the connection to it; one request at a time (:meth:`try_acquire`)."""

    def __init__(self, process: BaseProcess, channel: _Channel, models: ModelSet) -> None:
        self.models = models  # the parent's models the helper was forked with: it analyses with its copy of them
        self._process = process
        self._channel = channel
        self._busy = threading.Lock()
        self.lost = False

    @classmethod
    def fork(cls, models: ModelSet) -> SliceHelper:
        """Fork a helper that analyses with ``models`` (already loaded in this process: the helper shares them)."""
        parent_end, child_end = socket.socketpair()
        process = FORK.Process(target=_serve, args=(child_end, parent_end, models, os.getpid()),
                               name="myomap-slices", daemon=True)
        process.start()
        child_end.close()
        return cls(process, _Channel(parent_end), models)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def try_acquire(self) -> bool:
        """Reserve the helper for one request; False when another series has it or it was lost."""
        if self.lost:
            return False
        return self._busy.acquire(blocking=False)

    def release(self) -> None:
        self._busy.release()

    def send(self, requests: Sequence[SliceRequest]) -> None:
        """Send the helper ``requests`` (without raw images: they are left out here); answered by :meth:`receive`."""
        try:
            self._channel.send([replace(request, raw=None) for request in requests], ANSWER_BASE_S)
        except TimeoutError:
            self._lose("it did not take the slices in time")
        except (OSError, ValueError, pickle.PicklingError) as error:
            self._lose(f"the slices could not be sent to it ({error})")

    def receive(self, count: int) -> list[SliceAnalysis | Exception]:
        """The helper's results for the ``count`` requests last sent, in their order (motion not yet found)."""
        try:
            results = self._channel.receive(ANSWER_BASE_S + ANSWER_S_PER_SLICE * count)
        except TimeoutError:
            self._lose("it did not answer in time")
        except (EOFError, OSError, pickle.UnpicklingError, AttributeError, TypeError, struct.error) as error:
            self._lose(f"its answer could not be read ({error!r})")
        if not isinstance(results, list) or len(results) != count:
            self._lose("its answer did not hold one result per slice")
        return results

    def close(self) -> None:
        """Stop the helper (it also dies with this process)."""
        self.lost = True
        self._channel.close()
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5.0)

    def _lose(self, why: str) -> NoReturn:
        LOGGER.error("slice helper process %s lost: %s; its slices are analysed in the analysis process",
                     self._process.pid, why)
        self.close()
        raise HelperLostError(why)


def _serve(end: socket.socket, parent_end: socket.socket, models: ModelSet, parent_pid: int) -> None:
    """The helper's loop: analyse each list of requests received and send back the results, until the parent goes."""
    parent_end.close()
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the node, which stops its processes
    channel = _Channel(end)
    while True:
        try:
            requests = channel.receive()
        except (EOFError, OSError):
            return
        assert isinstance(requests, list)
        try:
            results = [_sendable(result) for result in analyse_batch(requests, models)]
        except Exception as error:  # a fault in a batched model run: every slice of the batch fails with it
            LOGGER.exception("slice helper: the analysis of %d slices failed", len(requests))
            results = [_sendable(error)] * len(requests)
        try:
            channel.send(results)
        except OSError:
            return
        release_freed_memory()


def _sendable(result: SliceAnalysis | Exception) -> SliceAnalysis | Exception:
    """``result`` as it can cross to the parent: an exception that pickling cannot carry becomes a RuntimeError."""
    if isinstance(result, Exception):
        try:
            pickle.loads(pickle.dumps(result))
        except Exception:
            return RuntimeError(f"{type(result).__name__}: {result}")
    return result


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)
