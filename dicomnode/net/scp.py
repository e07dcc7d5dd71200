"""The node's Storage SCP: the application entity and a non-blocking server around it."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pynetdicom import AE, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from dicomnode.net.admission import AdmissionLimits, PendingConnections, wait_for_request, wait_for_tls_data
from dicomnode.net.command_set import use_fast_command_sets
from dicomnode.net.handlers import (
    HOLDS_CALLER_SLOT,
    StoreContext,
    handle_association_request,
    handle_echo,
    handle_store,
)
from dicomnode.net.handoff import OWN_PROCESS, PLAIN, TLS, ChildSide, HandOff, OpenConnections, receive_connections
from dicomnode.net.reactor import wait_instead_of_polling
from dicomnode.net.tls import certificate_subject, describe_error, server_context
from dicomnode.sop_classes import (
    NATIVE_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VERIFICATION,
)
from dicomnode.store.assembly import Assembler
from dicomnode.store.inflate import map_large_blocks

LOGGER = logging.getLogger(__name__)

# pynetdicom's association threads poll (1 ms sleeps); :mod:`dicomnode.net.reactor` makes them wait on their socket
# and queues instead. A polling interval of 0.1 ms had lifted a do-nothing handler from about 300 to 450 images/s
# but not the node, whose storing thread lost the interpreter lock to the faster polling; waiting lifts both.

# pynetdicom binds its "standard" logging handlers to every PDU and DIMSE message of an association; for each
# C-STORE request they format a multi-line description (copying the whole received data set once just to say it
# is present), about a tenth of pynetdicom's CPU time per image. They only produce DEBUG lines beyond one INFO
# line per request, which the node's own handler replaces, so they are unbound unless pynetdicom's logger is
# enabled for DEBUG.
STANDARD_LOG_EVENTS = (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT)
PYNETDICOM_HANDLERS_MODULE = "pynetdicom._handlers"
#: The association a connection thread started (noted on EVT_CONN_OPEN, which pynetdicom fires in that thread).
_STARTED = threading.local()


_Server = TypeVar("_Server", bound="GuardedAssociationServer")


def admission_limits(settings: Settings) -> AdmissionLimits:
    """The pending-connection limits of ``settings.dicom``; configured peers' hosts are known addresses."""
    dicom = settings.dicom
    return AdmissionLimits(
        request_timeout_s=dicom.request_timeout_s,
        max_pending=dicom.max_pending_connections,
        max_pending_per_address=dicom.max_pending_per_address,
        peer_hosts=frozenset(peer.host for peer in settings.peers if peer.host),
    )


def make_ae(settings: Settings) -> AE:
    """The application entity with the node's presentation contexts and timeouts.

    Every storage SOP class of a CMR mapping workflow (see :mod:`dicomnode.sop_classes`) is accepted in the native
    syntaxes, Deflated, JPEG Baseline/Extended/Lossless SV1, JPEG-LS, JPEG 2000 and RLE; Verification in the
    native ones. A SOP class not listed is refused by pynetdicom at the presentation context level.
    """
    use_fast_command_sets()
    dicom = settings.dicom
    ae = AE(ae_title=dicom.ae_title)
    # pynetdicom's own limit includes the slots kept for configured peers; handle_association_request keeps
    # callers that are no configured peer within max_associations.
    ae.maximum_associations = dicom.max_associations + dicom.reserved_peer_associations
    ae.maximum_pdu_size = dicom.max_pdu_bytes
    ae.acse_timeout = dicom.acse_timeout_s
    ae.dimse_timeout = dicom.dimse_timeout_s
    ae.network_timeout = dicom.network_timeout_s
    for sop_class_uid in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class_uid, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(VERIFICATION, list(NATIVE_TRANSFER_SYNTAXES))
    return ae


def tune_association(event: Event) -> None:
    """EVT_CONN_OPEN: make this association's threads wait instead of polling (:mod:`dicomnode.net.reactor`) and
    drop pynetdicom's standard logging handlers unless its logger shows DEBUG lines (see ``STANDARD_LOG_EVENTS``).
    The connection's thread, where this runs, notes the association, to wait for its end."""
    assoc = event.assoc
    _STARTED.association = assoc
    wait_instead_of_polling(assoc)
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


class GuardedAssociationServer(ThreadedAssociationServer):
    """A threaded association server that hands a connection to pynetdicom only once its A-ASSOCIATE-RQ is in.

    Until then the connection waits in the shared :class:`~dicomnode.net.admission.PendingConnections` pool in its
    own thread (not an association thread, so pynetdicom does not count it against the association slots), for
    at most ``request_timeout_s``; see :mod:`dicomnode.net.admission`.
    """

    pending: PendingConnections | None = None
    # With several SCP processes (dicomnode.net.handoff): the node's own process accepts and places each connection
    # (``handoff``); a child's servers do not listen (``listens``) and are handed connections. Each connection
    # thread takes its connection off ``open_connections`` when it ends.
    kind = PLAIN
    handoff: HandOff | None = None
    open_connections: OpenConnections | None = None
    process_index = OWN_PROCESS
    listens = True
    # Stopping does not wait for connections still pending: one whose request arrives after the server closed is
    # dropped.
    block_on_close = False
    daemon_threads = True
    _closed = False

    def process_request(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        if self.handoff is not None and self.handoff.place(request, client_address, self.kind):
            return
        super().process_request(request, client_address)

    def process_request_thread(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        _STARTED.association = None
        try:
            self._serve_connection(request, client_address)
        finally:
            association = _STARTED.association
            _STARTED.association = None
            if self.open_connections is not None:
                # pynetdicom runs the association in a thread of its own: the connection is open until it ends.
                if association is not None:
                    association.join()
                    if getattr(association, HOLDS_CALLER_SLOT, False):
                        self.open_connections.stranger_ended(self.process_index)
                self.open_connections.ended(self.process_index)

    def _serve_connection(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        assert self.pending is not None
        deadline = time.monotonic() + self.pending.limits.request_timeout_s
        ticket = self.pending.admit(request, client_address[0])
        try:
            ready = self._await_request(request, client_address, deadline)
        except OSError as error:  # the caller, or the pool making room, closed the connection meanwhile
            LOGGER.debug("connection from %s:%d ended before its request: %s", *client_address[:2], error)
            ready = None
        finally:
            self.pending.release(ticket)
        if ready is None or self._closed:
            (ready or request).close()
            return
        super().process_request_thread(ready, client_address)

    def _await_request(
        self, request: socket.socket, client_address: tuple[str, int], deadline: float
    ) -> socket.socket | None:
        if wait_for_request(request, deadline):
            return request
        if self.pending is not None:
            self.pending.note_closed(client_address[0], "ended or timed out before its request")
        return None

    def server_bind(self) -> None:
        if self.listens:
            super().server_bind()

    def server_activate(self) -> None:
        if self.listens:
            super().server_activate()

    def shutdown(self) -> None:
        if self.listens:
            super().shutdown()
            return
        # No serve_forever loop ran (the connections come from the node's process): nothing to wait for.
        self.server_close()
        self.ae._servers.remove(self)

    def server_close(self) -> None:
        self._closed = True
        super().server_close()


class TLSAssociationServer(GuardedAssociationServer):
    """A guarded association server whose TLS handshake runs in the connection's own thread.

    pynetdicom's server completes the handshake in its accepting thread without a time limit, so one caller
    that connects and sends nothing (a port scanner, a stalled client) would hold up every later caller. Here
    the accepting thread only accepts; each connection's thread has until the request deadline for the handshake
    and the first record of its request, a failure closes that connection with a log line, and the server goes on.
    """

    kind = TLS

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        return self.socket.accept()

    def _await_request(
        self, request: socket.socket, client_address: tuple[str, int], deadline: float
    ) -> socket.socket | None:
        assert self.ssl_context is not None
        host, port = client_address[0], client_address[1]
        timeout_s = request.gettimeout()
        try:
            request.settimeout(max(deadline - time.monotonic(), 0.001))
            tls_socket = self.ssl_context.wrap_socket(request, server_side=True)
            tls_socket.settimeout(timeout_s)
        except (TimeoutError, ConnectionError, ssl.SSLEOFError) as error:
            # Idle, gone, or closed to make room: counted with the other connections that sent no request, so
            # that a flood of them cannot flood the log.
            LOGGER.debug("TLS handshake with %s:%d ended: %s", host, port, describe_error(error))
            if self.pending is not None:
                self.pending.note_closed(host, "ended or timed out in its TLS handshake")
            request.close()
            return None
        except OSError as error:  # ssl.SSLError: a refused certificate, a protocol mismatch
            LOGGER.warning("TLS handshake with %s:%d failed: %s", host, port, describe_error(error))
            request.close()
            return None
        LOGGER.debug(
            "TLS connection from %s:%d (%s, %s), client certificate %s",
            host, port, tls_socket.version(), (tls_socket.cipher() or ("?",))[0],
            certificate_subject(tls_socket.getpeercert()),
        )
        if wait_for_tls_data(tls_socket, deadline):
            return tls_socket
        if self.pending is not None:
            self.pending.note_closed(host, "ended or timed out before its request (TLS)")
        tls_socket.close()
        return None


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
    handoff : HandOff, optional
        The node's process with further SCP processes: each accepted connection is placed on the least busy.
    child : ChildSide, optional
        A further SCP process: nothing listens here; the connections come from the node's process.
    """

    def __init__(
        self, settings: Settings, session_factory: sessionmaker[Session], assembler: Assembler | None,
        *, handoff: HandOff | None = None, child: ChildSide | None = None,
    ):
        if handoff is not None and child is not None:
            raise ValueError("an SCP either places connections (handoff) or is handed them (child), not both")
        self._settings = settings
        self._handoff = handoff
        self._child = child
        self._context = StoreContext(settings=settings, session_factory=session_factory, assembler=assembler)
        self._ae = make_ae(settings)
        self._server: GuardedAssociationServer | None = None
        self._pending = PendingConnections(admission_limits(settings))
        self._tls_server: TLSAssociationServer | None = None
        self.port: int | None = None
        self.tls_port: int | None = None
        self._receiver: threading.Thread | None = None

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
        map_large_blocks()  # keep the process within its inflation budget once associations end
        dicom = self._settings.dicom
        tls_context = server_context(self._settings) if dicom.tls_port else None
        handlers: list[EventHandlerType] = [
            (evt.EVT_CONN_OPEN, tune_association),
            (evt.EVT_REQUESTED, handle_association_request, [self._settings]),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [self._context]),
        ]
        address = (dicom.bind, dicom.port)
        server = self._start_server(address, None, handlers, GuardedAssociationServer)
        self._server = server
        self.port = int(server.server_address[1])
        if self._child is None:
            LOGGER.info("Storage SCP %s listening on %s:%d", dicom.ae_title, address[0], self.port)
        if tls_context is not None:
            try:
                self._tls_server = self._start_server(
                    (dicom.bind, dicom.tls_port), tls_context, handlers, TLSAssociationServer
                )
            except BaseException:
                self.stop()
                raise
            self.tls_port = int(self._tls_server.server_address[1])
            if self._child is None:
                LOGGER.info(
                    "Storage SCP %s listening for DICOM TLS on %s:%d (client certificates %s)",
                    dicom.ae_title, dicom.bind, self.tls_port, _CLIENT_CERTIFICATES[tls_context.verify_mode],
                )
        if self._child is not None:
            self._receiver = threading.Thread(
                target=receive_connections, args=(self._child, self._serve_handed_on), name="ConnectionReceiver",
                daemon=True,
            )
            self._receiver.start()

    def _serve_handed_on(self, kind: str, connection: socket.socket, client_address: tuple[str, int]) -> None:
        server = self._tls_server if kind == TLS else self._server if kind == PLAIN else None
        if server is None:
            raise ValueError(f"no {kind} server in this process")
        server.process_request(connection, client_address)  # starts the connection's thread, as after an accept

    def _start_server(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext | None,
        handlers: list[EventHandlerType],
        server_class: type[_Server],
    ) -> _Server:
        # As AE.start_server(block=False) does, with a server class of the node's (pynetdicom's documented
        # make_server(server_class=...) hook). make_server's return type also allows its default class.
        placing: dict[str, object] = {}
        if self._handoff is not None:
            placing = {"handoff": self._handoff, "open_connections": self._handoff.open_connections}
        elif self._child is not None:
            placing = {"listens": False, "open_connections": self._child.open_connections,
                       "process_index": self._child.index}
        if placing:  # class attributes, set before make_server binds (or, in a child, does not bind) the socket
            server_class = cast(type[_Server], type(server_class.__name__, (server_class,), placing))
        server = cast(
            _Server,
            self._ae.make_server(address, ssl_context=context, evt_handlers=handlers, server_class=server_class),
        )
        server.pending = self._pending
        if server.listens:
            name = "TLSAcceptorServer" if context is not None else "AcceptorServer"
            threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
        self._ae._servers.append(server)  # so that AE.shutdown() and server.shutdown() know it, as pynetdicom's own
        return server

    def stop(self) -> None:
        """Stop listening and end the open associations."""
        if self._server is None:
            return
        if self._child is not None:  # no more connections from the node's process
            with contextlib.suppress(OSError):
                self._child.channel.shutdown(socket.SHUT_RDWR)
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
