"""C-STORE SCU: planning, backoff, delivery against an in-process storage SCP, retry and due transfers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Output, Peer, Settings
from db import repository
from db.models import Base, Job, Result, Series, Study, Transfer, TransferState
from db.session import make_engine, make_session_factory
from dicomnode.net import scu
from dicomnode.net.routing import Destination


def write_mr(path: Path, *, series_uid: str, instance_number: int) -> str:
    """Write a small uncompressed MR image; return its SOP Instance UID."""
    sop_instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TP1"
    ds.InstanceNumber = instance_number
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.full((8, 8), instance_number, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop_instance_uid


@dataclass
class FakeStorageScp:
    """A pynetdicom storage SCP on 127.0.0.1 answering ``status`` and counting associations."""

    status: int = 0x0000
    received: list[str] = field(default_factory=list)
    associations: int = 0
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_store(self, event: evt.Event) -> int:
        with self._lock:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.status

    def on_accepted(self, _event: evt.Event) -> None:
        with self._lock:
            self.associations += 1


@pytest.fixture()
def storage_scp() -> Iterator[FakeStorageScp]:
    fake = FakeStorageScp()
    ae = AE(ae_title="FAKEPACS")
    ae.add_supported_context(MRImageStorage, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"])
    ae.add_supported_context(Verification)
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, fake.on_store), (evt.EVT_ACCEPTED, fake.on_accepted)],
    )
    fake.port = server.server_address[1]
    yield fake
    server.shutdown()


def _settings(tmp_path: Path, port: int, **scu_settings: float) -> Settings:
    return Settings(
        storage={"path": tmp_path / "storage"},
        dicom={"acse_timeout_s": 5.0, "dimse_timeout_s": 5.0, "network_timeout_s": 5.0},
        peers=[
            Peer(ae_title="FAKEPACS", host="127.0.0.1", port=port, receives=[Output.SR, Output.SC]),
            Peer(ae_title="SCANNER", host="127.0.0.1", port=port, receives=[]),
        ],
        routing={"return_to_sender": True, "return_outputs": [Output.MAPS]},
        scu={"max_attempts": 3, "backoff_initial_s": 2.0, "backoff_max_s": 5.0, **scu_settings},
    )


@pytest.fixture()
def session_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _result_with_files(
    session: Session, settings: Settings, n_files: int, *, calling_ae: str = "SCANNER"
) -> tuple[Result, Series, list[Path], list[str]]:
    study = Study(study_instance_uid=generate_uid(), patient_name="Test^Patient")
    series = Series(
        study=study, series_instance_uid=generate_uid(), calling_ae=calling_ae, calling_host="127.0.0.1"
    )
    job = Job(key=f"{series.series_instance_uid}/0/t1_map", kind="t1_map", series=series)
    result = Result(job=job, kind="t1_map", output_series_uid=generate_uid())
    session.add_all([study, series, job, result])
    session.flush()
    paths, uids = [], []
    for number in range(1, n_files + 1):
        relative = Path("out") / result.output_series_uid / f"{number}.dcm"
        uids.append(
            write_mr(
                settings.storage_root / relative, series_uid=result.output_series_uid, instance_number=number
            )
        )
        paths.append(relative)
    result.paths = [p.as_posix() for p in paths]
    return result, series, paths, uids


def test_backoff_doubles_and_is_capped() -> None:
    delays = [scu.backoff_delay_s(n, initial_s=2.0, max_s=30.0) for n in range(1, 7)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert scu.backoff_delay_s(10_000, initial_s=2.0, max_s=300.0) == 300.0
    with pytest.raises(ValueError, match="at least 1"):
        scu.backoff_delay_s(0, initial_s=2.0, max_s=30.0)


@pytest.mark.parametrize(
    ("status", "stored"),
    [(0x0000, True), (0xB000, True), (0xB007, True), (0xA700, False), (0xA900, False), (0xC000, False)],
)
def test_success_statuses(status: int, stored: bool) -> None:
    assert scu.is_success_status(status) is stored
    assert scu.StoreOutcome(status).stored is stored


def test_plan_transfers_is_idempotent(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = _settings(tmp_path, 11112)
    with session_factory() as session:
        result, series, paths, uids = _result_with_files(session, settings, 2)
        # maps go back to the sender only; SC goes to the PACS (the sender does not list it).
        maps = scu.plan_transfers(
            session, result=result, series=series, output=Output.MAPS, paths=paths, settings=settings
        )
        assert [(t.ae_title, t.sop_instance_uid) for t in maps] == [
            ("SCANNER", uids[0]),
            ("SCANNER", uids[1]),
        ]
        absolute = [settings.storage_root / p for p in paths]
        again = scu.plan_transfers(
            session, result=result, series=series, output=Output.MAPS, paths=absolute, settings=settings
        )
        assert [t.id for t in again] == [t.id for t in maps]
        assert all(t.path == p.as_posix() for t, p in zip(again, paths, strict=True))
        assert all(t.state is TransferState.PENDING and t.attempts == 0 for t in again)
        sc = scu.plan_transfers(
            session, result=result, series=series, output=Output.SC, paths=paths[:1], settings=settings
        )
        assert [t.ae_title for t in sc] == ["FAKEPACS"]
        assert (
            scu.plan_transfers(
                session, result=result, series=series, output=Output.SEG, paths=paths, settings=settings
            )
            == []
        )
        session.commit()
        assert session.scalar(select(func.count()).select_from(Transfer)) == 3


def test_send_files_uses_one_association(tmp_path: Path, storage_scp: FakeStorageScp) -> None:
    series_uid = generate_uid()
    paths = [tmp_path / f"{n}.dcm" for n in range(1, 4)]
    uids = [write_mr(p, series_uid=series_uid, instance_number=n) for n, p in enumerate(paths, start=1)]
    missing = tmp_path / "missing.dcm"
    outcomes = scu.send_files(
        Destination("FAKEPACS", "127.0.0.1", storage_scp.port), [*paths, missing], calling_ae="MYOMAP"
    )
    assert [outcomes[p].stored for p in paths] == [True, True, True]
    assert not outcomes[missing].stored and "cannot read" in outcomes[missing].error
    assert storage_scp.received == uids
    assert storage_scp.associations == 1


def test_send_files_to_nobody_reports_every_file(tmp_path: Path) -> None:
    path = tmp_path / "1.dcm"
    write_mr(path, series_uid=generate_uid(), instance_number=1)
    outcomes = scu.send_files(Destination("NOBODY", "127.0.0.1", unused_port()), [path], calling_ae="MYOMAP")
    assert outcomes[path].status is None
    assert "NOBODY@127.0.0.1" in outcomes[path].error


def unused_port() -> int:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_deliver_success_marks_sent(
    tmp_path: Path, session_factory: sessionmaker[Session], storage_scp: FakeStorageScp
) -> None:
    settings = _settings(tmp_path, storage_scp.port)
    with session_factory() as session:
        result, series, paths, uids = _result_with_files(session, settings, 3)
        ids = [
            t.id
            for t in scu.plan_transfers(
                session, result=result, series=series, output=Output.SC, paths=paths, settings=settings
            )
        ]
        session.commit()
    states = scu.deliver_transfers(ids, settings=settings, session_factory=session_factory)
    assert set(states.values()) == {TransferState.SENT}
    assert storage_scp.received == uids
    assert storage_scp.associations == 1  # one association for the three files to one peer
    with session_factory() as session:
        for transfer in session.scalars(select(Transfer)):
            assert transfer.attempts == 1 and transfer.sent_at is not None and transfer.last_error == ""
    # A delivered transfer is not sent again.
    assert (
        scu.deliver_transfer(ids[0], settings=settings, session_factory=session_factory) is TransferState.SENT
    )
    assert len(storage_scp.received) == 3


def test_refused_instance_backs_off_then_gives_up(
    tmp_path: Path, session_factory: sessionmaker[Session], storage_scp: FakeStorageScp
) -> None:
    storage_scp.status = 0xA700
    settings = _settings(tmp_path, storage_scp.port)
    with session_factory() as session:
        result, series, paths, _ = _result_with_files(session, settings, 1)
        (transfer,) = scu.plan_transfers(
            session, result=result, series=series, output=Output.SR, paths=paths, settings=settings
        )
        session.commit()
        transfer_id = transfer.id

    def row() -> Transfer:
        with session_factory() as session:
            return session.get(Transfer, transfer_id)

    before = datetime.now(UTC)
    state = scu.deliver_transfer(transfer_id, settings=settings, session_factory=session_factory)
    assert state is TransferState.PENDING
    first = row()
    assert first.attempts == 1 and "0xA700" in first.last_error
    wait_s = (first.next_attempt_at.replace(tzinfo=UTC) - before).total_seconds()
    assert 2.0 <= wait_s < 3.0

    # Not due yet: nothing is sent and nothing changes.
    assert scu.deliver_transfer(transfer_id, settings=settings, session_factory=session_factory) is (
        TransferState.PENDING
    )
    assert row().attempts == 1 and len(storage_scp.received) == 1

    before = datetime.now(UTC)
    scu.deliver_transfer(transfer_id, settings=settings, session_factory=session_factory, only_if_due=False)
    second = row()
    wait_s = (second.next_attempt_at.replace(tzinfo=UTC) - before).total_seconds()
    assert second.attempts == 2 and 4.0 <= wait_s < 5.0

    state = scu.deliver_transfer(
        transfer_id, settings=settings, session_factory=session_factory, only_if_due=False
    )
    assert state is TransferState.GIVEN_UP
    assert row().attempts == 3 and len(storage_scp.received) == 3


def test_retry_transfer(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = _settings(tmp_path, 11112)
    with session_factory() as session:
        result, series, paths, _ = _result_with_files(session, settings, 2)
        given_up, sent = scu.plan_transfers(
            session, result=result, series=series, output=Output.SR, paths=paths, settings=settings
        )
        given_up.state, given_up.attempts, given_up.last_error = TransferState.GIVEN_UP, 3, "refused"
        given_up.next_attempt_at = datetime.now(UTC) - timedelta(days=1)
        sent.state = TransferState.SENT
        session.commit()

        retried = repository.retry_transfer(session, transfer_id=given_up.id)
        session.commit()
        assert retried.state is TransferState.PENDING and retried.attempts == 0 and retried.last_error == ""
        assert scu.due_transfers(session, now=datetime.now(UTC)) == [given_up.id]
        with pytest.raises(repository.TransferStateError, match="already sent"):
            repository.retry_transfer(session, transfer_id=sent.id)
        with pytest.raises(repository.TransferNotFoundError, match="9999"):
            repository.retry_transfer(session, transfer_id=9999)


def test_due_transfers_filters_state_and_time(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = _settings(tmp_path, 11112)
    now = datetime.now(UTC)
    with session_factory() as session:
        result, series, paths, _ = _result_with_files(session, settings, 4)
        later, early, given_up, sent = scu.plan_transfers(
            session, result=result, series=series, output=Output.SR, paths=paths, settings=settings
        )
        later.next_attempt_at = now + timedelta(minutes=5)
        early.next_attempt_at = now - timedelta(minutes=5)
        given_up.state = TransferState.GIVEN_UP
        sent.state = TransferState.SENT
        session.commit()
        assert scu.due_transfers(session, now=now) == [early.id]
        assert scu.due_transfers(session, now=now + timedelta(minutes=10)) == [early.id, later.id]
        # A naive time is taken as UTC, as SQLite stores it.
        assert scu.due_transfers(session, now=(now - timedelta(minutes=1)).replace(tzinfo=None)) == [early.id]


def test_deliver_unknown_transfer_raises(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(scu.TransferNotFoundError):
        scu.deliver_transfer(42, settings=_settings(tmp_path, 11112), session_factory=session_factory)


def test_the_reactor_of_a_sending_association_never_takes_its_responses() -> None:
    """pynetdicom's reactor reads the DIMSE queue without blocking; a response it took would be dropped and the
    sender would wait out the DIMSE timeout. The sender's blocking read still gets it."""
    ae = AE(ae_title="MYOMAP")
    ae.add_requested_context(Verification)
    association = scu.Association(ae, "requestor")
    association.dimse.msg_queue.put((1, "a C-STORE response"))
    scu._responses_for_the_sender_only(association)
    assert association.dimse.get_msg(block=False) == (None, None)
    assert association.dimse.get_msg() == (None, None)
    assert association.dimse.get_msg(block=True) == (1, "a C-STORE response")
