"""Transfers to one peer share one association (DCMTK's storescp counts them): what waits for a peer goes together,
with a presentation context for each SOP class of the batch, while each file keeps its own status and retries."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Output, Peer, Settings
from db.models import Base, Job, Result, Series, Study, Transfer, TransferState
from db.session import make_engine, make_session_factory
from dicomnode.jobs.queue import make_consumer, make_queue
from dicomnode.jobs.tasks import register_tasks
from dicomnode.net import scu
from tests.integration.conftest import find_free_port, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescp") is None, reason="DCMTK storescp is not installed"),
]

CONSOLE_AE = "CONSOLE"
PACS_AE = "PACS"
_ASSOCIATION = re.compile(r"Association Acknowledged")  # accepted; a bare TCP probe only "Received"


class CountingStoreScp:
    """storescp -v writing into a folder and logging every association it accepts (start-up probes it over TCP)."""

    def __init__(self, folder: Path, ae_title: str) -> None:
        self.folder = folder
        self.ae_title = ae_title
        self.port = find_free_port()
        self.log = folder.with_suffix(".log")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["storescp", "-v", "-aet", self.ae_title, "-od", str(self.folder), str(self.port)],
                env={**os.environ, "TCP_NODELAY": "1"}, stdout=log, stderr=subprocess.STDOUT,
            )
        assert wait_until(lambda: "Listening" in self.log.read_text() or self._accepts(), timeout_s=10)

    def _accepts(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def associations(self) -> int:
        return len(_ASSOCIATION.findall(self.log.read_text()))

    def received_uids(self) -> set[str]:
        return {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in self.folder.iterdir()}


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[CountingStoreScp, CountingStoreScp]]:
    console = CountingStoreScp(tmp_path / "console", CONSOLE_AE)
    pacs = CountingStoreScp(tmp_path / "pacs", PACS_AE)
    console.start()
    pacs.start()
    yield console, pacs
    console.stop()
    pacs.stop()


@pytest.fixture
def session_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _settings(tmp_path: Path, console: CountingStoreScp, pacs: CountingStoreScp) -> Settings:
    return Settings(
        storage={"path": tmp_path / "storage"},
        dicom={"ae_title": "MYOMAP", "acse_timeout_s": 5.0, "dimse_timeout_s": 10.0, "network_timeout_s": 10.0},
        peers=[Peer(ae_title=CONSOLE_AE, host="127.0.0.1", port=console.port),
               Peer(ae_title=PACS_AE, host="127.0.0.1", port=pacs.port, receives=[Output.MAPS, Output.SC])],
        routing={"return_to_sender": True, "return_outputs": [Output.MAPS, Output.SC]},
        scu={"max_attempts": 3, "backoff_initial_s": 0.2, "backoff_max_s": 0.3},
    )


def _write_image(path: Path, sop_class: UID, *, study_uid: str, series_uid: str, number: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality = "MR" if sop_class == MRImageStorage else "OT"
    ds.PatientName, ds.PatientID = "Phantom^Batch", "PH-BATCH"
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = 16, 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(256, dtype=np.uint16).reshape(16, 16) * number).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _plan_map_result(session_factory: sessionmaker[Session], settings: Settings, *, n_sc: int,
                     n_maps: int) -> dict[str, list[int]]:
    """A map job's result sent by the console: ``n_sc`` Secondary Captures and ``n_maps`` MR maps, planned to the
    console (return to sender) and the PACS; the transfer ids by AE title, in planning order."""
    with session_factory() as session:
        study = Study(study_instance_uid=generate_uid(), patient_name="Phantom^Batch")
        series = Series(study=study, series_instance_uid=generate_uid(), calling_ae=CONSOLE_AE,
                        calling_host="127.0.0.1")
        job = Job(key=f"{series.series_instance_uid}/0/t1_map", kind="t1_map", series=series)
        result = Result(job=job, kind="t1_map", output_series_uid=generate_uid())
        session.add_all([study, series, job, result])
        session.flush()
        outputs: dict[Output, list[Path]] = {Output.SC: [], Output.MAPS: []}
        for output, sop_class, count in ((Output.SC, SecondaryCaptureImageStorage, n_sc),
                                         (Output.MAPS, MRImageStorage, n_maps)):
            for number in range(1, count + 1):
                path = Path(result.output_series_uid) / f"{output.value}{number}.dcm"
                _write_image(settings.storage_root / path, sop_class, study_uid=study.study_instance_uid,
                             series_uid=result.output_series_uid, number=number)
                outputs[output].append(path)
        transfers = scu.plan_output_transfers(session, result=result, series=series, outputs=outputs,
                                              settings=settings)
        session.commit()
        by_peer: dict[str, list[int]] = {}
        for transfer in transfers:
            by_peer.setdefault(transfer.ae_title, []).append(transfer.id)
        return by_peer


def _states(session_factory: sessionmaker[Session]) -> dict[int, TransferState]:
    with session_factory() as session:
        return {t.id: t.state for t in session.query(Transfer)}


def test_one_delivery_sends_what_waits_for_its_peer_in_one_association(
    tmp_path: Path, peers: tuple[CountingStoreScp, CountingStoreScp], session_factory: sessionmaker[Session],
) -> None:
    console, pacs = peers
    settings = _settings(tmp_path, console, pacs)
    planned = _plan_map_result(session_factory, settings, n_sc=6, n_maps=6)
    assert len(planned[CONSOLE_AE]) == 12 and len(planned[PACS_AE]) == 12

    state = scu.deliver_transfer(planned[CONSOLE_AE][0], settings=settings, session_factory=session_factory)

    assert state is TransferState.SENT
    states = _states(session_factory)
    # Every file for the console went, in one association offering both SOP classes; the PACS's wait for theirs.
    assert {states[i] for i in planned[CONSOLE_AE]} == {TransferState.SENT}
    assert {states[i] for i in planned[PACS_AE]} == {TransferState.PENDING}
    assert console.associations() == 1 and len(console.received_uids()) == 12
    assert pacs.associations() == 0
    # The deliveries queued for the files taken along find them sent and send nothing again.
    for transfer_id in planned[CONSOLE_AE][1:]:
        assert scu.deliver_transfer(transfer_id, settings=settings,
                                    session_factory=session_factory) is TransferState.SENT
    assert console.associations() == 1


def test_each_file_of_a_batch_keeps_its_own_status_and_retries(
    tmp_path: Path, peers: tuple[CountingStoreScp, CountingStoreScp], session_factory: sessionmaker[Session],
) -> None:
    console, pacs = peers
    settings = _settings(tmp_path, console, pacs)
    planned = _plan_map_result(session_factory, settings, n_sc=2, n_maps=3)
    with session_factory() as session:
        broken = session.get(Transfer, planned[CONSOLE_AE][1])
        (settings.storage_root / broken.path).unlink()  # the file went missing: that transfer fails alone
        broken_id = broken.id

    scu.deliver_transfer(planned[CONSOLE_AE][0], settings=settings, session_factory=session_factory)

    with session_factory() as session:
        transfers = {t.id: t for t in session.query(Transfer).where(Transfer.ae_title == CONSOLE_AE)}
        assert transfers[broken_id].state is TransferState.PENDING
        assert transfers[broken_id].attempts == 1 and "cannot read" in transfers[broken_id].last_error
        others = [t for i, t in transfers.items() if i != broken_id]
        assert all(t.state is TransferState.SENT and t.attempts == 1 and t.last_error == "" for t in others)
    assert console.associations() == 1 and len(console.received_uids()) == 4


def test_a_long_queue_for_one_peer_goes_in_associations_of_at_most_the_batch_size(
    tmp_path: Path, peers: tuple[CountingStoreScp, CountingStoreScp], session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    console, pacs = peers
    settings = _settings(tmp_path, console, pacs)
    monkeypatch.setattr(scu, "MAX_BATCH_FILES", 4)
    planned = _plan_map_result(session_factory, settings, n_sc=2, n_maps=8)

    scu.deliver_transfer(planned[CONSOLE_AE][0], settings=settings, session_factory=session_factory)

    states = _states(session_factory)
    assert [states[i] for i in planned[CONSOLE_AE]] == [TransferState.SENT] * 4 + [TransferState.PENDING] * 6
    assert console.associations() == 1


def test_queued_deliveries_of_a_map_result_reach_each_peer_in_one_association(
    tmp_path: Path, peers: tuple[CountingStoreScp, CountingStoreScp], session_factory: sessionmaker[Session],
) -> None:
    """The node's own path: every transfer queued as its own task on the real queue, one association per peer."""
    console, pacs = peers
    settings = _settings(tmp_path, console, pacs)
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    planned = _plan_map_result(session_factory, settings, n_sc=21, n_maps=21)
    queue = make_queue(settings)
    tasks = register_tasks(queue, settings=settings, session_factory=session_factory)
    for transfer_id in [*planned[CONSOLE_AE], *planned[PACS_AE]]:
        tasks.enqueue_delivery(transfer_id)
    consumer = make_consumer(queue, 2, handle_signals=False)
    started = time.monotonic()
    consumer.start()
    try:
        assert wait_until(lambda: set(_states(session_factory).values()) == {TransferState.SENT}, timeout_s=60)
    finally:
        consumer.stop(graceful=True)
        queue.huey.storage.close()
    assert console.associations() == 1 and pacs.associations() == 1, f"after {time.monotonic() - started:.1f} s"
    assert len(console.received_uids()) == 42 and len(pacs.received_uids()) == 42
