"""The pool of connections waiting for their A-ASSOCIATE-RQ: limits, eviction order, request detection."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from dicomnode.net.admission import AdmissionLimits, PendingConnections, wait_for_request


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for server_side, client_side in made:
        server_side.close()
        client_side.close()


def _connection(pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    pair = socket.socketpair()
    pairs.append(pair)
    pair[1].settimeout(1.0)
    return pair


def _closed_by_node(client_side: socket.socket) -> bool:
    try:
        return client_side.recv(1) == b""
    except TimeoutError:
        return False


def _pool(**limits: object) -> PendingConnections:
    values: dict[str, object] = {
        "request_timeout_s": 5.0, "max_pending": 4, "max_pending_per_address": 2, "peer_hosts": frozenset({"10.0.0.5"})
    }
    return PendingConnections(AdmissionLimits(**{**values, **limits}))  # type: ignore[arg-type]


def test_an_unknown_address_beyond_its_limit_pushes_out_its_own_oldest(pairs) -> None:  # noqa: ANN001
    pool = _pool()
    first, second, third = (_connection(pairs) for _ in range(3))
    other = _connection(pairs)
    pool.admit(other[0], "10.0.0.9")
    for server_side, _ in (first, second, third):
        pool.admit(server_side, "10.0.0.8")
    assert _closed_by_node(first[1])
    assert not _closed_by_node(second[1]) and not _closed_by_node(other[1])
    assert len(pool) == 3 and pool.evicted == 1


def test_a_full_pool_pushes_out_the_oldest_unknown_before_any_peer(pairs) -> None:  # noqa: ANN001
    pool = _pool(max_pending_per_address=10)
    peer = _connection(pairs)
    pool.admit(peer[0], "10.0.0.5")
    unknown = [_connection(pairs) for _ in range(3)]
    for server_side, _ in unknown:
        pool.admit(server_side, "10.0.0.8")
    newcomer = _connection(pairs)
    pool.admit(newcomer[0], "10.0.0.5")
    assert _closed_by_node(unknown[0][1]) and not _closed_by_node(peer[1])
    assert len(pool) == 4


def test_released_connections_no_longer_count(pairs) -> None:  # noqa: ANN001
    pool = _pool()
    tickets = [pool.admit(_connection(pairs)[0], "10.0.0.8") for _ in range(2)]
    for ticket in tickets:
        pool.release(ticket)
    assert len(pool) == 0 and pool.evicted == 0


def test_wait_for_request_needs_the_whole_pdu(pairs) -> None:  # noqa: ANN001
    server_side, client_side = _connection(pairs)
    body = bytes(68)
    header = bytes([0x01, 0x00]) + len(body).to_bytes(4, "big")
    client_side.sendall(header + body[:10])
    assert not wait_for_request(server_side, time.monotonic() + 0.3)
    client_side.sendall(body[10:])
    assert wait_for_request(server_side, time.monotonic() + 0.3)
    assert server_side.recv(1000) == header + body  # peeked, not read


def test_wait_for_request_gives_up_at_the_deadline_and_on_close(pairs) -> None:  # noqa: ANN001
    server_side, client_side = _connection(pairs)
    started = time.monotonic()
    assert not wait_for_request(server_side, started + 0.2)
    assert 0.15 < time.monotonic() - started < 1.0
    client_side.close()
    assert not wait_for_request(server_side, time.monotonic() + 1.0)


def test_closed_connections_are_summarised_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    pool = _pool()
    with caplog.at_level(logging.DEBUG, logger="dicomnode.net.admission"):
        for index in range(50):
            pool.note_closed(f"10.0.0.{index % 3}", "closed after the request timeout")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 connection(s)" in warnings[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 50


def test_a_request_declaring_more_than_the_limit_is_refused_at_once(pairs) -> None:  # noqa: ANN001
    server_side, client_side = _connection(pairs)
    client_side.sendall(bytes([0x01, 0x00]) + (1024 * 1024).to_bytes(4, "big") + bytes(100))
    started = time.monotonic()
    assert not wait_for_request(server_side, started + 5.0)
    assert time.monotonic() - started < 1.0


def test_other_pdus_are_handed_on_for_the_protocol_to_answer(pairs) -> None:  # noqa: ANN001
    server_side, client_side = _connection(pairs)
    client_side.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # an A-ABORT
    assert wait_for_request(server_side, time.monotonic() + 1.0)
