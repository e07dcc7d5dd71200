"""Ingest benchmark: images per second through the node's Storage SCP against DCMTK's storescp, same run.

The same MR images (256 x 218, uint16, written once with pydicom) are sent by DCMTK ``storescu`` over one
association on 127.0.0.1, alternately to

- DCMTK ``storescp`` writing the files into a fresh folder (the reference; it does not fsync), and
- the node's :class:`dicomnode.net.scp.StorageSCP` with its assembler, on a fresh storage folder and SQLite
  database: every instance written to a temporary file, fsynced, renamed and recorded in the database before
  success.

Both receivers are started before the clock starts and checked afterwards (every image arrived). The median of
several repetitions is printed for each, with the ratio node / storescp; the design's target is at least 0.5.
Exit status 1 when the ratio is below the target. ``TCP_NODELAY=1`` is set for the DCMTK tools (without it
Nagle's algorithm adds a delay to every small PDU and dominates the figure).

Usage: ``python benchmarks/bench_ingest.py [--images 300] [--repetitions 5]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy import func, select

from config.settings import Settings
from db import migrate
from db.models import Instance
from db.session import make_engine, make_session_factory
from dicomnode.net.scp import StorageSCP
from dicomnode.store.assembly import Assembler

TARGET_RATIO = 0.5
ROWS, COLUMNS = 256, 218
SEED = 4242  # test seeds stay below 100000
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass(frozen=True)
class Rate:
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def write_images(folder: Path, n_images: int) -> list[Path]:
    """Write ``n_images`` MR images of one MOLLI-like study (several slices, eight inversion times each)."""
    rng = np.random.default_rng(SEED)
    study_uid, frame_uid = generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS]
    body = ((yy - ROWS / 2) / (ROWS * 0.42)) ** 2 + ((xx - COLUMNS / 2) / (COLUMNS * 0.45)) ** 2 < 1.0
    images_per_series = 8
    series_uids: dict[int, str] = {}
    paths = []
    for index in range(n_images):
        series_index, position = divmod(index, images_per_series)
        series_uid = series_uids.setdefault(series_index, generate_uid())
        inversion_time_ms = 100.0 + 400.0 * position
        recovery = np.abs(1.0 - 2.0 * np.exp(-inversion_time_ms / 1000.0))
        pixels = (body * 1800.0 * recovery + rng.normal(0.0, 20.0, (ROWS, COLUMNS))).clip(0, 4095)
        dataset = _mr_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            frame_uid=frame_uid,
            series_number=series_index + 1,
            instance_number=position + 1,
            slice_location_mm=10.0 * series_index,
            inversion_time_ms=inversion_time_ms,
            pixels=pixels.astype(np.uint16),
        )
        path = folder / f"{index:05d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _mr_dataset(
    *,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    series_number: int,
    instance_number: int,
    slice_location_mm: float,
    inversion_time_ms: float,
    pixels: np.ndarray,
) -> Dataset:
    sop_instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240315"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "myomap benchmark"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Ingest benchmark"
    ds.SeriesDescription = f"BENCH_MOLLI slice {series_number}"
    ds.PatientName = "Bench^Ingest"
    ds.PatientID = "BENCH-INGEST"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SS"
    ds.ScanOptions = "IR"
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = 8.0
    ds.RepetitionTime = 2.6
    ds.EchoTime = 1.1
    ds.InversionTime = inversion_time_ms
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = 1.5
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [-120.0, -130.0, slice_location_mm]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = slice_location_mm
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [1.4, 1.4]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    return ds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen | None = None, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"storescp exited early with status {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def send_with_storescu(images: Path, *, port: int, called_ae: str) -> float:
    """Send every file in ``images`` over one association; return the wall-clock seconds."""
    command = [
        "storescu",
        "--aetitle",
        "BENCHSCU",
        "--call",
        called_ae,
        "+sd",
        "127.0.0.1",
        str(port),
        str(images),
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, env=DCMTK_ENV, capture_output=True, text=True, check=False)
    elapsed_s = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"storescu failed with {completed.returncode}: {completed.stderr[-2000:]}")
    return elapsed_s


@contextmanager
def storescp(folder: Path) -> Iterator[int]:
    """DCMTK storescp on a free port writing into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "--aetitle", "STORESCP", "--output-directory", str(folder), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def node_scp(root: Path) -> Iterator[tuple[int, Settings, object]]:
    """The node's Storage SCP with its assembler on a fresh storage folder and database, on a free port."""
    settings = Settings(
        storage={"path": root, "min_free_mb": 64},
        dicom={"ae_title": "MYOMAP", "bind": "127.0.0.1", "port": 0, "allow_any_calling_ae": True},
        series={"quiet_seconds": 3600.0},  # completion is not what is measured
    )
    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    session_factory = make_session_factory(engine)
    assembler = Assembler(session_factory, settings, lambda _series_id, _revision: None)
    assembler.start()
    scp = StorageSCP(settings, session_factory, assembler)
    scp.start()
    try:
        wait_listening(int(scp.port))
        yield int(scp.port), settings, session_factory
    finally:
        scp.stop()
        assembler.stop()
        engine.dispose()


def run(n_images: int, repetitions: int) -> float:
    """Run the benchmark and print its figures; return the ratio node / storescp of the medians."""
    work = Path(tempfile.mkdtemp(prefix="myomap-bench-ingest-"))
    try:
        images = work / "images"
        images.mkdir()
        write_images(images, n_images)
        size_mb = sum(p.stat().st_size for p in images.iterdir()) / 1e6
        print(
            f"{n_images} MR images {ROWS}x{COLUMNS} uint16 ({size_mb:.1f} MB), {repetitions} repetitions each"
        )

        reference: list[Rate] = []
        node: list[Rate] = []
        for repetition in range(repetitions):
            received = work / f"storescp_{repetition}"
            received.mkdir()
            with storescp(received) as port:
                seconds = send_with_storescu(images, port=port, called_ae="STORESCP")
            arrived = len(list(received.iterdir()))
            if arrived != n_images:
                raise RuntimeError(f"storescp received {arrived} of {n_images} images")
            reference.append(Rate(n_images, seconds))

            with node_scp(work / f"node_{repetition}") as (port, _settings, session_factory):
                seconds = send_with_storescu(images, port=port, called_ae="MYOMAP")
                with session_factory() as session:
                    recorded = session.scalar(select(func.count(Instance.id)))
            if recorded != n_images:
                raise RuntimeError(f"the node recorded {recorded} of {n_images} images")
            node.append(Rate(n_images, seconds))
            print(
                f"  repetition {repetition + 1}: storescp {reference[-1].images_per_s:7.1f} images/s, "
                f"node {node[-1].images_per_s:7.1f} images/s"
            )
            shutil.rmtree(received)
            shutil.rmtree(work / f"node_{repetition}")

        reference_rate = statistics.median(r.images_per_s for r in reference)
        node_rate = statistics.median(r.images_per_s for r in node)
        ratio = node_rate / reference_rate
        print(f"DCMTK storescp (no fsync):           {reference_rate:7.1f} images/s (median)")
        print(f"myomap StorageSCP (fsync + DB row):  {node_rate:7.1f} images/s (median)")
        verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
        print(f"ratio node / storescp: {ratio:.2f} ({verdict} the target of {TARGET_RATIO})")
        return ratio
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="number of images (default 300)")
    parser.add_argument("--repetitions", type=int, default=5, help="repetitions per receiver (default 5)")
    arguments = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"DCMTK {tool} is not installed (apt-get install dcmtk)", file=sys.stderr)
            return 2
    ratio = run(arguments.images, arguments.repetitions)
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
