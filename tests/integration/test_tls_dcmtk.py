"""DICOM TLS against DCMTK (built with OpenSSL): echoscu/storescu to the node's TLS port, mutual TLS refusals,
plain TCP to the TLS port, and the node's SCU sending its maps to a storescp that speaks TLS.

Throw-away certificates (tests/integration/tls_certs.py); everything on 127.0.0.1. Phantom: seed 27, Siemens
flavour, one mid-ventricular slice, one MOLLI series (the variant the seed draws).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import MRImageStorage, ParametricMapStorage
from sqlalchemy import func, select

from db.models import Instance
from tests.dicom_builders import mr_image, write_part10
from tests.integration.conftest import RunningNode
from tests.integration.node_harness import (
    CONSOLE_AE,
    NODE_AE,
    Console,
    NodeProcess,
    dcmtk_env,
    free_port,
    magnitude_files,
    make_phantom,
    parse_storescu_log,
    phantom_sidecar,
    requires_dcmtk,
    serve,
    wait_until,
)
from tests.integration.tls_certs import Certificates, dcmtk_tls, make_certificates, node_tls

pytestmark = [pytest.mark.integration, requires_dcmtk]

PHANTOM_SEED = 27
MAP_CLASSES = (MRImageStorage, ParametricMapStorage)
LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def molli(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    study = make_phantom(tmp_path_factory.mktemp("phantom"), seed=PHANTOM_SEED, sequence="molli")
    record = next(s for s in phantom_sidecar(study)["sequences"] if s["scheme"]["sequence"].startswith("molli"))
    return magnitude_files(study, record["scheme"]["sequence"])


def _dcmtk(tool: str, port: int, *args: str, files: Sequence[Path] = (), called_ae: str = NODE_AE,
           calling_ae: str = CONSOLE_AE) -> subprocess.CompletedProcess:
    """echoscu or storescu (verbose) to 127.0.0.1:port; the finished process, output as text."""
    command = [tool, "-v", "-to", "10", "-aet", calling_ae, "-aec", called_ae, *args, LOOPBACK, str(port),
               *map(str, files)]
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=60, check=False)


def _output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def _instances(node: RunningNode) -> int:
    with node.session_factory() as session:
        return session.scalar(select(func.count()).select_from(Instance)) or 0


# a) echoscu and storescu over TLS; the node makes its maps as over plain TCP.


@pytest.fixture
def tls_port() -> int:
    return free_port()


@pytest.fixture
def tls_node(tmp_path: Path, console: Console, certs: Certificates, tls_port: int) -> Iterator[NodeProcess]:
    yield from serve(tmp_path / "node", console.port, overrides={"dicom": node_tls(certs, tls_port)})


@pytest.mark.slow
def test_echoscu_and_storescu_over_tls_get_maps_back(
    tls_node: NodeProcess, tls_port: int, console: Console, certs: Certificates, molli: list[Path]
) -> None:
    client = dcmtk_tls(certs.client_key, certs.client_crt, certs.ca_crt)
    echo = _dcmtk("echoscu", tls_port, *client)
    assert echo.returncode == 0 and "Received Echo Response (Success)" in _output(echo), _output(echo)

    sent = _dcmtk("storescu", tls_port, *client, files=molli)
    statuses = parse_storescu_log(_output(sent).splitlines())
    assert sent.returncode == 0 and len(statuses) == len(molli), _output(sent)
    assert set(statuses.values()) == {"Success"}

    # One MR map and one Parametric Map of T1 back to the console (plain TCP), as for a plain send.
    wait_until(lambda: len(console.files_of(*MAP_CLASSES)) >= 2, timeout_s=60, what="2 maps at the console")
    transfers = tls_node.wait_delivered(CONSOLE_AE)
    assert {t["state"] for t in transfers} == {"sent"}
    log = tls_node.log()
    assert f"listening for DICOM TLS on {LOOPBACK}:{tls_port}" in log
    assert "client certificate O=myomap tests, CN=console" in log  # the caller's subject, at DEBUG only


# b) mutual TLS refuses callers without a certificate from the node's CA; c) plain TCP to the TLS port fails.


def _tls_running_node(node_factory, certs: Certificates, *, require_client_certificate: bool) -> RunningNode:
    dicom = {**node_tls(certs, free_port(), require_client_certificate=require_client_certificate),
             "acse_timeout_s": 5.0}
    return node_factory(dicom=dicom)


def test_mutual_tls_refuses_callers_without_a_certificate_from_the_ca(
    node_factory, certs: Certificates, tmp_path: Path
) -> None:
    node = _tls_running_node(node_factory, certs, require_client_certificate=True)
    tls_port = node.settings.dicom.tls_port
    image = write_part10(mr_image(description="LOCALIZER"), tmp_path / "one.dcm")

    anonymous = _dcmtk("storescu", tls_port, *dcmtk_tls(None, None, certs.ca_crt), files=[image])
    foreign = _dcmtk("storescu", tls_port, *dcmtk_tls(certs.other_key, certs.other_crt, certs.ca_crt),
                     files=[image])
    for refused in (anonymous, foreign):
        assert refused.returncode != 0, _output(refused)
        assert "Association Accepted" not in _output(refused) and not parse_storescu_log(_output(refused).splitlines())
    assert _instances(node) == 0

    # The node kept serving: the next valid send is stored.
    valid = _dcmtk("storescu", tls_port, *dcmtk_tls(certs.client_key, certs.client_crt, certs.ca_crt), files=[image])
    assert parse_storescu_log(_output(valid).splitlines()) == {image: "Success"}, _output(valid)
    assert _instances(node) == 1


def test_plain_tcp_to_the_tls_port_fails_and_both_ports_keep_serving(
    node_factory, certs: Certificates, tmp_path: Path
) -> None:
    node = _tls_running_node(node_factory, certs, require_client_certificate=False)
    tls_port = node.settings.dicom.tls_port
    image = write_part10(mr_image(description="LOCALIZER"), tmp_path / "one.dcm")

    plain = _dcmtk("storescu", tls_port, files=[image])
    assert plain.returncode != 0 and not parse_storescu_log(_output(plain).splitlines()), _output(plain)
    assert _dcmtk("echoscu", tls_port).returncode != 0
    assert _instances(node) == 0

    # A caller that connects and never starts its handshake holds up no one else.
    with socket.create_connection((LOOPBACK, tls_port)):
        started = time.monotonic()
        # Without mutual TLS a caller may come without a certificate (DCMTK's anonymous TLS).
        echo = _dcmtk("echoscu", tls_port, *dcmtk_tls(None, None, certs.ca_crt))
        assert echo.returncode == 0, _output(echo)
        assert time.monotonic() - started < 5.0
    assert _dcmtk("echoscu", node.port).returncode == 0  # the plain port
    stored = _dcmtk("storescu", node.port, files=[image])
    assert parse_storescu_log(_output(stored).splitlines()) == {image: "Success"}, _output(stored)
    assert _instances(node) == 1


# d) the node's SCU sends to TLS peers, checking their certificates.


@dataclass
class TLSConsole(Console):
    """DCMTK storescp speaking TLS with ``key``/``certificate``, trusting client certificates from ``ca``."""

    ae_title: str = CONSOLE_AE
    key: Path | None = None
    certificate: Path | None = None
    ca: Path | None = None
    #: echoscu's TLS options for the readiness check (the storescp wants a client certificate).
    echo_tls: Sequence[str] = ()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "-aet", self.ae_title, "-od", str(self.folder), "-fe", ".dcm",
             "+tls", str(self.key), str(self.certificate), "+cf", str(self.ca), str(self.port)],
            env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _dcmtk("echoscu", self.port, *self.echo_tls, called_ae=self.ae_title).returncode == 0,
                   timeout_s=10, what=f"storescp {self.ae_title} over TLS")


@pytest.fixture
def tls_consoles(tmp_path: Path, certs: Certificates) -> Iterator[tuple[TLSConsole, TLSConsole]]:
    good = TLSConsole(tmp_path / "console", free_port(), key=certs.server_key, certificate=certs.server_crt,
                      ca=certs.ca_crt, echo_tls=dcmtk_tls(certs.client_key, certs.client_crt, certs.ca_crt))
    # Presents a certificate from another CA (for 127.0.0.1 all the same); it would accept the node's.
    foreign = TLSConsole(tmp_path / "foreign", free_port(), ae_title="FOREIGN", key=certs.other_key,
                         certificate=certs.other_crt, ca=certs.ca_crt,
                         echo_tls=dcmtk_tls(certs.client_key, certs.client_crt, certs.other_ca_crt))
    try:
        good.start()
        foreign.start()
        yield good, foreign
    finally:
        good.stop()
        foreign.stop()


@pytest.mark.slow
def test_maps_go_to_tls_peers_whose_certificate_checks_out(
    tmp_path: Path, tls_consoles: tuple[TLSConsole, TLSConsole], certs: Certificates, molli: list[Path]
) -> None:
    good, foreign = tls_consoles
    # No TLS listener: the node's certificate only authenticates it to the peers (storescp requires one).
    identity = {"tls_certificate": str(certs.server_crt), "tls_private_key": str(certs.server_key),
                "tls_ca": str(certs.ca_crt)}
    node_run = serve(
        tmp_path / "node", good.port,
        overrides={"dicom": identity, "scu": {"max_attempts": 100, "backoff_max_s": 2.0}},
        console_peer={"tls": True},
        peers=[{"ae_title": "FOREIGN", "host": LOOPBACK, "port": foreign.port, "receives": ["maps"], "tls": True}],
    )
    node = next(node_run)
    try:
        sent = _dcmtk("storescu", node.dicom_port, files=molli)  # plain in, TLS out
        assert set(parse_storescu_log(_output(sent).splitlines()).values()) == {"Success"}, _output(sent)

        wait_until(lambda: len(good.files_of(*MAP_CLASSES)) >= 2, timeout_s=60, what="2 maps at the TLS console")
        assert {t["state"] for t in node.wait_delivered(CONSOLE_AE)} == {"sent"}

        def refused() -> bool:
            transfers = node.transfers("FOREIGN")
            return bool(transfers) and all(t["attempts"] >= 2 for t in transfers)

        wait_until(refused, timeout_s=30, interval_s=0.3, what="two attempts of every transfer to FOREIGN")
        for transfer in node.transfers("FOREIGN"):
            assert transfer["state"] == "pending"  # retried with backoff, not given up
            assert transfer["last_error"].startswith(
                f"TLS handshake with FOREIGN@{LOOPBACK}:{foreign.port} failed: certificate verify failed"
            ), transfer["last_error"]
        assert foreign.files() == []
    finally:
        next(node_run, None)  # stops the node, asserting a clean exit
