"""Idle TCP connections cannot lock configured peers out, on the plain and on the mutual-TLS port.

Twenty connections that never send an A-ASSOCIATE-RQ are held open (re-opened as soon as the node closes one),
half from the configured peer's own address 127.0.0.1 and half from 127.0.0.2, while the peer's echoscu calls
every 0.3 s for about 15 s: every call must succeed. Unknown AE titles cannot take the association slots kept
for configured peers either.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from pynetdicom import AE

from tests.integration.conftest import RunningNode
from tests.integration.node_harness import dcmtk_available, dcmtk_env, free_port
from tests.integration.tls_certs import Certificates, dcmtk_tls, make_certificates, node_tls

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not dcmtk_available(), reason="DCMTK not installed")]

PEER_AE = "CONSOLE"
IDLE_CONNECTIONS = 20
SOURCES = ("127.0.0.1", "127.0.0.2")
DURATION_S = 15.0


@contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[int]]:
    """``count`` connections to 127.0.0.1:port that send nothing, each re-opened when the node closes it;
    yields a one-item list counting the connections opened."""
    opened = [0]
    stop = threading.Event()

    def hold(source: str) -> None:
        while not stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
            except OSError:
                time.sleep(0.05)
                continue
            opened[0] += 1
            sock.settimeout(0.2)
            try:
                while not stop.is_set():
                    try:
                        if sock.recv(1) == b"":
                            break  # closed by the node
                    except TimeoutError:
                        continue
                    except OSError:
                        break
            finally:
                sock.close()

    threads = [threading.Thread(target=hold, args=(SOURCES[i % 2],), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every slot taken before the peer calls
    try:
        yield opened
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def _echo(port: int, *tls: str, calling_ae: str = PEER_AE) -> subprocess.CompletedProcess:
    command = ["echoscu", "-to", "5", "-aet", calling_ae, "-aec", "MYOMAP", *tls, "127.0.0.1", str(port)]
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=30, check=False)


def _echo_throughout(port: int, *tls: str) -> tuple[int, list[str]]:
    calls, failures = 0, []
    deadline = time.monotonic() + DURATION_S
    while time.monotonic() < deadline:
        started = time.monotonic()
        done = _echo(port, *tls)
        calls += 1
        if done.returncode != 0:
            failures.append(f"after {started:.1f}: {done.stdout}{done.stderr}"[-300:])
        time.sleep(0.3)
    return calls, failures


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _peer_node(node_factory: Callable[..., RunningNode], **dicom: object) -> RunningNode:
    return node_factory(
        dicom={"max_associations": 16, **dicom},
        peers=[{"ae_title": PEER_AE, "host": "127.0.0.1", "port": 104}],
    )


def test_idle_connections_do_not_lock_out_a_configured_peer(node_factory: Callable[..., RunningNode]) -> None:
    node = _peer_node(node_factory)
    with idle_connections(node.port, IDLE_CONNECTIONS) as opened:
        calls, failures = _echo_throughout(node.port)
    assert calls >= 10 and failures == [], failures
    assert opened[0] >= IDLE_CONNECTIONS


def test_idle_connections_do_not_lock_out_a_configured_peer_on_the_mutual_tls_port(
    node_factory: Callable[..., RunningNode], certs: Certificates
) -> None:
    node = _peer_node(node_factory, **node_tls(certs, free_port(), require_client_certificate=True))
    tls_port = node.settings.dicom.tls_port
    client = dcmtk_tls(certs.client_key, certs.client_crt, certs.ca_crt)
    with idle_connections(tls_port, IDLE_CONNECTIONS) as opened:
        calls, failures = _echo_throughout(tls_port, *client)
    assert calls >= 8 and failures == [], failures
    assert opened[0] >= IDLE_CONNECTIONS


def test_a_connection_without_association_request_is_closed_after_the_request_timeout(
    node_factory: Callable[..., RunningNode],
) -> None:
    node = _peer_node(node_factory, request_timeout_s=1.0)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 3.0


def test_unknown_ae_titles_cannot_take_the_slots_kept_for_configured_peers(
    node_factory: Callable[..., RunningNode],
) -> None:
    node = _peer_node(node_factory, max_associations=2, reserved_peer_associations=2)
    held = []
    intruder = AE(ae_title="INTRUDER")
    intruder.add_requested_context("1.2.840.10008.1.1")
    try:
        for _ in range(3):
            held.append(intruder.associate("127.0.0.1", node.port, ae_title="MYOMAP"))
        assert [a.is_established for a in held] == [True, True, False]
        assert _echo(node.port).returncode == 0
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()


def test_a_configured_peers_association_takes_no_slot_of_unknown_callers(
    node_factory: Callable[..., RunningNode],
) -> None:
    node = _peer_node(node_factory, max_associations=2, reserved_peer_associations=2)
    peer = AE(ae_title=PEER_AE)
    peer.add_requested_context("1.2.840.10008.1.1")
    intruder = AE(ae_title="INTRUDER")
    intruder.add_requested_context("1.2.840.10008.1.1")
    held = [peer.associate("127.0.0.1", node.port, ae_title="MYOMAP")]
    try:
        for _ in range(3):
            held.append(intruder.associate("127.0.0.1", node.port, ae_title="MYOMAP"))
        assert [a.is_established for a in held] == [True, True, True, False]
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()


def test_a_large_association_request_gets_through(node_factory: Callable[..., RunningNode]) -> None:
    from pynetdicom.sop_class import _STORAGE_CLASSES

    node = _peer_node(node_factory)
    ae = AE(ae_title=PEER_AE)
    syntaxes = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70",
                "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99"]
    for uid in list(_STORAGE_CLASSES.values())[:127]:
        ae.add_requested_context(uid, syntaxes)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MYOMAP")
    try:
        assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
    finally:
        if assoc.is_established:
            assoc.release()
