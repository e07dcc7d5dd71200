"""Accepted associations whose threads wait instead of polling still serve, release, abort and time out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification

from dicomnode.net.reactor import WaitingDUL, wait_instead_of_polling
from dicomnode.net.scp import tune_association
from dicomnode.net.scu import _responses_for_the_sender_only


class _Server:
    def __init__(self, network_timeout_s: float = 30.0) -> None:
        self.ae = AE(ae_title="REACTOR")
        self.ae.add_supported_context(Verification)
        self.ae.network_timeout = network_timeout_s
        self.accepted: list[Association] = []
        self.ended: list[str] = []
        self._lock = threading.Lock()
        handlers = [
            (evt.EVT_CONN_OPEN, tune_association),
            (evt.EVT_CONN_OPEN, self._note),
            (evt.EVT_RELEASED, lambda event: self.ended.append("released")),
            (evt.EVT_ABORTED, lambda event: self.ended.append("aborted")),
            (evt.EVT_CONN_CLOSE, lambda event: self.ended.append("closed")),
        ]
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = int(self.server.server_address[1])

    def _note(self, event: Event) -> None:
        with self._lock:
            self.accepted.append(event.assoc)


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server()
    yield running
    running.server.shutdown()


def _associate(port: int) -> Association:
    """A requestor's association, as the node's SCU makes one: its reactor leaves the responses to the sender
    (pynetdicom's own can take one on a busy machine, and the echo then waits out the DIMSE timeout)."""
    ae = AE(ae_title="CALLER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="REACTOR")
    if assoc.is_established:
        _responses_for_the_sender_only(assoc)
    return assoc


def _wait_for(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_echoes_are_answered_and_a_release_ends_the_association_at_once(server: _Server) -> None:
    assoc = _associate(server.port)
    assert assoc.is_established
    for _ in range(50):
        assert assoc.send_c_echo().Status == 0x0000
    started = time.monotonic()
    assoc.release()
    assert assoc.is_released
    assert time.monotonic() - started < 1.0
    accepted = server.accepted[0]
    assert isinstance(accepted.dul, WaitingDUL)
    _wait_for(lambda: "released" in server.ended and not accepted.is_alive())
    _wait_for(lambda: not accepted.dul.is_alive())


def test_an_abort_from_the_caller_ends_the_association(server: _Server) -> None:
    assoc = _associate(server.port)
    assert assoc.is_established
    assoc.abort()
    accepted = server.accepted[0]
    _wait_for(lambda: "aborted" in server.ended and not accepted.is_alive() and not accepted.dul.is_alive())


def test_an_idle_association_is_ended_after_the_network_timeout() -> None:
    running = _Server(network_timeout_s=0.3)
    try:
        assoc = _associate(running.port)
        assert assoc.is_established
        _wait_for(lambda: not assoc.is_established, timeout_s=5.0)
        assert assoc.is_aborted
    finally:
        running.server.shutdown()


def test_only_an_acceptor_that_has_not_started_is_changed(server: _Server) -> None:
    assoc = _associate(server.port)
    try:
        with pytest.raises(RuntimeError):
            wait_instead_of_polling(assoc)  # a requestor, and started
    finally:
        assoc.release()
