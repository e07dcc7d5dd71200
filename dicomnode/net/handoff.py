"""Accepted connections placed on the least busy of the node's Storage SCP processes.

The node's own process accepts every connection on its DICOM ports (plain and TLS). Each goes to whichever SCP
process, the node's own included, has the fewest connections open; a child gets the connection's descriptor over a
Unix SEQPACKET socket (SCM_RIGHTS) and serves it as if it had accepted it (admission checks, TLS handshake,
association). Spreading by the kernel instead (every process listening with SO_REUSEPORT, connections hashed by
address) put three of four simultaneous associations on one process as often as not, leaving a core idle.

The counts live in shared memory: the accepting process adds one to the chosen process's count as it places the
connection, and the process serving it takes one away when the connection's association has ended. Beside them,
each process counts its associations of callers that are no configured peer, so that ``[dicom] max_associations``
holds for the whole node however the associations are spread.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Protocol

LOGGER = logging.getLogger(__name__)

#: Which of a process's servers takes a handed-on connection.
PLAIN = "dicom"
TLS = "tls"
_MESSAGE_BYTES = 512
OWN_PROCESS = 0


class OpenConnections:
    """Connections open per SCP process (index 0: the node's own process), and associations of callers that are no
    configured peer per process, shared by all of them: ``counts`` holds the connections of the ``processes``
    processes, then their callers' associations (2 x processes; :func:`shared_counts`)."""

    def __init__(self, counts: SynchronizedArray[int]) -> None:
        if len(counts) % 2:
            raise ValueError(f"counts must hold two numbers per process, got {len(counts)}")
        self._counts = counts

    @property
    def shared(self) -> SynchronizedArray[int]:
        """The shared array, to pass to a child process."""
        return self._counts

    @property
    def processes(self) -> int:
        return len(self._counts) // 2

    def admit_stranger(self, index: int, limit: int) -> bool:
        """Count an association of a caller that is no configured peer on process ``index``, unless the node
        already holds ``limit`` of them (False)."""
        with self._counts.get_lock():
            if self._strangers() >= limit:
                return False
            self._counts[self.processes + index] += 1
            return True

    def stranger_ended(self, index: int) -> None:
        """An association counted by :meth:`admit_stranger` on process ``index`` ended."""
        slot = self.processes + index
        with self._counts.get_lock():
            self._counts[slot] = max(self._counts[slot] - 1, 0)

    def strangers(self) -> int:
        """Associations of callers that are no configured peer, open on the whole node."""
        with self._counts.get_lock():
            return self._strangers()

    def _strangers(self) -> int:
        return sum(self._counts[slot] for slot in range(self.processes, len(self._counts)))

    def take_least_busy(self, usable: Callable[[int], bool]) -> int:
        """The index of the usable process with the fewest open connections (the node's own on a tie), counted
        as holding one more."""
        with self._counts.get_lock():
            candidates = [index for index in range(self.processes) if index == OWN_PROCESS or usable(index)]
            chosen = min(candidates, key=lambda index: (self._counts[index], index))
            self._counts[chosen] += 1
            return chosen

    def move(self, from_index: int, to_index: int) -> None:
        """Count a connection placed on ``from_index`` on ``to_index`` instead (its hand-off failed)."""
        with self._counts.get_lock():
            self._counts[from_index] = max(self._counts[from_index] - 1, 0)
            self._counts[to_index] += 1

    def ended(self, index: int) -> None:
        """A connection of process ``index`` ended."""
        with self._counts.get_lock():
            self._counts[index] = max(self._counts[index] - 1, 0)

    def reset(self, index: int) -> None:
        """Process ``index`` was restarted: the connections and associations it held ended with it."""
        with self._counts.get_lock():
            self._counts[index] = 0
            self._counts[self.processes + index] = 0

    def snapshot(self) -> list[int]:
        """Connections open per process."""
        with self._counts.get_lock():
            return [self._counts[index] for index in range(self.processes)]


def shared_counts(processes: int, context: BaseContext) -> OpenConnections:
    """Zeroed counts of ``processes`` processes in shared memory of ``context`` (one that can pass it on)."""
    return OpenConnections(context.Array("i", 2 * processes))


class Channels(Protocol):
    """The Unix sockets to the children, by process index (None while that child is down)."""

    def __call__(self, index: int) -> socket.socket | None: ...


class HandOff:
    """The accepting process's side: place each accepted connection here or on a child.

    Parameters
    ----------
    open_connections : OpenConnections
    channels : callable
        The parent's end of each child's Unix socket, by process index (1 up).
    """

    def __init__(self, open_connections: OpenConnections, channels: Channels) -> None:
        self.open_connections = open_connections
        self._channels = channels

    def place(self, connection: socket.socket, client_address: tuple[str, int], kind: str) -> bool:
        """Hand ``connection`` to the least busy child and close it here (True), or count it on this process and
        leave it to the caller (False)."""
        index = self.open_connections.take_least_busy(lambda i: self._channels(i) is not None)
        if index == OWN_PROCESS:
            return False
        channel = self._channels(index)
        message = f"{kind} {client_address[0]} {client_address[1]}".encode()
        try:
            if channel is None:
                raise ConnectionError("the process is down")
            socket.send_fds(channel, [message], [connection.fileno()])
        except OSError as error:  # the child died meanwhile; it is restarted by its supervisor
            LOGGER.warning("Storage SCP process %d cannot take a connection (%s): served here", index, error)
            self.open_connections.move(index, OWN_PROCESS)
            return False
        connection.close()  # the child holds its own descriptor of it now
        return True


@dataclass(frozen=True)
class ChildSide:
    """What a child SCP process receives connections through: its end of the channel, the shared counts and its
    index in them."""

    channel: socket.socket
    open_connections: OpenConnections
    index: int


def receive_connections(child: ChildSide, serve: Callable[[str, socket.socket, tuple[str, int]], None]) -> None:
    """A child's side: serve each connection the node's process hands on, until the channel closes.

    ``serve(kind, connection, client_address)`` starts serving it (on the server of that kind, whose connection
    thread counts it as ended) and returns.
    """
    channel = child.channel
    while True:
        try:
            message, descriptors, _flags, _address = socket.recv_fds(channel, _MESSAGE_BYTES, 1)
        except OSError:
            return
        if not message and not descriptors:
            return  # the node's process closed its end
        if not descriptors:
            continue
        connection = socket.socket(fileno=descriptors[0])
        try:
            kind, host, port = message.decode().split(" ")
            serve(kind, connection, (host, int(port)))
        except Exception:
            LOGGER.exception("a handed-on connection could not be served")
            connection.close()
            child.open_connections.ended(child.index)
