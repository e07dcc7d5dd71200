"""Admission of TCP connections before their A-ASSOCIATE-RQ: bounded apart from associations, with a deadline.

pynetdicom gives every accepted connection an association thread at once, and counts it against
``maximum_associations`` while it waits (up to the ACSE timeout) for the A-ASSOCIATE-RQ; so connections that never
send one fill every association slot. The node's servers (:mod:`dicomnode.net.scp`) instead hold a new connection in
the :class:`PendingConnections` pool until its whole A-ASSOCIATE-RQ has arrived (:func:`wait_for_request`), and only
then hand it to pynetdicom. The pool:

- closes a connection that has not sent its request within ``request_timeout_s``;
- holds at most ``max_pending_per_address`` connections of one address that is not a configured peer's host: a
  new one from that address makes its oldest give way;
- holds at most ``max_pending_connections`` in all: a new one makes the oldest of an unknown address give way
  (the oldest of all when every pending connection comes from a peer's host).

So nobody is turned away at the door: a caller that sends its request at once (every DICOM client does, within
milliseconds) gets through however many idle connections there are, and idle ones only push each other out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from itertools import count

LOGGER = logging.getLogger(__name__)

A_ASSOCIATE_RQ = 0x01
PDU_HEADER_BYTES = 6
# The largest A-ASSOCIATE-RQ accepted. A real one is a few kB (128 presentation contexts with several transfer
# syntaxes each stay under 40 kB); a larger one is refused, since handing it on unread would let a caller that
# declares a huge request and stalls hold an association slot for the whole ACSE timeout.
MAX_PEEKED_REQUEST_BYTES = 64 * 1024
# Receive buffer asked for each waiting connection, so that the kernel can hold a whole request for peeking.
RECEIVE_BUFFER_BYTES = 256 * 1024
_POLL_PARTIAL_S = 0.02
SUMMARY_INTERVAL_S = 60.0


@dataclass(frozen=True)
class AdmissionLimits:
    """How many connections may wait for their A-ASSOCIATE-RQ, and for how long."""

    request_timeout_s: float
    max_pending: int
    max_pending_per_address: int
    peer_hosts: frozenset[str]


@dataclass
class _Pending:
    fileno: int
    host: str
    known: bool


class PendingConnections:
    """The pool of connections waiting for their A-ASSOCIATE-RQ, shared by the plain and the TLS listener."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._pending: OrderedDict[int, _Pending] = OrderedDict()  # oldest first
        self._ids = count()
        self._lock = threading.Lock()
        self.evicted = 0
        self._closed_since_summary = 0
        self._hosts_since_summary: set[str] = set()
        self._summary_at = -SUMMARY_INTERVAL_S

    def admit(self, sock: socket.socket, host: str) -> int:
        """Take a new connection in, making room by closing older pending ones; returns its ticket."""
        known = host in self.limits.peer_hosts
        entry = _Pending(sock.fileno(), host, known)
        victims = []
        with self._lock:
            if not known:
                same_address = [t for t, p in self._pending.items() if p.host == host]
                while len(same_address) >= self.limits.max_pending_per_address:
                    victims.append(self._pending.pop(same_address.pop(0)))
            while len(self._pending) >= self.limits.max_pending:
                unknown = next((t for t, p in self._pending.items() if not p.known), None)
                victims.append(self._pending.pop(unknown if unknown is not None else next(iter(self._pending))))
            ticket = next(self._ids)
            self._pending[ticket] = entry
            for victim in victims:  # each victim's own thread then sees the end of its connection and logs it
                self.evicted += 1
                _shut_down(victim.fileno)
        return ticket

    def note_closed(self, host: str, why: str) -> None:
        """Log a connection closed before its request: each at DEBUG, and at most one summary a minute at
        WARNING, so that a flood of idle connections cannot flood the log."""
        LOGGER.debug("connection from %s %s: it sent no association request", host, why)
        now = time.monotonic()
        with self._lock:
            self._closed_since_summary += 1
            self._hosts_since_summary.add(host)
            if now - self._summary_at < SUMMARY_INTERVAL_S:
                return
            closed, hosts = self._closed_since_summary, sorted(self._hosts_since_summary)
            self._closed_since_summary, self._hosts_since_summary, self._summary_at = 0, set(), now
        LOGGER.warning(
            "%d connection(s) closed without an association request since the last such line, from %s",
            closed, ", ".join(hosts[:10]) + (f" and {len(hosts) - 10} more" if len(hosts) > 10 else ""),
        )

    def release(self, ticket: int) -> None:
        """The connection's request arrived, or it ended: it no longer counts."""
        with self._lock:
            self._pending.pop(ticket, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


def _shut_down(fileno: int) -> None:
    """Shut the connection down by its descriptor, which wakes its thread wherever it waits (a TLS handshake
    included; the TLS socket then owns the descriptor, so the original socket object cannot be used)."""
    try:
        duplicate = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return  # already closed
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


def wait_for_request(sock: socket.socket, deadline: float) -> bool:
    """Wait until the whole A-ASSOCIATE-RQ PDU is readable on a plain socket, without reading it.

    Returns False when the deadline passes, the caller closes first, or the request declares more than
    :data:`MAX_PEEKED_REQUEST_BYTES`. Anything that is not an A-ASSOCIATE-RQ is handed on as soon as its first
    bytes are in, for pynetdicom to answer as the standard says (an A-ABORT).
    """
    with contextlib.suppress(OSError):  # the default buffer holds any ordinary request
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            return False
        try:
            data = sock.recv(MAX_PEEKED_REQUEST_BYTES, socket.MSG_PEEK)
        except OSError:
            return False
        if not data:
            return False
        if data[0] != A_ASSOCIATE_RQ:
            return True
        if len(data) >= PDU_HEADER_BYTES:
            needed = PDU_HEADER_BYTES + int.from_bytes(data[2:6], "big")
            if needed > MAX_PEEKED_REQUEST_BYTES:
                LOGGER.debug("association request of %d bytes refused (at most %d)", needed, MAX_PEEKED_REQUEST_BYTES)
                return False
            if len(data) >= needed:
                return True
        time.sleep(_POLL_PARTIAL_S)  # part of the request is in: the socket stays readable, so poll gently


def wait_for_tls_data(sock: socket.socket, deadline: float) -> bool:
    """Wait until a TLS connection has application data (the start of its request) to read, without reading it.

    TLS records cannot be peeked at without decrypting, so the request is handed on once its first record is in;
    pynetdicom reads the rest under its ACSE timeout. A TLS caller has already completed a handshake (with a
    certificate under mutual TLS), which idle connections from a scanner of ports do not.
    """
    pending = getattr(sock, "pending", None)
    while True:
        if pending is not None and pending() > 0:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], remaining)
        if readable:
            return True
