"""pynetdicom event handlers of the Storage SCP: one function per event, each delegating and returning a status.

Statuses answered to C-STORE (PS3.4 B.2.3, PS3.7 C):

- 0x0000 success, only after the instance is on disk and committed (also for an identical re-send);
- 0xA700 Refused: Out of Resources: below the disk watermark, absurd image dimensions, or an unexpected
  internal error (database or disk unavailable), after which the sender may retry;
- 0xA900 Error: Data Set does not match SOP Class: SOP Class UID other than the context's, missing UIDs,
  missing or inconsistent pixel data;
- 0xC000 Error: Cannot understand: truncated or unparsable data set, a value that breaks its VR, a malformed UID;
- 0x0124 Refused: Not Authorized: the peer is configured with ``may_store = false`` (it may still C-ECHO).

Associations are rejected (A-ASSOCIATE-RJ) when the calling AE title is not a configured peer and
``dicom.allow_any_calling_ae`` is false, or a peer with a ``host`` calls from another address (rejected-permanent,
service-user, calling-AE-title-not-recognised), when storage contexts are proposed while the disk is already
below the watermark, and when a caller that is no configured peer finds ``dicom.max_associations`` associations
of such callers open on the whole node, over all its SCP processes (the ``reserved_peer_associations`` beyond them
are kept for peers) (both rejected-transient, service-provider presentation, local-limit-exceeded).

Logs carry UIDs, AE titles and hosts, never patient names or IDs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from pydicom import Dataset
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from dicomnode.errors import StorageFullError, StoreRejectedError, UnknownPeerError
from dicomnode.sop_classes import VERIFICATION
from dicomnode.store.assembly import Assembler
from dicomnode.store.storage import check_free_space, store_instance
from dicomnode.store.validate import received_file_meta

LOGGER = logging.getLogger(__name__)
#: Set on an association that holds one of the node-wide slots of callers that are no configured peer.
HOLDS_CALLER_SLOT = "myomap_holds_caller_slot"

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
NOT_AUTHORIZED = 0x0124
ERROR_COMMENT_MAX_LENGTH = 64  # LO
# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_UNKNOWN_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


@dataclass(frozen=True)
class StoreContext:
    """What the C-STORE handler needs, bound to it when the server starts."""

    settings: Settings
    session_factory: sessionmaker[Session]
    assembler: Assembler | None = None


def check_peer(settings: Settings, calling_ae: str, calling_host: str) -> None:
    """Raise unless this AE title, from this host, may associate.

    Raises
    ------
    UnknownPeerError
        The AE title is not configured (and ``allow_any_calling_ae`` is false), or it calls from another host
        than the one configured for it.
    """
    peer = settings.peer(calling_ae)
    if peer is None:
        if settings.dicom.allow_any_calling_ae:
            return
        raise UnknownPeerError(f"calling AE title {calling_ae!r} is not a configured peer")
    if peer.host is not None and peer.host != calling_host:
        raise UnknownPeerError(
            f"calling AE title {calling_ae!r} is configured for host {peer.host}, but called from {calling_host}"
        )


def handle_association_request(event: Event, settings: Settings) -> None:
    """EVT_REQUESTED: reject unknown peers, and storage associations while the disk is below the watermark."""
    assoc = event.assoc
    # EVT_REQUESTED fires on a received A-ASSOCIATE-RQ, which pynetdicom has stored as the requestor's primitive
    # (its own ACSE casts it the same way).
    request = cast(A_ASSOCIATE, assoc.requestor.primitive)
    calling_ae = str(request.calling_ae_title).strip()
    calling_host = assoc.requestor.address
    try:
        check_peer(settings, calling_ae, calling_host)
    except UnknownPeerError as error:
        LOGGER.warning("association from %s at %s rejected: %s", calling_ae, calling_host, error)
        _reject(assoc, REJECT_UNKNOWN_CALLING_AE)
        return
    if settings.peer(calling_ae) is None:
        # The slots above max_associations are kept for configured peers (see scp.make_ae); a peer's association
        # (the console's C-ECHO) takes none of the max_associations that unknown callers share.
        open_already = _admit_unknown_caller(assoc, settings)
        if open_already is not None:
            LOGGER.warning(
                "association from %s at %s rejected: %d associations of callers that are no configured peer open, "
                "the rest are kept for configured peers", calling_ae, calling_host, open_already,
            )
            _reject(assoc, REJECT_LOCAL_LIMIT_EXCEEDED)
            return
    contexts = request.presentation_context_definition_list or []
    wants_storage = any(str(cx.abstract_syntax) != VERIFICATION for cx in contexts)
    if wants_storage:
        try:
            check_free_space(settings)
        except StorageFullError as error:
            LOGGER.error("association from %s at %s rejected: %s", calling_ae, calling_host, error)
            _reject(assoc, REJECT_LOCAL_LIMIT_EXCEEDED)


def _admit_unknown_caller(assoc: Association, settings: Settings) -> int | None:
    """Take one of the ``max_associations`` slots of callers that are no configured peer for ``assoc``: None when
    it got one, else how many such associations the node holds.

    With several SCP processes the slots are counted in the memory they share (:mod:`dicomnode.net.handoff`); the
    association is marked, and its connection thread gives the slot back when it ends. A single process counts its
    own associations.
    """
    limit = settings.dicom.max_associations
    server = getattr(assoc, "_server", None)
    counts = getattr(server, "open_connections", None)
    if counts is None:
        unknown = sum(1 for other in assoc.ae.active_associations
                      if other.is_acceptor and settings.peer(str(other.requestor.ae_title).strip()) is None)
        return None if unknown <= limit else unknown - 1  # this one included
    if counts.admit_stranger(server.process_index, limit):  # type: ignore[union-attr]
        setattr(assoc, HOLDS_CALLER_SLOT, True)
        return None
    return int(counts.strangers())


def _reject(assoc: Association, reason: tuple[int, int, int]) -> None:
    assoc.acse.send_reject(*reason)
    # As pynetdicom does for its own rejections: let the DUL send the A-ASSOCIATE-RJ before the socket closes.
    assoc.kill()


def handle_echo(event: Event) -> int:
    """EVT_C_ECHO: always success (peers that may not store may still verify the connection)."""
    LOGGER.info("C-ECHO from %s at %s", event.assoc.requestor.ae_title.strip(), event.assoc.requestor.address)
    return SUCCESS


def handle_store(event: Event, context: StoreContext) -> int | Dataset:
    """EVT_C_STORE: store durably, note the instance for assembly, answer success or the error's status.

    The data set is taken as received (``event.encoded_dataset``), never decoded by pynetdicom; success is the
    plain status 0x0000 (a Dataset is built only for failures, which carry an Error Comment).
    """
    assoc = event.assoc
    calling_ae = assoc.requestor.ae_title.strip()
    calling_host = assoc.requestor.address
    request = cast(C_STORE, event.request)  # the EVT_C_STORE handler always gets a C-STORE request
    sop_instance_uid = str(request.AffectedSOPInstanceUID)
    peer = context.settings.peer(calling_ae)
    if peer is not None and not peer.may_store:
        LOGGER.warning(
            "C-STORE of %s from %s at %s refused: peer may not store",
            sop_instance_uid,
            calling_ae,
            calling_host,
        )
        return status_dataset(NOT_AUTHORIZED, f"AE {calling_ae} may not store to this node")
    try:
        stored = store_instance(
            event.encoded_dataset(include_meta=False),
            file_meta=received_file_meta(str(request.AffectedSOPClassUID), sop_instance_uid,
                                         str(event.context.transfer_syntax)),
            calling_ae=calling_ae,
            calling_host=calling_host,
            settings=context.settings,
            session_factory=context.session_factory,
            context_sop_class_uid=str(event.context.abstract_syntax),
            affected_sop_instance_uid=sop_instance_uid,
        )
    except StoreRejectedError as error:
        LOGGER.warning(
            "C-STORE of %s from %s at %s failed with 0x%04X: %s",
            sop_instance_uid,
            calling_ae,
            calling_host,
            error.dimse_status,
            error,
        )
        return status_dataset(error.dimse_status, str(error))
    except Exception:
        LOGGER.exception(
            "C-STORE of %s from %s at %s failed unexpectedly", sop_instance_uid, calling_ae, calling_host
        )
        return status_dataset(OUT_OF_RESOURCES, "internal error while storing; see the node's log")
    if stored.created or stored.changed:
        LOGGER.info(
            "stored %s (series id %d) from %s at %s%s",
            sop_instance_uid,
            stored.series_id,
            calling_ae,
            calling_host,
            " as a new version" if stored.changed else "",
        )
    else:
        LOGGER.debug("identical re-send of %s from %s ignored", sop_instance_uid, calling_ae)
    if context.assembler is not None:
        try:
            context.assembler.note_instance(stored)
        except Exception:  # the instance is safe; the quiet-period check will complete its series
            LOGGER.exception("assembly of %s failed after storing it", sop_instance_uid)
    return SUCCESS


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A C-STORE response status with an Error Comment (LO, cut to 64 characters)."""
    response = Dataset()
    response.Status = status
    if comment and status != SUCCESS:
        response.ErrorComment = comment.replace("\\", "/")[:ERROR_COMMENT_MAX_LENGTH]
    return response
