"""DICOM TLS contexts: built from the settings' files, TLS 1.2 minimum, who trusts whom in a real handshake, and
the node's SCP and SCU over TLS with pynetdicom on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Peer, Settings, TLSFileError, load_settings
from db.models import Base, Instance
from db.session import make_engine, make_session_factory
from dicomnode.net import scu, tls
from dicomnode.net.routing import Destination
from dicomnode.net.scp import StorageSCP
from tests.dicom_builders import mr_image, write_part10
from tests.integration.tls_certs import Certificates, make_certificates

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _settings(certs: Certificates, *, peer: dict[str, Any] | None = None, **dicom: Any) -> Settings:
    values: dict[str, Any] = {
        "tls_port": 2762,
        "tls_certificate": str(certs.server_crt),
        "tls_private_key": str(certs.server_key),
        "tls_ca": str(certs.ca_crt),
        **dicom,
    }
    peers = [{"ae_title": "PACS", "host": LOOPBACK, "port": 104, "tls": True, **(peer or {})}]
    return load_settings(dicom=values, peers=peers)


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str = LOOPBACK
) -> tuple[OSError | None, OSError | None]:
    """A TLS handshake and one round trip over a socket pair; (server's error, client's error)."""
    server_end, client_end = socket.socketpair()
    server_end.settimeout(5)
    client_end.settimeout(5)
    errors: dict[str, OSError] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(server_end, server_side=True) as tls_socket:
                tls_socket.sendall(b"ok")
        except OSError as error:
            errors["server"] = error

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_end, server_hostname=server_hostname) as tls_socket:
            # With TLS 1.3 the server judges the client's certificate after the client's handshake: its verdict
            # comes with the first read.
            assert tls_socket.recv(2) == b"ok"
    except OSError as error:
        errors["client"] = error
    finally:
        thread.join(10)
        server_end.close()
        client_end.close()
    return errors.get("server"), errors.get("client")


def test_server_context_from_files(certs: Certificates) -> None:
    context = tls.server_context(_settings(certs, tls_ca="", peer={"tls": False}))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE  # no CA: callers' certificates are not asked for
    assert tls.server_context(_settings(certs)).verify_mode is ssl.CERT_OPTIONAL
    mutual = tls.server_context(_settings(certs, tls_require_client_certificate=True))
    assert mutual.verify_mode is ssl.CERT_REQUIRED
    # Only the configured CA is trusted for client certificates, not the system's public CAs.
    assert [dict(c["subject"][1])["commonName"] for c in mutual.get_ca_certs()] == ["myomap test CA"]


def test_client_context_checks_the_peer_and_its_name(certs: Certificates) -> None:
    settings = _settings(certs)
    client = tls.client_context(settings, settings.peers[0])
    assert client.minimum_version is ssl.TLSVersion.TLSv1_2
    assert client.verify_mode is ssl.CERT_REQUIRED and client.check_hostname
    assert tls.server_hostname(settings.peers[0], "10.1.2.3") == "10.1.2.3"
    server = tls.server_context(settings)
    assert _handshake(server, client) == (None, None)

    # A name the server's certificate does not carry.
    named = _settings(certs, peer={"tls_server_name": "pacs.example.org"})
    assert tls.server_hostname(named.peers[0], LOOPBACK) == "pacs.example.org"
    client = tls.client_context(named, named.peers[0])
    _, client_error = _handshake(server, client, "pacs.example.org")
    assert isinstance(client_error, ssl.SSLCertVerificationError)
    assert tls.describe_error(client_error).startswith("certificate verify failed: Hostname mismatch")
    # ... accepted only when hostname checking is turned off explicitly.
    unchecked = _settings(certs, peer={"tls_check_hostname": False})
    assert _handshake(server, tls.client_context(unchecked, unchecked.peers[0]), "pacs.example.org") == (None, None)


def test_a_server_certificate_from_another_ca_is_refused_and_recorded(certs: Certificates) -> None:
    node = _settings(certs)
    other_server = _settings(certs, tls_certificate=str(certs.other_crt), tls_private_key=str(certs.other_key))
    client = tls.client_context(node, node.peers[0])
    _, client_error = _handshake(tls.server_context(other_server), client)
    assert isinstance(client_error, ssl.SSLCertVerificationError)
    assert tls.handshake_error(client) is client_error  # kept for the transfer's last_error
    assert "unable to get local issuer certificate" in tls.describe_error(client_error)
    # A per-peer CA bundle replaces [dicom] tls_ca for that peer.
    per_peer = _settings(certs, peer={"tls_ca": str(certs.other_ca_crt)})
    assert _handshake(tls.server_context(other_server), tls.client_context(per_peer, per_peer.peers[0])) == (
        None,
        None,
    )


def test_mutual_tls_needs_a_client_certificate_from_the_ca(certs: Certificates) -> None:
    server = tls.server_context(_settings(certs, tls_require_client_certificate=True))
    # The node as a client presents its own certificate: accepted.
    node = _settings(certs)
    assert _handshake(server, tls.client_context(node, node.peers[0])) == (None, None)
    # No certificate, or one from another CA: the server refuses.
    for certificate, key in ((None, None), (certs.other_crt, certs.other_key)):
        client = ssl.create_default_context(cafile=certs.ca_crt)
        if certificate is not None:
            client.load_cert_chain(certificate, key)
        server_error, client_error = _handshake(server, client)
        assert isinstance(server_error, ssl.SSLError), certificate
        assert client_error is not None, certificate


def test_tls_below_1_2_is_refused(certs: Certificates) -> None:
    server = tls.server_context(_settings(certs))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(certs.ca_crt)
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # a client that would take anything, so the version decides
    with warnings.catch_warnings():  # the old versions are deprecated in Python's ssl, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        client.maximum_version = ssl.TLSVersion.TLSv1_1
    server_error, client_error = _handshake(server, client)
    assert isinstance(server_error, ssl.SSLError) and server_error.reason == "UNSUPPORTED_PROTOCOL"
    assert client_error is not None


def test_missing_or_unloadable_files_give_clear_errors(certs: Certificates, tmp_path: Path) -> None:
    certificate = tmp_path / "node.crt"
    shutil.copy(certs.server_crt, certificate)
    settings = _settings(certs, tls_certificate=str(certificate))
    certificate.unlink()  # removed after the settings were validated
    with pytest.raises(TLSFileError, match=r"TLS certificate .*node\.crt does not exist"):
        tls.server_context(settings)
    with pytest.raises(TLSFileError, match=r"node\.crt does not exist"):
        tls.client_context(settings, settings.peers[0])  # the node presents its certificate to peers too
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    peer = Peer(ae_title="PACS", host=LOOPBACK, tls=True)
    peer.tls_ca = str(not_pem)  # not validated on assignment
    with pytest.raises(TLSFileError, match=r"cannot load TLS CA file .*not\.pem"):
        tls.client_context(_settings(certs), peer)


def test_certificate_subject() -> None:
    certificate = {"subject": ((("organizationName", "Hospital"),), (("commonName", "pacs"),))}
    assert tls.certificate_subject(certificate) == "O=Hospital, CN=pacs"
    assert tls.certificate_subject({}) == "none"


@pytest.fixture
def session_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def test_scp_and_scu_over_tls(certs: Certificates, tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = load_settings(
        dicom={
            "bind": LOOPBACK, "port": 0, "tls_port": _free_port(), "tls_certificate": str(certs.server_crt),
            "tls_private_key": str(certs.server_key), "tls_ca": str(certs.ca_crt),
            "tls_require_client_certificate": True, "acse_timeout_s": 5.0,
        },
        storage={"path": tmp_path / "storage", "min_free_mb": 0},
    )
    scp = StorageSCP(settings, session_factory, None)
    scp.start()
    try:
        assert scp.tls_port == settings.dicom.tls_port and scp.port not in (None, scp.tls_port)
        # The node's SCU sends over TLS to its own TLS port, presenting its certificate.
        path = write_part10(mr_image(description="LOCALIZER"), tmp_path / "out" / "1.dcm")
        peer = Peer(ae_title="MYOMAP", host=LOOPBACK, port=scp.tls_port, tls=True)
        destination = Destination("MYOMAP", LOOPBACK, scp.tls_port)
        tls_args = (tls.client_context(settings, peer), tls.server_hostname(peer, LOOPBACK))
        outcomes = scu.send_files(destination, [path], calling_ae="SENDER", tls_args=tls_args)
        assert outcomes[path].stored, outcomes[path].error
        with session_factory() as session:
            assert session.scalar(select(func.count()).select_from(Instance)) == 1

        # A plain association to the TLS port fails; the plain port still answers, and so does the TLS port.
        ae = AE(ae_title="PLAIN")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 5
        assoc = ae.associate(LOOPBACK, scp.tls_port, ae_title="MYOMAP")
        assert not assoc.is_established
        assoc = ae.associate(LOOPBACK, scp.port, ae_title="MYOMAP")
        assert assoc.is_established
        assoc.release()

        # A peer whose certificate is from another CA: the failed handshake is the transfer's error.
        other = load_settings(
            dicom={"tls_certificate": str(certs.other_crt), "tls_private_key": str(certs.other_key),
                   "tls_ca": str(certs.other_ca_crt)},
        )
        rejected = (tls.client_context(other, peer), LOOPBACK)
        outcomes = scu.send_files(destination, [path], calling_ae="SENDER", tls_args=rejected)
        assert not outcomes[path].stored
        assert outcomes[path].error.startswith(f"TLS handshake with {destination} failed: certificate verify")
        outcomes = scu.send_files(destination, [path], calling_ae="SENDER", tls_args=tls_args)
        assert outcomes[path].stored, outcomes[path].error  # the TLS listener kept serving
    finally:
        scp.stop()
    with socket.socket() as sock:  # both listeners closed
        assert sock.connect_ex((LOOPBACK, settings.dicom.tls_port)) != 0



def test_the_scu_uses_tls_for_the_peers_configured_so(certs: Certificates) -> None:
    settings = load_settings(
        dicom={"tls_ca": str(certs.ca_crt)},
        peers=[{"ae_title": "PACS", "host": "10.0.0.2", "tls": True}, {"ae_title": "CONSOLE", "host": "10.0.0.5"}],
    )
    context, hostname = scu._tls_args(settings, Destination("PACS", "10.0.0.2", 104))
    assert isinstance(context, tls.ClientContext) and hostname == "10.0.0.2"
    assert [dict(c["subject"][1])["commonName"] for c in context.get_ca_certs()] == ["myomap test CA"]
    assert scu._tls_args(settings, Destination("CONSOLE", "10.0.0.5", 104)) is None
    assert scu._tls_args(settings, Destination("UNKNOWN", "10.0.0.9", 104)) is None
