"""Waiting instead of polling in the two threads pynetdicom runs for each accepted association.

pynetdicom's DUL thread (the socket's reader and writer) sleeps 1 ms whenever a pass over its socket and queues
found nothing, and its association thread sleeps 1 ms before each look for a decoded DIMSE message. A C-STORE
waits on these sleeps about three times (its last PDU read, its handler called, its response sent), which on one
association is as long as the node takes to store the instance. Here the DUL thread waits in ``select()`` on its
socket and on a wake-up socket that every put to its queues signals, and the association thread waits on its
message queue; both still look at their timers and flags at least every ``POLL_S``. The state machine, the PDU
and DIMSE handling and every event stay pynetdicom's.

:func:`wait_instead_of_polling` applies this to an acceptor association before it starts (on EVT_CONN_OPEN).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import time
from functools import partial
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

LOGGER = logging.getLogger(__name__)

#: Longest wait before the timers (ARTIM, network idle) and the release, abort and kill flags are looked at again.
POLL_S = 0.005
#: When the connection cannot be waited on (it is closing), pynetdicom's own pause between passes.
FALLBACK_S = 0.001


class _SignallingQueue(queue.Queue[Any]):
    """A queue that calls ``signal`` after each put, so that its consumer need not poll it."""

    def __init__(self, signal: Any) -> None:
        super().__init__()
        self._signal = signal

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._signal()


class WaitingDUL(DULServiceProvider):
    """pynetdicom's DUL service provider whose reactor waits for its socket or queues instead of sleeping."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_receiver, self._wake_sender = socket.socketpair()
        self._wake_receiver.setblocking(False)
        self._wake_sender.setblocking(False)
        self.to_provider_queue = _SignallingQueue(self._wake)
        self.event_queue = _SignallingQueue(self._wake)

    def _wake(self) -> None:
        # OSError: full (a wake-up is pending anyway) or closed (the reactor has ended).
        with contextlib.suppress(OSError):
            self._wake_sender.send(b"\0")

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def run_reactor(self) -> None:
        try:
            self._react()
        finally:
            self._wake_receiver.close()
            self._wake_sender.close()

    def _react(self) -> None:
        # pynetdicom's loop (dul.DULServiceProvider.run_reactor) with _wait_for_work in place of its sleep.
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._wait_for_work()
            if self._kill_thread:
                return
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # One primitive sent, or one PDU received, per pass.
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                self._abort_on_error()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False

    def _wait_for_work(self) -> None:
        """Until the socket has data, a queue was put to, the DUL is killed, or POLL_S has passed."""
        waited_on: list[Any] = [self._wake_receiver]
        transport = self.socket.socket if self.socket is not None else None
        if transport is not None:
            if isinstance(transport, ssl.SSLSocket) and transport.pending():
                return  # decrypted data that select() cannot see
            waited_on.append(transport)
        try:
            ready, _, _ = select.select(waited_on, [], [], POLL_S)
        except (OSError, ValueError):  # the connection closed meanwhile; the next pass handles it
            time.sleep(FALLBACK_S)
            return
        if self._wake_receiver in ready:
            try:
                while self._wake_receiver.recv(4096):
                    pass
            except OSError:  # drained
                pass

    def _abort_on_error(self) -> None:
        # As pynetdicom does: bypass the state machine, send an A-ABORT and stop both reactors.
        LOGGER.exception("error in the DUL reactor of an association, aborting it")
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


def wait_instead_of_polling(assoc: Association) -> None:
    """Give an accepted, not yet started association a :class:`WaitingDUL` and a waiting association loop.

    The DUL that pynetdicom made is replaced before its thread starts; its socket, timers and queued events (the
    transport connection indication) carry over.
    """
    if assoc._started_dul or not assoc.is_acceptor:
        raise RuntimeError("only an acceptor association that has not started can be changed")
    made = assoc.dul
    waiting = WaitingDUL(assoc)
    waiting.socket = made.socket
    waiting._idle_timer = made._idle_timer
    waiting.artim_timer = made.artim_timer
    while True:
        try:
            waiting.event_queue.put(made.event_queue.get(block=False))
        except queue.Empty:
            break
    assoc.dul = waiting
    # Association.run_reactor calls self._run_reactor once the association is established.
    assoc._run_reactor = partial(_serve_until_done, assoc)  # type: ignore[method-assign]


def _serve_until_done(assoc: Association) -> None:
    """pynetdicom's acceptor loop (association.Association._run_reactor), waiting on the message queue."""
    assoc._is_paused = False
    while not assoc._kill:
        # The association's own send_*() calls pause the loop so that it does not take their responses.
        assoc._is_paused = True
        assoc._reactor_checkpoint.wait()
        assoc._is_paused = False
        try:
            context_id, message = assoc.dimse.msg_queue.get(timeout=POLL_S)
        except queue.Empty:
            message = None
        if message and context_id is not None:
            assoc._serve_request(message, context_id)
        if assoc.is_established and assoc.acse.is_release_requested():
            assoc.acse.send_release(is_response=True)
            LOGGER.info("Association Released")
            assoc.is_released = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_RELEASED, {})
            assoc.kill()
            return
        if assoc.acse.is_aborted():
            LOGGER.info("Association Aborted%s", " (A-P-ABORT)" if assoc.acse.is_aborted("a-p-abort") else "")
            assoc.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires for the abort
            assoc.is_aborted = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_ABORTED, {})
            assoc.kill()
            return
        if not assoc.dul.is_alive():
            assoc.kill()
            return
        if assoc.dul.idle_timer_expired():
            LOGGER.error("Network timeout reached")
            if assoc.network_timeout_response == "A-RELEASE":
                assoc._is_paused = True
                assoc._reactor_checkpoint.wait()
                assoc.release()
                assoc._is_paused = False
            else:
                assoc.abort()
            assoc.kill()
            return
