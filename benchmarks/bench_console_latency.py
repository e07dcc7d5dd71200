"""Console latency: from the C-STORE response of the last raw image of a MOLLI slice to the verdict at the console.

A `myomap serve` subprocess (fresh data folder, SQLite, embedded defaults otherwise, CPU) receives one phantom
MOLLI slice (seed 31, Siemens flavour) from a pynetdicom SCU whose calling AE is the console, so the node returns
its Secondary Captures (map with contours and the motion verdict, AHA bullseye) and the maps to it. The node fits
the map, runs segmentation, contour fitting, AHA measurements, motion detection and segmentation QC, renders and
sends. The console is a pynetdicom Storage SCP in this process that records when each object arrives, on the same
clock as the sender. Each run sends the slice as a new series (new Series and SOP Instance UIDs). Printed: the
latency of every run to the first Secondary Capture (the headline figure), to the MR map and to everything,
their medians, and the ratio of the median to the design's 1 s target, next to the quiet period an assembler
without protocol-based completion would wait before even starting; and the node's peak RSS with every model
loaded (VmHWM), against the 1 GiB target. Exit status 1 when the median exceeds the target.

The node waits ``[series] pairing_seconds`` after a study's last mapping image before it analyses, so that a
scanner's map sent after its raw images is analysed with them once; that wait is part of the latency. The
default is the embedded default; ``--pairing-seconds 0`` measures a site whose scanners never send maps.

Usage: ``python benchmarks/bench_console_latency.py [--runs 7] [--pairing-seconds S]``
"""

from __future__ import annotations

import argparse
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
    MRImageStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from config import load_settings

TARGET_S = 1.0
PHANTOM_SEED = 31  # test seeds stay below 100000
CONSOLE_AE = "CONSOLE"
NODE_AE = "MYOMAP"
MAP_TIMEOUT_S = 60.0


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
        "logging": {"level": "WARNING"},
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pairing-seconds", type=float, default=load_settings().series.pairing_seconds)
    args = parser.parse_args()
    arrivals: queue.Queue[Arrival] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="myomap-latency-") as temporary:
        folder = Path(temporary)
        images = _phantom_slice(folder / "phantom")
        console_port, dicom_port = _free_port(), _free_port()
        console = _start_console(console_port, arrivals)
        node = _start_node(folder, dicom_port, console_port, args.pairing_seconds)
        try:
            expected = _count_objects(images, dicom_port, arrivals)  # first series also warms the caches
            results = [_run_once(images, dicom_port, arrivals, expected) for _ in range(args.runs)]
            rss_mib = peak_rss_mib(node.pid)
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
            console.shutdown()
    to_sc = [sc for sc, _mr, _all in results]
    to_mr = [mr for _sc, mr, _all in results]
    to_all = [everything for _sc, _mr, everything in results]
    quiet_s = load_settings().series.quiet_seconds
    print(f"console latency, MOLLI slice of {len(images)} images {images[0].Rows}x{images[0].Columns}, "
          f"{args.runs} runs, {expected} objects back per series")
    print("  to first Secondary Capture (s): " + " ".join(f"{value:.3f}" for value in to_sc))
    print("  to MR map (s):                  " + " ".join(f"{value:.3f}" for value in to_mr))
    print("  to every object (s):            " + " ".join(f"{value:.3f}" for value in to_all))
    median_s = statistics.median(to_sc)
    print(f"median to Secondary Capture {median_s:.3f} s, to MR map {statistics.median(to_mr):.3f} s, to every "
          f"object {statistics.median(to_all):.3f} s; target {TARGET_S:.1f} s: ratio {median_s / TARGET_S:.2f}; "
          f"a quiet-period assembler would wait {quiet_s:.1f} s before starting; of it, the pairing wait for a "
          f"scanner map is {args.pairing_seconds:.1f} s, the work {median_s - args.pairing_seconds:.3f} s")
    print(f"node peak RSS with every model loaded: {rss_mib:.0f} MiB; target 1024 MiB: ratio {rss_mib / 1024:.2f}")
    return 0 if median_s <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
