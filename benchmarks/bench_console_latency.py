"""Console latency: from the C-STORE response of the last raw image of a MOLLI slice to the verdict at the console,
with the node's queue empty and with a backlog of reader scoring ahead.

A `myomap serve` subprocess (fresh data folder, SQLite, embedded defaults otherwise, CPU) receives one phantom
MOLLI slice (seed 31, Siemens flavour) from a pynetdicom SCU whose calling AE is the console, so the node returns
its Secondary Captures (map with contours and the motion verdict, AHA bullseye) and the maps to it. The node fits
the map, runs segmentation, contour fitting, AHA measurements, motion detection and segmentation QC, renders and
sends. The console is a pynetdicom Storage SCP in this process that records when each object arrives, on the same
clock as the sender. Each run sends the slice as a new series (new Series and SOP Instance UIDs).

Two phases in the same run of the same node: the reference, with nothing else queued; then the backlog, where a
reading station (another AE, whose results the console never gets) has sent readers' contours (phantom seed 32,
trainees' SEG and RTSTRUCT objects on the scanner's map of their own study, each sent as a new series) so that
``--backlog`` reader-scoring jobs (default 50) are queued when the slice is sent; the backlog is topped up before
every run, so the node scores readers all the while. Printed: the latency of every run to the first Secondary
Capture (the headline figure), to the MR map and to everything, their medians and 95th percentiles, the ratio of
the backlog's to the reference's, and the ratio of the backlog's 95th percentile to the design's 1 s target; and
the node's peak RSS with every model loaded (VmHWM), against the 1 GiB target. Exit status 1 when the backlog's
95th percentile to the first Secondary Capture exceeds the target.

The node waits ``[series] pairing_seconds`` after a study's last mapping image before it analyses, so that a
scanner's map sent after its raw images is analysed with them once; that wait is part of the latency. The
default is the embedded default; ``--pairing-seconds 0`` measures a site whose scanners never send maps.

Usage: ``python benchmarks/bench_console_latency.py [--runs 10] [--backlog 50] [--pairing-seconds S]``
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import tomli_w
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from sqlalchemy import func, select

from config import load_settings
from db.models import Job, JobState, Series
from db.session import make_engine

TARGET_S = 1.0
PHANTOM_SEED = 31  # test seeds stay below 100000
READERS_SEED = 32
CONSOLE_AE = "CONSOLE"
READING_AE = "READING"  # the readers' station: no [[peers]] entry, so nothing goes back to it
NODE_AE = "MYOMAP"
MAP_TIMEOUT_S = 120.0
READER_JOB = "reader_score"


@dataclass(frozen=True)
class Arrival:
    at_s: float
    sop_class_uid: str
    series_description: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _myomap() -> list[str]:
    script = Path(sys.executable).with_name("myomap")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dicomnode.app.cli"]


def _phantom_slice(folder: Path) -> list[Dataset]:
    subprocess.run(
        [*_myomap(), "phantom", "--out", str(folder), "--studies", "1", "--seed", str(PHANTOM_SEED), "--sequence",
         "molli", "--vendor", "siemens", "--readers", "", "--slices", "1", "--workers", "1"],
        check=True, capture_output=True, timeout=300,
    )
    paths = sorted((folder / "study_0000" / "mid").glob("*_magnitude/*.dcm"))
    return [pydicom.dcmread(path) for path in paths]


def _reader_study(folder: Path) -> tuple[list[Dataset], list[Dataset]]:
    """The scanner's T1 map of a second phantom study and its trainees' contours (SEG and RTSTRUCT) on it."""
    subprocess.run(
        [*_myomap(), "phantom", "--out", str(folder), "--studies", "1", "--seed", str(READERS_SEED), "--sequence",
         "molli", "--vendor", "siemens", "--readers", "trainees", "--slices", "1", "--workers", "1"],
        check=True, capture_output=True, timeout=300,
    )
    mid = folder / "study_0000" / "mid"
    maps = [pydicom.dcmread(path) for path in sorted(mid.glob("*_map/*.dcm"))]
    contours = [pydicom.dcmread(path) for path in sorted(mid.glob("readers/trainee*/*.dcm"))]
    if not maps or not contours:
        raise RuntimeError(f"the phantom wrote {len(maps)} map and {len(contours)} contour files")
    return maps, contours


def _send(datasets: list[Dataset], dicom_port: int, calling_ae: str) -> None:
    """Send the data sets as they are, in one association."""
    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate("127.0.0.1", dicom_port, ae_title=NODE_AE)
    if not association.is_established:
        raise RuntimeError("the node refused the association")
    try:
        for ds in datasets:
            status = association.send_c_store(ds)
            if int(status.get("Status", 0xFFFF)) != 0x0000:
                raise RuntimeError(f"C-STORE failed with status 0x{int(status.get('Status', 0xFFFF)):04X}")
    finally:
        association.release()


def _copy_study(datasets: list[Dataset]) -> list[Dataset]:
    """Deep copies of a study's objects under new Study, Series and SOP Instance UIDs; every reference among them
    (a contour's referenced map image and series) follows, so the copy is a study of its own."""
    mapping: dict[str, str] = {}
    for ds in datasets:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            mapping.setdefault(str(ds[keyword].value), generate_uid())

    def remap(dataset: Dataset) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    remap(item)
            elif element.VR == "UI" and str(element.value) in mapping:
                element.value = mapping[str(element.value)]

    copies = [copy.deepcopy(ds) for ds in datasets]
    for ds in copies:
        remap(ds)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return copies


class ReaderBacklog:
    """Readers' contours sent as new series until the node has ``size`` reader-scoring jobs queued.

    The contours come from copies of the readers' study (map and contours under new UIDs), each copy's contours
    sent once, so that a study holds as many readers as the phantom made (a reader job reads its study's other
    contours); the copies' maps are sent and analysed before the backlog phase, as their map jobs are console work.
    """

    def __init__(self, maps: list[Dataset], contours: list[Dataset], dicom_port: int, database_url: str,
                 size: int) -> None:
        self.maps = maps
        self.contours = contours
        self.dicom_port = dicom_port
        self.engine = make_engine(database_url)
        self.size = size
        self.sent = 0
        self.unsent: list[Dataset] = []
        self.used: list[Dataset] = []

    def _count(self, *states: JobState) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(
                select(func.count()).select_from(Job).where(Job.kind == READER_JOB, Job.state.in_(states))) or 0)

    def prepare(self, studies: int) -> None:
        """Send the maps of ``studies`` copies of the readers' study and wait until the node has analysed them."""
        maps: list[Dataset] = []
        for _ in range(studies):
            study = _copy_study([*self.maps, *self.contours])
            maps.extend(study[:len(self.maps)])
            self.unsent.extend(study[len(self.maps):])
        _send(maps, self.dicom_port, READING_AE)
        analysed = (select(func.count()).select_from(Job).join(Series)
                    .where(Series.calling_ae == READING_AE, Job.state.in_([JobState.DONE, JobState.FAILED])))
        deadline = time.monotonic() + 30 + 5 * studies
        while time.monotonic() < deadline:
            time.sleep(0.2)
            with self.engine.connect() as connection:
                if int(connection.scalar(analysed) or 0) >= studies:
                    return
        raise TimeoutError(f"the node did not analyse the maps of {studies} reader studies in time")

    def scored(self) -> int:
        return self._count(JobState.DONE, JobState.FAILED)

    def queued(self) -> int:
        return self._count(JobState.QUEUED)

    def _next(self) -> Dataset:
        if self.unsent:
            ds = self.unsent.pop(0)
        else:  # every copy's contours sent: a contour again as a further series of its study
            ds = copy.deepcopy(self.used[self.sent % len(self.used)])
            ds.SeriesInstanceUID = generate_uid()
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        self.used.append(ds)
        return ds

    def top_up(self) -> int:
        """Send contours until at least ``size`` reader jobs wait to run once the node has made the jobs of all of
        them (the first ones run meanwhile); the number queued then."""
        while (missing := self.size - self.queued()) > 0:
            _send([self._next() for _ in range(missing)], self.dicom_port, READING_AE)
            self.sent += missing
            deadline = time.monotonic() + 30
            while self._count(*JobState) < self.sent and time.monotonic() < deadline:
                time.sleep(0.02)  # the node commits each series' job right after storing it
        return self.queued()

    def close(self) -> None:
        self.engine.dispose()


def _start_console(port: int, arrivals: queue.Queue[Arrival]) -> object:
    def on_store(event: evt.Event) -> int:
        received = time.perf_counter()
        ds = event.dataset
        arrivals.put(Arrival(received, str(ds.SOPClassUID), str(ds.get("SeriesDescription", ""))))
        return 0x0000

    ae = AE(ae_title=CONSOLE_AE)
    for sop_class in (MRImageStorage, ParametricMapStorage, SecondaryCaptureImageStorage):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"])
    ae.add_supported_context(Verification)
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])


def _start_node(folder: Path, dicom_port: int, console_port: int, pairing_s: float) -> subprocess.Popen:
    config = {
        "series": {"pairing_seconds": pairing_s},
        "dicom": {"ae_title": NODE_AE, "bind": "127.0.0.1", "port": dicom_port},
        "web": {"bind": "127.0.0.1", "port": _free_port()},
        "storage": {"path": str(folder / "data"), "min_free_mb": 1},
        "logging": {"level": os.environ.get("BENCH_NODE_LOG", "WARNING")},
        "peers": [{"ae_title": CONSOLE_AE, "host": "127.0.0.1", "port": console_port, "receives": []}],
    }
    config_file = folder / "myomap.toml"
    config_file.write_bytes(tomli_w.dumps(config).encode())
    load_settings(config_file)  # fail here, not in the subprocess, on a bad configuration
    log = (folder / "node.log").open("wb")
    process = subprocess.Popen([*_myomap(), "serve", "--config", str(config_file)], cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"})
    echo_ae = AE(ae_title=CONSOLE_AE)
    echo_ae.add_requested_context(Verification)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"myomap serve exited: {(folder / 'node.log').read_text()}")
        association = echo_ae.associate("127.0.0.1", dicom_port, ae_title=NODE_AE)
        if association.is_established:
            association.send_c_echo()
            association.release()
            return process
        time.sleep(0.2)
    process.kill()
    raise TimeoutError("myomap serve did not answer C-ECHO within 60 s")


def _send_as_new_series(images: list[Dataset], dicom_port: int) -> float:
    """Send the images as a new series; the time of the last C-STORE response."""
    series_uid = generate_uid()
    ae = AE(ae_title=CONSOLE_AE)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", dicom_port, ae_title=NODE_AE)
    if not association.is_established:
        raise RuntimeError("the node refused the association")
    last_response = 0.0
    try:
        for ds in images:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            status = association.send_c_store(ds)
            last_response = time.perf_counter()
            if int(status.get("Status", 0xFFFF)) != 0x0000:
                raise RuntimeError(f"C-STORE failed with status 0x{int(status.get('Status', 0xFFFF)):04X}")
    finally:
        association.release()
    return last_response


def _run_once(images: list[Dataset], dicom_port: int, arrivals: queue.Queue[Arrival],
              expected: int) -> tuple[float, float, float]:
    """Latency to the first Secondary Capture, to the MR map and to all ``expected`` objects."""
    sent_at = _send_as_new_series(images, dicom_port)
    received: list[Arrival] = []
    deadline = time.monotonic() + MAP_TIMEOUT_S
    while len(received) < expected:
        try:
            received.append(arrivals.get(timeout=max(deadline - time.monotonic(), 0.01)))
        except queue.Empty:
            break
    captures = [a.at_s for a in received if a.sop_class_uid == SecondaryCaptureImageStorage]
    maps = [a.at_s for a in received if a.sop_class_uid == MRImageStorage]
    if not captures or not maps:
        raise RuntimeError(f"the console got {len(captures)} Secondary Captures and {len(maps)} MR maps")
    return min(captures) - sent_at, min(maps) - sent_at, max(a.at_s for a in received) - sent_at


def _count_objects(images: list[Dataset], dicom_port: int, arrivals: queue.Queue[Arrival]) -> int:
    """Send one series and count what comes back (Secondary Captures vary: attention maps only with motion)."""
    _send_as_new_series(images, dicom_port)
    received = [arrivals.get(timeout=MAP_TIMEOUT_S)]
    while True:
        try:
            received.append(arrivals.get(timeout=3.0))
        except queue.Empty:
            return len(received)


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process (its peak resident set), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmHWM for process {pid}")


def _percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile, linear between the sorted values (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _print_phase(name: str, results: list[tuple[float, float, float]], queued: list[int] | None = None) -> None:
    to_sc = [sc for sc, _mr, _all in results]
    to_mr = [mr for _sc, mr, _all in results]
    to_all = [everything for _sc, _mr, everything in results]
    print(f"{name}:")
    if queued is not None:
        print("  reader jobs queued when sent:   " + " ".join(f"{count:5d}" for count in queued))
    print("  to first Secondary Capture (s): " + " ".join(f"{value:5.3f}" for value in to_sc))
    print("  to MR map (s):                  " + " ".join(f"{value:5.3f}" for value in to_mr))
    print("  to every object (s):            " + " ".join(f"{value:5.3f}" for value in to_all))
    print(f"  first Secondary Capture: median {statistics.median(to_sc):.3f} s, p95 {_percentile(to_sc, 0.95):.3f} s;"
          f" MR map: median {statistics.median(to_mr):.3f} s; every object: median {statistics.median(to_all):.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="series per phase")
    parser.add_argument("--backlog", type=int, default=50, help="reader-scoring jobs queued ahead of each series")
    parser.add_argument("--pairing-seconds", type=float, default=load_settings().series.pairing_seconds)
    args = parser.parse_args()
    arrivals: queue.Queue[Arrival] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="myomap-latency-") as temporary:
        folder = Path(temporary)
        images = _phantom_slice(folder / "phantom")
        reader_maps, contours = _reader_study(folder / "readers")
        console_port, dicom_port = _free_port(), _free_port()
        console = _start_console(console_port, arrivals)
        node = _start_node(folder, dicom_port, console_port, args.pairing_seconds)
        backlog = ReaderBacklog(reader_maps, contours, dicom_port,
                                load_settings(folder / "myomap.toml").database_url, args.backlog)
        try:
            expected = _count_objects(images, dicom_port, arrivals)  # first series also warms the caches
            reference = [_run_once(images, dicom_port, arrivals, expected) for _ in range(args.runs)]
            # The readers' maps first, so that their contours are scored rather than left waiting for them; enough
            # studies for the contours the backlog phase is expected to send (readers score ~5/s here).
            backlog.prepare(math.ceil(args.backlog * (1 + args.runs / 2) / len(contours)))
            loaded: list[tuple[float, float, float]] = []
            queued: list[int] = []
            for _ in range(args.runs):
                queued.append(backlog.top_up())
                loaded.append(_run_once(images, dicom_port, arrivals, expected))
            scored = backlog.scored()
            rss_mib = peak_rss_mib(node.pid)
        finally:
            backlog.close()
            node.send_signal(signal.SIGTERM)
            node.wait(120)
            console.shutdown()
    print(f"console latency, MOLLI slice of {len(images)} images {images[0].Rows}x{images[0].Columns}, "
          f"{args.runs} series per phase, {expected} objects back per series, pairing wait "
          f"{args.pairing_seconds:.1f} s, {os.cpu_count()} CPUs")
    _print_phase("reference (queue empty)", reference)
    _print_phase(f"backlog ({args.backlog} reader-scoring jobs queued ahead; {scored} readers scored meanwhile)",
                 loaded, queued)
    reference_sc = [sc for sc, _mr, _all in reference]
    loaded_sc = [sc for sc, _mr, _all in loaded]
    p95_s = _percentile(loaded_sc, 0.95)
    print(f"backlog / reference: median {statistics.median(loaded_sc) / statistics.median(reference_sc):.2f}, "
          f"p95 {p95_s / _percentile(reference_sc, 0.95):.2f}; backlog p95 {p95_s:.3f} s against the "
          f"{TARGET_S:.1f} s target: ratio {p95_s / TARGET_S:.2f}; of it, the pairing wait is "
          f"{args.pairing_seconds:.1f} s")
    print(f"node peak RSS with every model loaded: {rss_mib:.0f} MiB; target 1024 MiB: ratio {rss_mib / 1024:.2f}")
    return 0 if p95_s <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
