"""DICOM TLS (PS3.15 B.1, Basic TLS Secure Transport Connection Profile): ssl contexts built from the settings.

Both sides speak TLS 1.2 or later with the cipher suites Python's ssl module chooses by default (all
forward-secret, AES-GCM and ChaCha20 first; no RC4, 3DES, SHA-1 or export suites), which include those of DCMTK's
default BCP 195 profile.

- The server side (the node's TLS listener) presents ``[dicom] tls_certificate``; a caller's certificate is
  checked against ``[dicom] tls_ca`` when it presents one, and is required with
  ``tls_require_client_certificate``. Only the configured CA file is trusted, never the system store: a
  certificate from a public CA identifies no hospital peer.
- The client side (sending to a ``[[peers]]`` entry with ``tls = true``) checks the peer's certificate against
  the peer's ``tls_ca`` or ``[dicom] tls_ca``, and its name against ``tls_server_name`` or the peer's host
  unless ``tls_check_hostname = false``; it presents the node's own certificate when one is configured.

pynetdicom logs and swallows the error of a failed client handshake; :func:`client_context` returns a context
whose sockets keep it, for :func:`handshake_error` to tell the transfer why nothing was sent.
"""

from __future__ import annotations

import ssl
from typing import Any

from config.settings import Peer, Settings, load_ca_bundle, load_certificate_chain

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(settings: Settings) -> ssl.SSLContext:
    """The context of the node's TLS listener.

    Raises
    ------
    config.settings.TLSFileError
        If the certificate, key or CA file is missing or cannot be loaded (a ValueError).
    """
    dicom = settings.dicom
    # Not ssl.create_default_context: for client authentication it would trust the system's public CAs.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    load_certificate_chain(context, dicom.tls_certificate, dicom.tls_private_key)
    if dicom.tls_ca:
        load_ca_bundle(context, dicom.tls_ca)
        # Without mutual TLS a caller may still present a certificate; a bad one fails the handshake.
        context.verify_mode = ssl.CERT_REQUIRED if dicom.tls_require_client_certificate else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


class _RecordingSocket(ssl.SSLSocket):
    """An SSLSocket that keeps the first TLS failure on its context (see :class:`ClientContext`)."""

    context: ClientContext

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as error:  # ssl.SSLError, or the peer closing or resetting the connection mid-handshake
            self.context.note_error(error)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        # With TLS 1.3 a server refuses the client's certificate after the client's handshake is done: the
        # alert arrives with the first read.
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as error:
            self.context.note_error(error)
            raise


class ClientContext(ssl.SSLContext):
    """A client context whose sockets record the first handshake failure in ``handshake_error``."""

    sslsocket_class = _RecordingSocket
    handshake_error: OSError | None = None

    def note_error(self, error: OSError) -> None:
        if self.handshake_error is None:
            self.handshake_error = error


def client_context(settings: Settings, peer: Peer) -> ClientContext:
    """A fresh context for one association with ``peer`` (certificates renewed on disk apply at the next send).

    Raises
    ------
    config.settings.TLSFileError
        If the CA file, or the node's certificate or key, is missing or cannot be loaded (a ValueError).
    ValueError
        If neither the peer nor ``[dicom]`` names a CA file.
    """
    dicom = settings.dicom
    ca = peer.tls_ca or dicom.tls_ca
    if not ca:
        raise ValueError(f"peer {peer.ae_title} has no tls_ca and [dicom] tls_ca is empty")
    context = ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and hostname checking
    context.minimum_version = MINIMUM_VERSION
    context.check_hostname = peer.tls_check_hostname
    load_ca_bundle(context, ca)
    if dicom.tls_certificate and dicom.tls_private_key:
        load_certificate_chain(context, dicom.tls_certificate, dicom.tls_private_key)
    return context


def server_hostname(peer: Peer, host: str) -> str:
    """The name the peer's certificate must carry: ``tls_server_name``, else the host the node connects to."""
    return peer.tls_server_name or host


def handshake_error(context: ssl.SSLContext) -> OSError | None:
    """The first TLS failure of a :class:`ClientContext`'s sockets, if any (None for other contexts)."""
    return getattr(context, "handshake_error", None)


def describe_error(error: OSError) -> str:
    """A one-line reason for a TLS failure, without OpenSSL's source locations."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason.replace("_", " ").lower()
    return str(error) or type(error).__name__


def certificate_subject(certificate: dict[str, Any] | None) -> str:
    """``CN=..., O=...`` of a certificate as :meth:`ssl.SSLSocket.getpeercert` returns it; ``none`` without one."""
    if not certificate:
        return "none"
    return ", ".join(
        f"{_SHORT_NAMES.get(name, name)}={value}" for rdn in certificate.get("subject", ()) for name, value in rdn
    )


_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}
