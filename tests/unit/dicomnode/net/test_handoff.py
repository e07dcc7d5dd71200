"""Placing accepted connections on the least busy SCP process, and a child serving what it is handed."""

from __future__ import annotations

import multiprocessing
import socket
import threading

from dicomnode.net.handoff import PLAIN, TLS, ChildSide, HandOff, OpenConnections, receive_connections, shared_counts


def _open_connections(processes: int) -> OpenConnections:
    return shared_counts(processes, multiprocessing.get_context("spawn"))


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    return client, accepted


def test_connections_go_to_the_process_with_fewest_open_the_node_first_on_a_tie() -> None:
    counts = _open_connections(3)
    placed = [counts.take_least_busy(lambda _index: True) for _ in range(5)]
    assert placed == [0, 1, 2, 0, 1]
    counts.ended(2)
    counts.ended(2)  # never below zero
    assert counts.snapshot() == [2, 2, 0]
    assert counts.take_least_busy(lambda index: index != 2) == 0  # a child that is down takes none


def test_a_connection_is_handed_to_a_child_with_its_address_and_kind() -> None:
    counts = _open_connections(2)
    node_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    served: list[tuple[str, tuple[str, int], bytes]] = []

    def serve(kind: str, connection: socket.socket, address: tuple[str, int]) -> None:
        served.append((kind, address, connection.recv(5)))
        connection.close()

    receiver = threading.Thread(target=receive_connections, args=(ChildSide(child_end, counts, 1), serve))
    receiver.start()
    handoff = HandOff(counts, lambda index: node_end if index == 1 else None)
    first_client, first = _tcp_pair()
    second_client, second = _tcp_pair()
    try:
        assert handoff.place(first, ("10.1.2.3", 104), PLAIN) is False  # a tie: served by the node's process
        second_client.sendall(b"hello")
        assert handoff.place(second, ("10.1.2.4", 4242), TLS) is True
        assert second.fileno() == -1  # closed in the node's process
        node_end.close()  # the child's receiver ends with the channel
        receiver.join(5)
        assert not receiver.is_alive()
        assert served == [(TLS, ("10.1.2.4", 4242), b"hello")]
        assert counts.snapshot() == [1, 1]
    finally:
        for end in (first_client, first, second_client, child_end):
            end.close()


def test_a_child_that_cannot_take_the_connection_leaves_it_to_the_node() -> None:
    counts = _open_connections(2)
    node_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child_end.close()  # the child died
    handoff = HandOff(counts, lambda _index: node_end)
    counts.take_least_busy(lambda _index: True)  # the node's process already serves one
    client, accepted = _tcp_pair()
    try:
        assert handoff.place(accepted, ("127.0.0.1", 5000), PLAIN) is False
        assert accepted.fileno() != -1
        assert counts.snapshot() == [2, 0]
    finally:
        for end in (client, accepted, node_end):
            end.close()


def test_callers_slots_are_counted_over_every_process() -> None:
    counts = _open_connections(3)
    assert counts.admit_stranger(0, limit=2)
    assert counts.admit_stranger(2, limit=2)
    assert not counts.admit_stranger(1, limit=2)  # the node holds 2, whichever processes hold them
    assert counts.strangers() == 2
    counts.stranger_ended(0)
    assert counts.admit_stranger(1, limit=2)
    counts.reset(2)  # a child that died gave its slots back with it
    assert counts.strangers() == 1
    counts.stranger_ended(0)
    counts.stranger_ended(0)  # never below zero
    assert counts.strangers() == 1 and counts.snapshot() == [0, 0, 0]
