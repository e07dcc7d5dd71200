"""C-STORE SCU: send the node's outputs to the peers routing names, with retries and exponential backoff.

Every (file, destination) pair is a :class:`db.models.Transfer` row, planned once per result and kept until
it is delivered or given up; the admin page lists them and can put a given-up transfer back in the queue. A
peer configured with ``tls = true`` is sent to over DICOM TLS (:mod:`dicomnode.net.tls`); a failed handshake is a
failed attempt like any other, its reason in the transfer's ``last_error``. Files waiting for one peer (same
AE title, host and port, hence the same TLS settings) go in one association: a delivery takes along the peer's
other due transfers (up to :data:`MAX_BATCH_FILES`), each keeping its own status, attempts and backoff. A
failed attempt waits ``min(backoff_initial_s * 2 ** (attempts - 1), backoff_max_s)`` before the next one,
and the transfer is given up after ``scu.max_attempts`` attempts. The database is never held open while the
network is in use: a transfer is claimed (its next attempt moved past the time the send may take), sent, then
updated.

Log lines name AE titles, hosts and SOP Instance UIDs, never patient data.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Output, Settings
from db.models import Result, Series, Transfer, TransferState
from db.repository import TransferNotFoundError
from db.session import session_scope
from dicomnode.net.command_set import use_fast_command_sets
from dicomnode.net.routing import Destination, destinations
from dicomnode.net.tls import client_context, describe_error, handshake_error, server_hostname

LOGGER = logging.getLogger(__name__)

# Storage warnings (PS3.4 B.2.3: coercion, element discarded, data set does not match SOP class) still mean
# that the peer has stored the instance.
_WARNING_STATUS_MASK = 0xF000
_WARNING_STATUS_GROUP = 0xB000
_UNCOMPRESSED_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAX_PRESENTATION_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1-255
#: Most files one delivery sends in its association: the rest of a long queue for a peer follows in the next one.
MAX_BATCH_FILES = 64


@dataclass(frozen=True)
class StoreOutcome:
    """What became of one file sent to one peer.

    ``status`` is the DIMSE status the peer answered, or ``None`` when no answer came (no association, an
    abort, a timeout, a file that could not be read or offered). ``error`` says why the file is not stored; it
    is empty when it is.
    """

    status: int | None
    error: str = ""

    @property
    def stored(self) -> bool:
        return self.status is not None and is_success_status(self.status)


def is_success_status(status: int) -> bool:
    """Whether a C-STORE status means the peer stored the instance (success or a storage warning)."""
    return status == 0x0000 or (status & _WARNING_STATUS_MASK) == _WARNING_STATUS_GROUP


def backoff_delay_s(attempts: int, *, initial_s: float, max_s: float) -> float:
    """Seconds to wait after failed attempt number ``attempts``: doubling from ``initial_s`` up to ``max_s``.

    Raises
    ------
    ValueError
        If ``attempts`` is below 1.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1 after a failure, got {attempts}")
    # Cap the exponent so that a large attempt count cannot overflow the float before min() applies.
    return min(initial_s * 2.0 ** min(attempts - 1, 64), max_s)


def _utc(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; every time the node stores is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _stored_path(path: Path, storage_root: Path) -> str:
    """The path as a transfer row keeps it: relative to the storage root when it lies inside it."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(storage_root).as_posix()
    except ValueError:
        return path.as_posix()


def _file_path(stored: str, storage_root: Path) -> Path:
    return storage_root / stored  # an absolute stored path stays absolute


def plan_transfers(
    session: Session,
    *,
    result: Result,
    series: Series,
    output: Output,
    paths: Sequence[Path],
    settings: Settings,
) -> list[Transfer]:
    """Create one pending transfer per (file, destination) of an output; planning twice changes nothing.

    Parameters
    ----------
    session
        An open session; the caller commits.
    result
        The result the files belong to.
    series
        The source series: its calling AE title and host decide the return-to-sender destination.
    output
        The kind of the files, for routing.
    paths
        The files, absolute or relative to the storage root.
    settings
        The node's settings.

    Returns
    -------
    list of Transfer
        The transfers of these files, new or already planned, in file then destination order.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    pydicom.errors.InvalidDicomError
        If a file is not a DICOM file.
    """
    targets = destinations(
        settings, output=output, calling_ae=series.calling_ae, calling_host=series.calling_host
    )
    if not targets or not paths:
        return []
    if result.id is None:
        session.flush()
    now = _now()
    transfers: list[Transfer] = []
    for path in paths:
        stored = _stored_path(Path(path), settings.storage_root)
        existing = {
            t.ae_title: t
            for t in session.scalars(
                select(Transfer).where(Transfer.result_id == result.id, Transfer.path == stored)
            )
        }
        sop_instance_uid = ""
        for target in targets:
            if target.ae_title in existing:
                transfers.append(existing[target.ae_title])
                continue
            if not sop_instance_uid:
                header = dcmread(_file_path(stored, settings.storage_root), stop_before_pixels=True)
                sop_instance_uid = str(header.SOPInstanceUID)
            transfer = Transfer(
                result_id=result.id,
                path=stored,
                sop_instance_uid=sop_instance_uid,
                ae_title=target.ae_title,
                host=target.host,
                port=target.port,
                state=TransferState.PENDING,
                attempts=0,
                next_attempt_at=now,
                last_error="",
            )
            session.add(transfer)
            transfers.append(transfer)
            LOGGER.info("planned %s of %s to %s", output.value, sop_instance_uid, target)
    session.flush()
    return transfers



def plan_output_transfers(
    session: Session, *, result: Result, series: Series, outputs: Mapping[Output, Sequence[Path]],
    settings: Settings,
) -> list[Transfer]:
    """:func:`plan_transfers` for each output of a result, in the order of ``outputs``."""
    return [
        transfer
        for output, paths in outputs.items()
        if paths
        for transfer in plan_transfers(session, result=result, series=series, output=output, paths=paths,
                                       settings=settings)
    ]

def _presentation_contexts(datasets: Iterable[Dataset]) -> list[tuple[UID, list[UID]]]:
    """One context per SOP class for uncompressed data (pynetdicom converts between those syntaxes) and one
    per (SOP class, compressed syntax) pair, which must be sent as encoded."""
    contexts: dict[tuple[UID, UID | None], list[UID]] = {}
    for dataset in datasets:
        sop_class = UID(dataset.SOPClassUID)
        syntax = UID(dataset.file_meta.TransferSyntaxUID)
        if syntax.is_compressed:
            contexts.setdefault((sop_class, syntax), [syntax])
        else:
            contexts.setdefault((sop_class, None), list(_UNCOMPRESSED_SYNTAXES))
    return [(sop_class, syntaxes) for (sop_class, _), syntaxes in contexts.items()]


def send_files(
    destination: Destination,
    paths: Sequence[Path],
    *,
    calling_ae: str,
    connection_timeout_s: float = 10.0,
    acse_timeout_s: float = 30.0,
    dimse_timeout_s: float = 60.0,
    network_timeout_s: float = 60.0,
    tls_args: tuple[ssl.SSLContext, str] | None = None,
) -> dict[Path, StoreOutcome]:
    """Send files to one storage SCP over a single association.

    Parameters
    ----------
    destination
        The peer.
    paths
        DICOM files with file meta information.
    calling_ae
        The node's AE title.
    connection_timeout_s, acse_timeout_s, dimse_timeout_s, network_timeout_s
        TCP connect, association negotiation, per-response and idle-network limits.
    tls_args
        ``(context, server_hostname)`` to associate over TLS (pynetdicom's ``tls_args``); a context from
        :func:`dicomnode.net.tls.client_context` also tells why a handshake failed.

    Returns
    -------
    dict
        An outcome for every path; network failures are outcomes, not exceptions.
    """
    outcomes: dict[Path, StoreOutcome] = {}
    # Headers only until the association is up: the first file goes out without waiting for the others' pixels.
    datasets: dict[Path, FileDataset] = {}
    for path in map(Path, paths):
        try:
            dataset = dcmread(path, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as error:
            outcomes[path] = StoreOutcome(None, f"cannot read {path.name}: {error}")
            continue
        missing = [
            keyword
            for keyword, holder in (
                ("TransferSyntaxUID", dataset.file_meta),
                ("SOPClassUID", dataset),
                ("SOPInstanceUID", dataset),
            )
            if keyword not in holder
        ]
        if missing:
            outcomes[path] = StoreOutcome(None, f"{path.name} lacks {', '.join(missing)}")
            continue
        datasets[path] = dataset
    contexts = _presentation_contexts(datasets.values())
    if len(contexts) > _MAX_PRESENTATION_CONTEXTS:
        message = f"{len(contexts)} presentation contexts needed, at most {_MAX_PRESENTATION_CONTEXTS} fit"
        outcomes.update({path: StoreOutcome(None, message) for path in datasets})
        return outcomes
    if not datasets:
        return outcomes

    use_fast_command_sets()
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = connection_timeout_s
    ae.acse_timeout = acse_timeout_s
    ae.dimse_timeout = dimse_timeout_s
    ae.network_timeout = network_timeout_s
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)

    association = ae.associate(
        destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args
    )
    if not association.is_established:
        tls_error = handshake_error(tls_args[0]) if tls_args is not None else None
        if tls_error is not None:
            message = f"TLS handshake with {destination} failed: {describe_error(tls_error)}"
        else:
            reason = "rejected the association" if association.is_rejected else "could not be reached or aborted"
            message = f"{destination} {reason}"
        LOGGER.warning("%s; %d file(s) not sent", message, len(datasets))
        outcomes.update({path: StoreOutcome(None, message) for path in datasets})
        return outcomes

    _responses_for_the_sender_only(association)
    try:
        for message_id, (path, header) in enumerate(datasets.items(), start=1):
            sop_instance_uid = header.SOPInstanceUID
            if not association.is_established:
                outcomes[path] = StoreOutcome(None, f"association with {destination} ended before this file")
                continue
            try:
                dataset = dcmread(path)
            except (OSError, InvalidDicomError) as error:  # changed or removed since its header was read
                outcomes[path] = StoreOutcome(None, f"cannot read {path.name}: {error}")
                continue
            try:
                response = association.send_c_store(dataset, msg_id=message_id & 0xFFFF)
            except ValueError as error:  # no accepted presentation context, or the data set cannot be encoded
                outcomes[path] = StoreOutcome(None, f"{destination} cannot take {sop_instance_uid}: {error}")
                LOGGER.warning("C-STORE of %s to %s not possible: %s", sop_instance_uid, destination, error)
                continue
            status = response.get("Status")
            if status is None:
                outcomes[path] = StoreOutcome(
                    None, f"no C-STORE response from {destination} (timeout or abort)"
                )
                LOGGER.warning("no C-STORE response for %s from %s", sop_instance_uid, destination)
                continue
            status = int(status)
            if is_success_status(status):
                outcomes[path] = StoreOutcome(status)
                LOGGER.debug("C-STORE of %s to %s: status 0x%04X", sop_instance_uid, destination, status)
            else:
                comment = str(response.get("ErrorComment", "")).strip()
                detail = f"{destination} answered 0x{status:04X}" + (f" ({comment})" if comment else "")
                outcomes[path] = StoreOutcome(status, detail)
                LOGGER.warning("C-STORE of %s failed: %s", sop_instance_uid, detail)
    finally:
        if association.is_established:
            association.release()
    return outcomes


def _responses_for_the_sender_only(association: Association) -> None:
    """Keep the association's reactor off its DIMSE message queue: this association only sends.

    pynetdicom's reactor thread looks at the queue (without blocking) whenever no ``send_*()`` call pauses it, and
    the pause is signalled by a flag that is briefly stale after each call: a ``send_c_store()`` that follows at
    once can meet a reactor that is no longer paused, which then takes the peer's response off the queue and drops
    it ("Received unexpected C-STORE service message"), and the sender waits out the DIMSE timeout. Only the
    reactor reads the queue without blocking; the sender's blocking reads stay as they were.
    """
    dimse = association.dimse
    take = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        return take(block=True) if block else (None, None)

    dimse.get_msg = get_msg  # type: ignore[method-assign]


@dataclass(frozen=True)
class _Claimed:
    transfer_id: int
    path: Path
    sop_instance_uid: str
    destination: Destination


def _batch_companions(session: Session, rows: Sequence[Transfer], *, now: datetime) -> list[Transfer]:
    """The other due pending transfers to the peers of the pending ``rows``, oldest first, so that the delivery
    fills its associations up to :data:`MAX_BATCH_FILES` files per peer."""
    taken = {row.id for row in rows}
    per_peer: dict[tuple[str, str, int], int] = {}
    for row in rows:
        if row.state is TransferState.PENDING:
            key = (row.ae_title, row.host, row.port)
            per_peer[key] = per_peer.get(key, 0) + 1
    companions: list[Transfer] = []
    for (ae_title, host, port), count in per_peer.items():
        room = MAX_BATCH_FILES - count
        if room <= 0:
            continue
        candidates = session.scalars(
            select(Transfer)
            .where(Transfer.state == TransferState.PENDING, Transfer.ae_title == ae_title, Transfer.host == host,
                   Transfer.port == port, Transfer.next_attempt_at <= now, Transfer.id.not_in(taken))
            .order_by(Transfer.id).limit(room)
        ).all()
        companions.extend(candidate for candidate in candidates if _utc(candidate.next_attempt_at) <= now)
    return companions


def _claim(
    session: Session, transfer_ids: Sequence[int], *, now: datetime, only_if_due: bool, settings: Settings,
    batch: bool = True,
) -> tuple[dict[int, TransferState], list[_Claimed]]:
    """Select the pending transfers among ``transfer_ids`` (with ``batch``, also the other due transfers to their
    peers) and move their next attempt past the time a send may take, so that a scheduler looking for due transfers
    does not hand them out again meanwhile. The claimed transfers come in id order: planning order, so that a
    result's console images go before its maps."""
    states: dict[int, TransferState] = {}
    claimed: list[_Claimed] = []
    requested = list(session.scalars(select(Transfer).where(Transfer.id.in_(transfer_ids))).all())
    for transfer in requested:
        states[transfer.id] = transfer.state
    companions = _batch_companions(session, requested, now=now) if batch else []
    rows = sorted([*requested, *companions], key=lambda transfer: transfer.id)
    lease = timedelta(
        seconds=settings.dicom.acse_timeout_s + settings.dicom.dimse_timeout_s * max(1, len(rows)) + 10.0
    )
    for transfer in rows:
        if transfer.state is not TransferState.PENDING:
            continue
        if only_if_due and _utc(transfer.next_attempt_at) > now:  # companions are due already
            continue
        # Conditional on the state and time read above: a concurrent claimer updates no row and skips it.
        # An UPDATE's result is a CursorResult (it has rowcount); Session.execute types every result as Result.
        taken = cast(
            CursorResult[Any],
            session.execute(
                update(Transfer)
                .where(
                    Transfer.id == transfer.id,
                    Transfer.state == TransferState.PENDING,
                    Transfer.next_attempt_at == transfer.next_attempt_at,
                )
                .values(next_attempt_at=now + lease)
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        if taken:
            states.setdefault(transfer.id, transfer.state)
            claimed.append(
                _Claimed(
                    transfer_id=transfer.id,
                    path=_file_path(transfer.path, settings.storage_root),
                    sop_instance_uid=transfer.sop_instance_uid,
                    destination=Destination(
                        ae_title=transfer.ae_title, host=transfer.host, port=transfer.port
                    ),
                )
            )
    return states, claimed


def _record(
    session: Session, claimed: _Claimed, outcome: StoreOutcome, *, settings: Settings, now: datetime
) -> TransferState:
    transfer = session.get(Transfer, claimed.transfer_id)
    if transfer is None:  # deleted meanwhile (a result removed by an administrator)
        return TransferState.GIVEN_UP
    transfer.attempts += 1
    if outcome.stored:
        transfer.state = TransferState.SENT
        transfer.sent_at = now
        transfer.last_error = ""
        LOGGER.info(
            "sent %s to %s (attempt %d)", claimed.sop_instance_uid, claimed.destination, transfer.attempts
        )
        return transfer.state
    transfer.last_error = outcome.error
    if transfer.attempts >= settings.scu.max_attempts:
        transfer.state = TransferState.GIVEN_UP
        transfer.next_attempt_at = now
        LOGGER.error(
            "gave up sending %s to %s after %d attempts: %s",
            claimed.sop_instance_uid,
            claimed.destination,
            transfer.attempts,
            outcome.error,
        )
    else:
        delay_s = backoff_delay_s(
            transfer.attempts, initial_s=settings.scu.backoff_initial_s, max_s=settings.scu.backoff_max_s
        )
        transfer.next_attempt_at = now + timedelta(seconds=delay_s)
        LOGGER.warning(
            "sending %s to %s failed (attempt %d of %d), next in %.1f s: %s",
            claimed.sop_instance_uid,
            claimed.destination,
            transfer.attempts,
            settings.scu.max_attempts,
            delay_s,
            outcome.error,
        )
    return transfer.state


def _tls_args(settings: Settings, destination: Destination) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for a peer configured with ``tls = true`` (looked up at each attempt, so that
    a changed configuration applies to pending transfers); None for plain TCP.

    Raises
    ------
    ValueError
        If a TLS file cannot be loaded.
    """
    peer = settings.peer(destination.ae_title)
    if peer is None or not peer.tls:
        return None
    return client_context(settings, peer), server_hostname(peer, destination.host)


def deliver_transfers(
    transfer_ids: Sequence[int],
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    only_if_due: bool = True,
    batch: bool = True,
) -> dict[int, TransferState]:
    """Try each pending transfer once, with one association per destination.

    Parameters
    ----------
    transfer_ids
        Transfers to try; unknown ids are left out of the answer.
    settings
        The node's settings (AE title, timeouts, ``scu`` retry policy, storage root).
    session_factory
        Makes database sessions.
    only_if_due
        Skip transfers whose next attempt lies in the future (the usual case: a transfer handed out twice by a
        scheduler is then sent once); ``False`` tries every pending one now.
    batch
        Also send, in the same associations, the other due transfers to the same peers (up to
        :data:`MAX_BATCH_FILES` files per association); their own queued deliveries then find them sent.

    Returns
    -------
    dict
        The state of every known transfer after the attempt (``SENT``, ``PENDING`` with a later next attempt,
        or ``GIVEN_UP``), the ones taken along included. Network failures never raise.
    """
    now = _now()
    with session_scope(session_factory) as session:
        states, claimed = _claim(
            session, list(transfer_ids), now=now, only_if_due=only_if_due, settings=settings, batch=batch
        )

    by_destination: dict[Destination, list[_Claimed]] = {}
    for item in claimed:
        by_destination.setdefault(item.destination, []).append(item)

    outcomes: dict[int, StoreOutcome] = {}
    for destination, items in by_destination.items():
        try:
            tls_args = _tls_args(settings, destination)
        except ValueError as error:  # the TLS files of this peer or of the node cannot be loaded
            LOGGER.error("cannot send to %s over TLS: %s", destination, error)
            for item in items:
                outcomes[item.transfer_id] = StoreOutcome(None, f"TLS with {destination} not possible: {error}")
            continue
        try:
            sent = send_files(
                destination,
                [item.path for item in items],
                calling_ae=settings.dicom.ae_title,
                acse_timeout_s=settings.dicom.acse_timeout_s,
                dimse_timeout_s=settings.dicom.dimse_timeout_s,
                network_timeout_s=settings.dicom.network_timeout_s,
                tls_args=tls_args,
            )
        except Exception as error:
            # An unexpected failure is recorded like any other, so that the claim is not lost.
            LOGGER.exception("sending to %s failed unexpectedly", destination)
            sent = {item.path: StoreOutcome(None, f"{type(error).__name__}: {error}") for item in items}
        for item in items:
            outcomes[item.transfer_id] = sent.get(item.path, StoreOutcome(None, "file was not sent"))

    finished = _now()
    with session_scope(session_factory) as session:
        for item in claimed:
            states[item.transfer_id] = _record(
                session, item, outcomes[item.transfer_id], settings=settings, now=finished
            )
    return states


def deliver_transfer(
    transfer_id: int,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    only_if_due: bool = True,
) -> TransferState:
    """Try one transfer once and return its state afterwards (see :func:`deliver_transfers`).

    Raises
    ------
    TransferNotFoundError
        If no transfer has this id.
    """
    states = deliver_transfers(
        [transfer_id], settings=settings, session_factory=session_factory, only_if_due=only_if_due
    )
    if transfer_id not in states:
        raise TransferNotFoundError(f"no transfer with id {transfer_id}")
    return states[transfer_id]


def due_transfers(session: Session, *, now: datetime | None = None) -> list[int]:
    """Ids of the pending transfers whose next attempt is due at ``now`` (default: the current time), oldest
    first."""
    moment = _utc(now) if now is not None else _now()
    return list(
        session.scalars(
            select(Transfer.id)
            .where(Transfer.state == TransferState.PENDING, Transfer.next_attempt_at <= moment)
            .order_by(Transfer.next_attempt_at, Transfer.id)
        )
    )
