"""The C-STORE SCU against DCMTK's storescp: delivery, a dead peer with backoff until given up, and retry."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Output, Peer, Settings
from db import repository
from db.models import Base, Job, Result, Series, Study, Transfer, TransferState
from db.session import make_engine, make_session_factory
from dicomnode.net import scu

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescp") is None, reason="DCMTK storescp is not installed"),
]

PEER_AE = "STORESCP"  # plays the scanner: it sends the raw series and gets the maps back


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited with {process.returncode}: {process.stderr.read()!r}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"storescp did not listen on port {port} within {timeout_s} s")


class StoreScp:
    """DCMTK storescp writing into a folder; started and stopped by the tests."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "--aetitle", PEER_AE, "--output-directory", str(self.folder), str(self.port)],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_listening(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def received_uids(self) -> set[str]:
        return {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in self.folder.iterdir()}


@pytest.fixture()
def storescp_factory(tmp_path: Path) -> Iterator[type]:
    started: list[StoreScp] = []

    def make(port: int) -> StoreScp:
        scp = StoreScp(port, tmp_path / f"received_{port}")
        started.append(scp)
        return scp

    yield make
    for scp in started:
        scp.stop()


@pytest.fixture()
def session_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _write_mr(path: Path, *, study_uid: str, series_uid: str, instance_number: int) -> str:
    sop_instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.PatientName = "Phantom^Integration"
    ds.PatientID = "PH-INT"
    ds.InstanceNumber = instance_number
    ds.Rows, ds.Columns = 16, 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(256, dtype=np.uint16).reshape(16, 16) * instance_number).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop_instance_uid


def _plan(
    session_factory: sessionmaker[Session], settings: Settings, n_files: int
) -> tuple[list[int], list[str]]:
    with session_factory() as session:
        study = Study(study_instance_uid=generate_uid(), patient_name="Phantom^Integration")
        series = Series(
            study=study, series_instance_uid=generate_uid(), calling_ae=PEER_AE, calling_host="127.0.0.1"
        )
        job = Job(key=f"{series.series_instance_uid}/0/t1_map", kind="t1_map", series=series)
        result = Result(job=job, kind="t1_map", output_series_uid=generate_uid())
        session.add_all([study, series, job, result])
        session.flush()
        paths = [Path(result.output_series_uid) / f"{n}.dcm" for n in range(1, n_files + 1)]
        uids = [
            _write_mr(
                settings.storage_root / p,
                study_uid=study.study_instance_uid,
                series_uid=result.output_series_uid,
                instance_number=n,
            )
            for n, p in enumerate(paths, start=1)
        ]
        transfers = scu.plan_transfers(
            session, result=result, series=series, output=Output.MAPS, paths=paths, settings=settings
        )
        session.commit()
        return [t.id for t in transfers], uids


def _settings(tmp_path: Path, port: int) -> Settings:
    return Settings(
        storage={"path": tmp_path / "storage"},
        dicom={
            "ae_title": "MYOMAP",
            "acse_timeout_s": 5.0,
            "dimse_timeout_s": 10.0,
            "network_timeout_s": 10.0,
        },
        peers=[Peer(ae_title=PEER_AE, host="127.0.0.1", port=port)],
        routing={"return_to_sender": True, "return_outputs": [Output.MAPS]},
        scu={"max_attempts": 3, "backoff_initial_s": 0.2, "backoff_max_s": 0.3},
    )


def test_files_arrive_at_storescp(
    tmp_path: Path, storescp_factory, session_factory: sessionmaker[Session]
) -> None:
    port = _free_port()
    settings = _settings(tmp_path, port)
    storescp = storescp_factory(port)
    storescp.start()
    transfer_ids, uids = _plan(session_factory, settings, 5)
    assert len(transfer_ids) == 5

    states = scu.deliver_transfers(transfer_ids, settings=settings, session_factory=session_factory)

    assert set(states.values()) == {TransferState.SENT}
    assert storescp.received_uids() == set(uids)
    received = dcmread(next(storescp.folder.iterdir()))
    assert received.Rows == 16 and received.PixelData  # the pixel data went through, not just the header


def test_dead_peer_backs_off_gives_up_and_retry_delivers(
    tmp_path: Path, storescp_factory, session_factory: sessionmaker[Session]
) -> None:
    port = _free_port()  # nothing listens here until the retry below
    settings = _settings(tmp_path, port)
    (transfer_id,), uids = _plan(session_factory, settings, 1)

    # Exponential backoff capped by backoff_max_s: 0.2 s, then 0.3 s (0.4 s capped).
    expected_waits_s = [0.2, 0.3]
    waits_s: list[float] = []
    state = TransferState.PENDING
    tries = 0
    while state is TransferState.PENDING:
        tries += 1
        assert tries <= settings.scu.max_attempts, "the transfer was not given up after max_attempts"
        attempted_at = datetime.now(UTC)
        state = scu.deliver_transfer(transfer_id, settings=settings, session_factory=session_factory)
        returned_at = datetime.now(UTC)
        with session_factory() as session:
            transfer = session.get(Transfer, transfer_id)
            assert transfer.attempts == tries
            assert f"{PEER_AE}@127.0.0.1:{port}" in transfer.last_error
            next_at = transfer.next_attempt_at.replace(tzinfo=UTC)
        if state is TransferState.PENDING:
            waits_s.append((next_at - attempted_at).total_seconds())
            # The backoff runs from the end of the attempt, which lies between the call and its return.
            assert (next_at - returned_at).total_seconds() <= expected_waits_s[tries - 1] + 1e-3
            # Due only after the backoff; until then the scheduler does not hand it out.
            with session_factory() as session:
                assert transfer_id not in scu.due_transfers(session, now=attempted_at)
            time.sleep(max(0.0, (next_at - datetime.now(UTC)).total_seconds()) + 0.01)

    assert state is TransferState.GIVEN_UP and tries == settings.scu.max_attempts
    assert len(waits_s) == len(expected_waits_s)
    assert all(wait_s >= expected for wait_s, expected in zip(waits_s, expected_waits_s, strict=True))

    storescp = storescp_factory(port)
    storescp.start()
    with session_factory() as session:
        transfer = repository.retry_transfer(session, transfer_id=transfer_id)
        session.commit()
        assert transfer.state is TransferState.PENDING and transfer.attempts == 0
    state = scu.deliver_transfer(transfer_id, settings=settings, session_factory=session_factory)
    assert state is TransferState.SENT
    assert storescp.received_uids() == set(uids)
