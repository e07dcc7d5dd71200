"""Throw-away certificates for the DICOM TLS tests, made with the `openssl` command line tool.

:func:`make_certificates` writes into a folder:

- ``ca.crt``/``ca.key``: the test CA;
- ``server.crt``/``server.key``: the node's certificate, from the CA, for 127.0.0.1 and localhost
  (subjectAltName IP:127.0.0.1, DNS:localhost), usable as server and as client certificate (the node presents it
  to the peers it sends to, and a DCMTK storescp presents it as a TLS peer);
- ``client.crt``/``client.key``: a caller's certificate (CN ``console``) from the CA;
- ``other-ca.crt``/``other-ca.key`` and ``other.crt``/``other.key``: another CA and a certificate from it, for
  the same names, which the node must refuse.

RSA 2048 keys and SHA-256 signatures: what DCMTK's default BCP 195 profile accepts.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
VALID_DAYS = 2
LEAF_EXTENSIONS = (
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature, keyEncipherment\n"
    "extendedKeyUsage = serverAuth, clientAuth\n"
    "subjectKeyIdentifier = hash\n"
    "authorityKeyIdentifier = keyid, issuer\n"
)


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files :func:`make_certificates` wrote."""

    ca_crt: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    other_ca_crt: Path
    other_crt: Path
    other_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str, common_name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", str(VALID_DAYS),
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/O=myomap tests/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )


def _leaf(folder: Path, name: str, common_name: str, ca: str, alt_names: str) -> None:
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/O=myomap tests/CN={common_name}", cwd=folder,
    )
    extensions = folder / f"{name}.ext"
    extensions.write_text(LEAF_EXTENSIONS + f"subjectAltName = {alt_names}\n")
    _openssl(
        "x509", "-req", "-sha256", "-days", str(VALID_DAYS), "-in", f"{name}.csr",
        "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-set_serial", f"0x{secrets.token_hex(8)}",
        "-extfile", extensions.name, "-out", f"{name}.crt",
        cwd=folder,
    )
    (folder / f"{name}.key").chmod(0o600)


def make_certificates(folder: Path) -> Certificates:
    """Write a CA, server, client and other-CA certificates with their keys into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    loopback = "IP:127.0.0.1, DNS:localhost"
    _ca(folder, "ca", "myomap test CA")
    _leaf(folder, "server", "localhost", "ca", loopback)
    _leaf(folder, "client", "console", "ca", "DNS:console")
    _ca(folder, "other-ca", "another CA")
    _leaf(folder, "other", "localhost", "other-ca", loopback)
    return Certificates(
        ca_crt=folder / "ca.crt",
        server_crt=folder / "server.crt",
        server_key=folder / "server.key",
        client_crt=folder / "client.crt",
        client_key=folder / "client.key",
        other_ca_crt=folder / "other-ca.crt",
        other_crt=folder / "other.crt",
        other_key=folder / "other.key",
    )


def node_tls(certs: Certificates, tls_port: int, *, require_client_certificate: bool = False) -> dict[str, object]:
    """The ``[dicom]`` keys of a node with a TLS listener on ``tls_port`` presenting the server certificate."""
    return {
        "tls_port": tls_port,
        "tls_certificate": str(certs.server_crt),
        "tls_private_key": str(certs.server_key),
        "tls_ca": str(certs.ca_crt),
        "tls_require_client_certificate": require_client_certificate,
    }


def dcmtk_tls(key: Path | None, certificate: Path | None, ca: Path) -> list[str]:
    """DCMTK's TLS options: present ``certificate`` (anonymous TLS without one) and trust the CAs in ``ca``."""
    identity = ["+tls", str(key), str(certificate)] if certificate is not None else ["+tla"]
    return [*identity, "+cf", str(ca)]
