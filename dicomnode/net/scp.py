"""The node's Storage SCP: the application entity and a non-blocking server around it."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from dicomnode.net.handlers import StoreContext, handle_association_request, handle_echo, handle_store
from dicomnode.net.tls import certificate_subject, describe_error, server_context
from dicomnode.sop_classes import (
    NATIVE_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VERIFICATION,
)
from dicomnode.store.assembly import Assembler

LOGGER = logging.getLogger(__name__)

# pynetdicom's own loops are left as they are. Its DUL thread sleeps ``_run_loop_delay`` (1 ms) whenever a pass
# over its socket and queues found nothing, and the association thread sleeps 1 ms between looks for a decoded
# message; a C-STORE waits on them about three times. Setting the DUL delay to 0.1 ms (the knob the pynetdicom
# maintainers name, issues #120 and #650) lifts a do-nothing handler from about 300 to 450 images/s, but made no
# difference to the node (134 vs 136 images/s, benchmarks/bench_ingest_profile.py on 2 cores): the faster
# polling thread takes the GIL from the storing thread at each of its system calls. It also costs about a fifth
# of a core per idle association, so it is not used.

# pynetdicom binds its "standard" logging handlers to every PDU and DIMSE message of an association; for each
# C-STORE request they format a multi-line description (copying the whole received data set once just to say it
# is present), about a tenth of pynetdicom's CPU time per image. They only produce DEBUG lines beyond one INFO
# line per request, which the node's own handler replaces, so they are unbound unless pynetdicom's logger is
# enabled for DEBUG.
STANDARD_LOG_EVENTS = (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT)
PYNETDICOM_HANDLERS_MODULE = "pynetdicom._handlers"


def make_ae(settings: Settings) -> AE:
    """The application entity with the node's presentation contexts and timeouts.

    Every storage SOP class of a CMR mapping workflow (see :mod:`dicomnode.sop_classes`) is accepted in the native
    syntaxes, Deflated, JPEG Baseline/Extended/Lossless SV1, JPEG-LS, JPEG 2000 and RLE; Verification in the
    native ones. A SOP class not listed is refused by pynetdicom at the presentation context level.
    """
    dicom = settings.dicom
    ae = AE(ae_title=dicom.ae_title)
    ae.maximum_associations = dicom.max_associations
    ae.maximum_pdu_size = dicom.max_pdu_bytes
    ae.acse_timeout = dicom.acse_timeout_s
    ae.dimse_timeout = dicom.dimse_timeout_s
    ae.network_timeout = dicom.network_timeout_s
    for sop_class_uid in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class_uid, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(VERIFICATION, list(NATIVE_TRANSFER_SYNTAXES))
    return ae


def tune_association(event: Event) -> None:
    """EVT_CONN_OPEN: drop pynetdicom's standard logging handlers of this association unless its logger shows
    DEBUG lines (see ``STANDARD_LOG_EVENTS``)."""
    assoc = event.assoc
    if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        return
    for event_type in STANDARD_LOG_EVENTS:
        # Notification events (all of STANDARD_LOG_EVENTS) keep a list of (handler, args); get_handlers is typed
        # for intervention events too, whose single pair is not a list.
        bound = cast(list[tuple[Callable[..., Any], list[Any] | None]], assoc.get_handlers(event_type))
        for handler, _args in list(bound):
            if getattr(handler, "__module__", "") == PYNETDICOM_HANDLERS_MODULE:
                assoc.unbind(event_type, handler)


_CLIENT_CERTIFICATES = {
    ssl.CERT_REQUIRED: "required",
    ssl.CERT_OPTIONAL: "checked when presented",
    ssl.CERT_NONE: "not asked for",
}


class TLSAssociationServer(ThreadedAssociationServer):
    """A threaded association server whose TLS handshake runs in the connection's own thread.

    pynetdicom's server completes the handshake in its accepting thread without a time limit, so one caller
    that connects and sends nothing (a port scanner, a stalled client) would hold up every later caller. Here
    the accepting thread only accepts; each connection's thread has ``handshake_timeout_s`` for the handshake, a
    failure closes that connection with a log line, and the server goes on.
    """

    handshake_timeout_s: float = 30.0
    # Stopping does not wait for handshakes still under way: a connection whose handshake ends after the server
    # closed is dropped.
    block_on_close = False
    daemon_threads = True
    _closed = False

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        return self.socket.accept()

    def process_request_thread(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        assert self.ssl_context is not None
        host, port = client_address[0], client_address[1]
        timeout_s = request.gettimeout()
        try:
            request.settimeout(self.handshake_timeout_s)
            tls_socket = self.ssl_context.wrap_socket(request, server_side=True)
            tls_socket.settimeout(timeout_s)
        except OSError as error:  # ssl.SSLError, a timeout, or the caller closing the connection
            LOGGER.warning("TLS handshake with %s:%d failed: %s", host, port, describe_error(error))
            request.close()
            return
        if self._closed:
            tls_socket.close()
            return
        LOGGER.debug(
            "TLS connection from %s:%d (%s, %s), client certificate %s",
            host, port, tls_socket.version(), (tls_socket.cipher() or ("?",))[0],
            certificate_subject(tls_socket.getpeercert()),
        )
        super().process_request_thread(tls_socket, client_address)

    def server_close(self) -> None:
        self._closed = True
        super().server_close()


class StorageSCP:
    """A C-ECHO/C-STORE server on ``settings.dicom.bind``:``settings.dicom.port`` (0 picks a free port).

    With ``settings.dicom.tls_port`` set, a second server on that port speaks DICOM TLS (:mod:`dicomnode.net.tls`)
    with the same handlers, hence the same checks of the calling AE title and host.

    The assembler's lifecycle stays with the caller: start it before the SCP so that the instances this server
    stores are assembled (``None`` stores only, e.g. for an import).

    Parameters
    ----------
    settings : Settings
    session_factory : sessionmaker
    assembler : Assembler or None
    """

    def __init__(
        self, settings: Settings, session_factory: sessionmaker[Session], assembler: Assembler | None
    ):
        self._settings = settings
        self._context = StoreContext(settings=settings, session_factory=session_factory, assembler=assembler)
        self._ae = make_ae(settings)
        self._server: ThreadedAssociationServer | None = None
        self._tls_server: TLSAssociationServer | None = None
        self.port: int | None = None
        self.tls_port: int | None = None

    @property
    def ae(self) -> AE:
        return self._ae

    def start(self) -> None:
        """Start listening in background threads and return; ``port`` (and ``tls_port``) hold the bound ports.

        Raises
        ------
        config.settings.TLSFileError
            If the TLS certificate, key or CA file cannot be loaded (nothing is left listening).
        """
        if self._server is not None:
            return
        dicom = self._settings.dicom
        tls_context = server_context(self._settings) if dicom.tls_port else None
        handlers: list[EventHandlerType] = [
            (evt.EVT_CONN_OPEN, tune_association),
            (evt.EVT_REQUESTED, handle_association_request, [self._settings]),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [self._context]),
        ]
        address = (dicom.bind, dicom.port)
        server = self._ae.start_server(address, block=False, evt_handlers=handlers)
        assert server is not None  # start_server returns None only when it blocks (block=True)
        self._server = server
        self.port = int(server.server_address[1])
        LOGGER.info("Storage SCP %s listening on %s:%d", dicom.ae_title, address[0], self.port)
        if tls_context is not None:
            try:
                self._tls_server = self._start_tls_server((dicom.bind, dicom.tls_port), tls_context, handlers)
            except BaseException:
                self.stop()
                raise
            self.tls_port = int(self._tls_server.server_address[1])
            LOGGER.info(
                "Storage SCP %s listening for DICOM TLS on %s:%d (client certificates %s)",
                dicom.ae_title, dicom.bind, self.tls_port, _CLIENT_CERTIFICATES[tls_context.verify_mode],
            )

    def _start_tls_server(
        self, address: tuple[str, int], context: ssl.SSLContext, handlers: list[EventHandlerType]
    ) -> TLSAssociationServer:
        # As AE.start_server(block=False) does, with the server class that moves the handshake off the
        # accepting thread. make_server builds the server_class it is given; its return type also allows
        # its default class.
        server = cast(
            TLSAssociationServer,
            self._ae.make_server(
                address, ssl_context=context, evt_handlers=handlers, server_class=TLSAssociationServer
            ),
        )
        server.handshake_timeout_s = self._settings.dicom.acse_timeout_s
        thread = threading.Thread(target=server.serve_forever, name="TLSAcceptorServer", daemon=True)
        thread.start()
        self._ae._servers.append(server)  # so that AE.shutdown() and server.shutdown() know it, as pynetdicom's own
        return server

    def stop(self) -> None:
        """Stop listening and end the open associations."""
        if self._server is None:
            return
        if self._tls_server is not None:
            self._tls_server.shutdown()
            self._tls_server = None
        self._server.shutdown()
        self._server = None
        LOGGER.info("Storage SCP %s stopped", self._settings.dicom.ae_title)

    def __enter__(self) -> StorageSCP:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
