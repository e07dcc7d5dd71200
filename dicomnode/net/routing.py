"""Routing: which application entities receive an output the node produced.

A peer receives an output when its ``receives`` list names it. The AE that sent the source series also gets
the outputs listed in ``routing.return_outputs`` when ``routing.return_to_sender`` is set; its port comes from
its ``[[peers]]`` entry (a C-STORE association does not tell the port the sender listens on) and its host from
that entry or, when the entry has none, from the address the association came from.

Output kinds: ``maps``, ``sr``, ``seg``, ``sc`` (the console's Secondary Captures of a map analysis) and
``reader_sc`` (the overlay of a reader's contours scored against the reference: for the archive and readers'
workstations, never for a scanner console unless a site lists it there) and ``pdf`` (a trainee's progress report as
Encapsulated PDF, made after each scored attempt of a trainee).

A console (:func:`is_console`) is where the radiographer waits for the map analysis: the AE that sent the series
(return to sender), or a peer that receives ``sc`` but neither ``sr`` nor ``seg`` (an archive keeps the reports).
Transfers of a map analysis to a console go before other work on the node's queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from config.settings import Output, Peer, Settings

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Destination:
    """A storage SCP the node sends to."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def destinations(
    settings: Settings, *, output: Output, calling_ae: str, calling_host: str
) -> list[Destination]:
    """The destinations of one output of a series received from ``calling_ae`` at ``calling_host``.

    Parameters
    ----------
    settings
        The node's settings (``peers`` and ``routing``).
    output
        The kind of object to send.
    calling_ae, calling_host
        The AE title and the network address the source series came from (empty when unknown).

    Returns
    -------
    list of Destination
        In the order of the ``[[peers]]`` table, the sender last unless it is also a configured receiver;
        without duplicates. Peers that cannot be reached (no host configured and not the sender) are left out
        with a warning.
    """
    output = Output(output)
    calling_ae = calling_ae.strip()
    found: list[Destination] = []

    def add(peer: Peer) -> None:
        host = peer.host or (calling_host if peer.ae_title.strip() == calling_ae else "")
        if not host:
            LOGGER.warning(
                "peer %s receives %s but has no host configured; not sent", peer.ae_title, output.value
            )
            return
        destination = Destination(ae_title=peer.ae_title.strip(), host=host, port=peer.port)
        if destination not in found:
            found.append(destination)

    for peer in settings.peers:
        if output in peer.receives:
            add(peer)

    if settings.routing.return_to_sender and output in settings.routing.return_outputs and calling_ae:
        sender = settings.peer(calling_ae)
        if sender is None:
            LOGGER.warning(
                "cannot return %s to %s: no [[peers]] entry gives the port it listens on",
                output.value,
                calling_ae,
            )
        else:
            add(sender)
    return found


def is_console(settings: Settings, *, ae_title: str, calling_ae: str) -> bool:
    """Whether ``ae_title`` is a console for a series sent by ``calling_ae``: that sender when results go back to it,
    or a peer that receives the console's Secondary Captures (``sc``) but no report (``sr``, ``seg``)."""
    ae_title = ae_title.strip()
    if settings.routing.return_to_sender and calling_ae.strip() == ae_title:
        return True
    peer = settings.peer(ae_title)
    return (peer is not None and Output.SC in peer.receives
            and not {Output.SR, Output.SEG} & set(peer.receives))
