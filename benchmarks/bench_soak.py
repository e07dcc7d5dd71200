"""Soak: a running node under mixed traffic for a set time; nothing acknowledged may be lost and memory must stay
flat.

A `myomap serve` subprocess (fresh data folder, SQLite, embedded defaults otherwise, CPU) gets, all at once and
for ``--minutes`` (default 30; ``--minutes 2`` for a CI-size run):

- a scanner console sending a phantom MOLLI slice (seed 31, Siemens) as a new study every ``--study-interval-s``,
  getting its maps and Secondary Captures back (a pynetdicom Storage SCP in this process, timing arrivals);
- a reading station sending trainees' contours (SEG, RTSTRUCT; phantom seed 32) on copies of their study's map;
- a broken sender: mutated files (benchmarks/malformed_inputs.py, seed 7) and a 1 GiB deflate bomb now and then;
- 20 idle TCP connections that never send an A-ASSOCIATE-RQ, re-opened whenever the node closes one;
- web logins through the login form (with its CSRF token), right ones for the admin and wrong ones for an
  unknown user, and /healthz.

Printed: instances acknowledged (status 0x0000), stored (rows), analysed (jobs done), sent (transfers sent); the
broken sender's statuses; the RSS and the PSS of the node's processes together (the node, its analysis process and
its slice helpers, its other SCP processes) every ``--sample-s`` and their slopes (least squares, MiB per minute,
over the second half of the run, after the models have loaded; PSS splits the pages processes share, which RSS
counts in each); console latency percentiles (last C-STORE response to first Secondary Capture); C-ECHO latency;
login outcomes. After the traffic stops the node may finish its queue (up to ``--drain-s``), then every
acknowledged SOP Instance UID is looked up: exit status 1 when one is missing from the database or its file.

Usage: ``python benchmarks/bench_soak.py [--minutes 30] [--study-interval-s 20] [--sample-s 10]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    ParametricMapStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, _config, evt
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_console_latency import (  # noqa: E402
    CONSOLE_AE,
    NODE_AE,
    READING_AE,
    _copy_study,
    _free_port,
    _phantom_slice,
    _reader_study,
    _start_node,
)
from benchmarks.malformed_inputs import MIB, deflate_bomb, mutated_inputs  # noqa: E402
from config import load_settings  # noqa: E402
from db.models import Instance, Job, JobState, Transfer, TransferState  # noqa: E402
from db.session import make_engine  # noqa: E402

BAD_SENDER_AE = "BROKEN"
IDLE_CONNECTIONS = 20
BAD_INPUTS_SEED = 7
BOMB_EVERY = 40  # one deflate bomb per this many mutated files
WRONG_LOGIN_EVERY = 4  # one wrong login per this many logins
SC_TIMEOUT_S = 120.0
VERIFICATION = "1.2.840.10008.1.1"


@dataclass
class Tally:
    """What the traffic threads saw, shared under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> who sent it
    failed_sends: Counter[str] = field(default_factory=Counter)
    bad_statuses: Counter[str] = field(default_factory=Counter)
    console_latency_s: list[float] = field(default_factory=list)
    echo_latency_s: list[float] = field(default_factory=list)
    logins: Counter[str] = field(default_factory=Counter)
    healthz_s: list[float] = field(default_factory=list)
    idle_opened: int = 0
    errors: list[str] = field(default_factory=list)

    def ack(self, uid: str, who: str) -> None:
        with self.lock:
            self.acknowledged[uid] = who


def _store_all(ae_title: str, datasets: list[Dataset], port: int, tally: Tally) -> float:
    """C-STORE every data set in one association; acknowledged ones are tallied. The last response's time."""
    ae = AE(ae_title=ae_title)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    last = time.perf_counter()
    if not assoc.is_established:
        with tally.lock:
            tally.failed_sends[f"{ae_title}: association refused"] += len(datasets)
        return last
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            last = time.perf_counter()
            code = int(status.get("Status", 0xFFFF))
            if code == 0x0000:
                tally.ack(str(ds.SOPInstanceUID), ae_title)
            else:
                with tally.lock:
                    tally.failed_sends[f"{ae_title}: 0x{code:04X}"] += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return last


class Console:
    """The scanner console: a Storage SCP noting when the first Secondary Capture of each study arrives."""

    def __init__(self, port: int) -> None:
        self.first_capture_at: dict[str, float] = {}
        self.received = 0
        self._changed = threading.Condition()
        ae = AE(ae_title=CONSOLE_AE)
        for sop_class in (MRImageStorage, ParametricMapStorage, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(VERIFICATION)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event: evt.Event) -> int:
        at = time.perf_counter()
        ds = event.dataset
        with self._changed:
            self.received += 1
            if str(ds.SOPClassUID) == SecondaryCaptureImageStorage:
                self.first_capture_at.setdefault(str(ds.StudyInstanceUID), at)
            self._changed.notify_all()
        return 0x0000

    def wait_capture(self, study_uid: str, timeout_s: float) -> float | None:
        with self._changed:
            self._changed.wait_for(lambda: study_uid in self.first_capture_at, timeout=timeout_s)
            return self.first_capture_at.get(study_uid)


def scanner(images: list[Dataset], port: int, console: Console, interval_s: float, stop: threading.Event,
            tally: Tally) -> None:
    """A new study every ``interval_s``; the latency to its first Secondary Capture at the console."""
    while not stop.is_set():
        started = time.monotonic()
        study = _copy_study(images)
        sent_at = _store_all(CONSOLE_AE, study, port, tally)
        captured_at = console.wait_capture(str(study[0].StudyInstanceUID), SC_TIMEOUT_S)
        with tally.lock:
            tally.console_latency_s.append(captured_at - sent_at if captured_at is not None else float("inf"))
        stop.wait(max(interval_s - (time.monotonic() - started), 0.0))


def reading_station(maps: list[Dataset], contours: list[Dataset], port: int, interval_s: float,
                    stop: threading.Event, tally: Tally) -> None:
    """Each round: a copy of the readers' study, its map first, then its contours."""
    while not stop.is_set():
        study = _copy_study([*maps, *contours])
        _store_all(READING_AE, study[: len(maps)], port, tally)
        stop.wait(2.0)
        _store_all(READING_AE, study[len(maps):], port, tally)
        stop.wait(interval_s)


def broken_sender(port: int, folder: Path, stop: threading.Event, tally: Tally) -> None:
    """Mutated files one after another, a deflate bomb every ``BOMB_EVERY``; every C-STORE must be answered."""
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the files' bytes as they are
    ae = AE(ae_title=BAD_SENDER_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless):
        ae.add_requested_context(MRImageStorage, syntax)
    bomb = folder / "bomb.dcm"
    bomb.write_bytes(deflate_bomb(1024 * MIB))
    path = folder / "mutated.dcm"
    inputs = mutated_inputs(10**9, seed=BAD_INPUTS_SEED)
    assoc = None
    for count in itertools.count(1):
        if stop.is_set():
            break
        if count % BOMB_EVERY == 0:
            sending, kind = bomb, "deflate bomb"
        else:
            mutated = next(inputs)
            path.write_bytes(mutated.file_bytes)
            sending, kind = path, mutated.kind
        if assoc is None or not assoc.is_established:
            assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
            if not assoc.is_established:
                with tally.lock:
                    tally.bad_statuses["association refused"] += 1
                stop.wait(1.0)
                continue
        status = assoc.send_c_store(sending)
        code = int(status.Status) if "Status" in status else None
        with tally.lock:
            tally.bad_statuses["no answer" if code is None else f"0x{code:04X}"] += 1
            if code is None:
                tally.errors.append(f"no answer to a {kind}")
        if code == 0x0000:
            tally.ack(str(read_file_meta_info(sending).MediaStorageSOPInstanceUID), BAD_SENDER_AE)
        stop.wait(0.2)
    if assoc is not None and assoc.is_established:
        assoc.release()


def idle_connections(port: int, stop: threading.Event, tally: Tally) -> None:
    """Hold ``IDLE_CONNECTIONS`` connections that send nothing, re-opening each one the node closes."""

    def hold() -> None:
        while not stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                stop.wait(0.1)
                continue
            with tally.lock:
                tally.idle_opened += 1
            sock.settimeout(0.5)
            with sock:
                while not stop.is_set():
                    try:
                        if sock.recv(1) == b"":
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(IDLE_CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def echo_watch(port: int, stop: threading.Event, tally: Tally) -> None:
    ae = AE(ae_title=CONSOLE_AE)
    ae.add_requested_context(VERIFICATION)
    while not stop.is_set():
        started = time.perf_counter()
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
        ok = assoc.is_established and int(assoc.send_c_echo().get("Status", 0xFFFF)) == 0
        if assoc.is_established:
            assoc.release()
        with tally.lock:
            tally.echo_latency_s.append(time.perf_counter() - started if ok else float("inf"))
        stop.wait(1.0)


def web_logins(web_port: int, admin_password: str, stop: threading.Event, tally: Tally) -> None:
    """Form logins (the CSRF token taken from the form), one wrong in ``WRONG_LOGIN_EVERY``; and /healthz."""
    base = f"http://127.0.0.1:{web_port}"
    for count in itertools.count(1):
        if stop.is_set():
            break
        wrong = count % WRONG_LOGIN_EVERY == 0
        user, password = ("intruder", "not-the-password") if wrong else ("admin", admin_password)
        try:
            with httpx.Client(base_url=base, timeout=30, headers={"Origin": base}) as client:
                form = client.get("/login").text
                token = re.search(r'name="csrf_token" value="([^"]+)"', form)
                fields = {"username": user, "password": password, "next": "/"}
                if token:
                    fields["csrf_token"] = token.group(1)
                response = client.post("/login", data=fields)
                logged_in = response.status_code in (302, 303) or (
                    response.status_code == 200 and 'name="password"' not in response.text)
                outcome = ("wrong refused" if not logged_in else "WRONG ACCEPTED") if wrong else (
                    "admin in" if logged_in else f"admin refused ({response.status_code})")
                started = time.perf_counter()
                client.get("/healthz")
                healthz_s = time.perf_counter() - started
        except httpx.HTTPError as error:
            outcome, healthz_s = f"error {type(error).__name__}", float("inf")
        with tally.lock:
            tally.logins[outcome] += 1
            tally.healthz_s.append(healthz_s)
        stop.wait(1.0)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it: the node, its analysis process and its other SCP processes."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in children.read_text().split())
            except OSError:  # the task ended meanwhile
                continue
    return found


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss for process {pid}")


def tree_rss_mib(pid: int) -> float:
    """The resident memory of the node's whole process tree (processes that end meanwhile count 0); pages that
    processes share (a forked slice helper's models) count once in each."""
    return _tree_sum(pid, rss_mib)


def tree_pss_mib(pid: int) -> float:
    """The proportional set size of the node's whole process tree: each shared page split between the processes
    that share it, so that the sum is the memory the node holds."""
    return _tree_sum(pid, pss_mib)


def _tree_sum(pid: int, measure: Callable[[int], float]) -> float:
    total = 0.0
    for member in process_tree(pid):
        try:
            total += measure(member)
        except (OSError, RuntimeError):
            continue
    return total


def slope_mib_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 2:
        return float("nan")
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return float("nan")
    return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def _counts(database_url: str) -> dict[str, int]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            def count(query: object) -> int:
                return int(connection.scalar(query) or 0)  # type: ignore[call-overload]

            return {
                "stored": count(select(func.count()).select_from(Instance)),
                "analysed": count(select(func.count()).select_from(Job).where(Job.state == JobState.DONE)),
                "failed jobs": count(select(func.count()).select_from(Job).where(Job.state == JobState.FAILED)),
                "open jobs": count(select(func.count()).select_from(Job).where(
                    Job.state.notin_([JobState.DONE, JobState.FAILED]))),
                "sent": count(select(func.count()).select_from(Transfer).where(Transfer.state == TransferState.SENT)),
            }
    finally:
        engine.dispose()


def _missing(database_url: str, storage_root: Path, acknowledged: dict[str, str]) -> list[str]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = {uid: path for uid, path in connection.execute(select(Instance.sop_instance_uid, Instance.path))}
    finally:
        engine.dispose()
    return [uid for uid in acknowledged if uid not in rows or not (storage_root / rows[uid]).is_file()]


def _run_threads(targets: list[tuple[str, Callable[[], None]]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, name=name, daemon=True) for name, target in targets]
    for thread in threads:
        thread.start()
    return threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the traffic runs")
    parser.add_argument("--study-interval-s", type=float, default=20.0, help="a scanner study every this often")
    parser.add_argument("--reader-interval-s", type=float, default=15.0, help="a readers' study every this often")
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS sampled every this often")
    parser.add_argument("--drain-s", type=float, default=180.0, help="time the node gets to finish its queue")
    args = parser.parse_args()
    tally = Tally()
    samples: list[tuple[float, float]] = []
    pss_samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="myomap-soak-") as temporary:
        folder = Path(temporary)
        images = _phantom_slice(folder / "phantom")
        reader_maps, contours = _reader_study(folder / "readers")
        console_port, dicom_port = _free_port(), _free_port()
        console = Console(console_port)
        node = _start_node(folder, dicom_port, console_port, load_settings().series.pairing_seconds)
        settings = load_settings(folder / "myomap.toml")
        admin_password = (settings.storage_root / "initial_admin_password").read_text().strip()
        stop = threading.Event()
        started = time.monotonic()
        threads = _run_threads([
            ("scanner", lambda: scanner(images, dicom_port, console, args.study_interval_s, stop, tally)),
            ("readers", lambda: reading_station(reader_maps, contours, dicom_port, args.reader_interval_s, stop,
                                                tally)),
            ("broken", lambda: broken_sender(dicom_port, folder, stop, tally)),
            ("idle", lambda: idle_connections(dicom_port, stop, tally)),
            ("echo", lambda: echo_watch(dicom_port, stop, tally)),
            ("web", lambda: web_logins(settings.web.port, admin_password, stop, tally)),
        ])
        try:
            while time.monotonic() - started < args.minutes * 60:
                samples.append((time.monotonic() - started, tree_rss_mib(node.pid)))
                pss_samples.append((samples[-1][0], tree_pss_mib(node.pid)))
                time.sleep(min(args.sample_s, max(args.minutes * 60 - (time.monotonic() - started), 0.01)))
            samples.append((time.monotonic() - started, tree_rss_mib(node.pid)))
            pss_samples.append((samples[-1][0], tree_pss_mib(node.pid)))
            stop.set()
            for thread in threads:
                thread.join(timeout=150)
            traffic_s = time.monotonic() - started
            drain_deadline = time.monotonic() + args.drain_s
            while time.monotonic() < drain_deadline and _counts(settings.database_url)["open jobs"]:
                time.sleep(2.0)
            counts = _counts(settings.database_url)
            final_rss, final_pss = tree_rss_mib(node.pid), tree_pss_mib(node.pid)
            processes = len(process_tree(node.pid))
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(120)
            if console.server is not None:
                console.server.shutdown()
        missing = _missing(settings.database_url, settings.storage_root, tally.acknowledged)

    by_sender = Counter(tally.acknowledged.values())
    print(f"soak: {traffic_s / 60:.1f} min of traffic, {os.cpu_count()} CPUs; a study every "
          f"{args.study_interval_s:.0f} s, readers every {args.reader_interval_s:.0f} s, {IDLE_CONNECTIONS} idle "
          f"connections ({tally.idle_opened} opened), a broken sender and web logins throughout")
    print(f"acknowledged {len(tally.acknowledged)} ({dict(by_sender)}); stored {counts['stored']}; analysed "
          f"{counts['analysed']} jobs ({counts['failed jobs']} failed, {counts['open jobs']} still open after the "
          f"drain); sent {counts['sent']}")
    print(f"refused or failed sends of the scanner and readers: {dict(tally.failed_sends) or 'none'}")
    print(f"broken sender's statuses: {dict(tally.bad_statuses)}")
    print(f"node RSS over time, its {processes} processes together (s: MiB): "
          + ", ".join(f"{t:.0f}: {v:.0f}" for t, v in samples))
    second_half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    print(f"RSS slope: {slope_mib_per_min(samples):+.2f} MiB/min over the run, {slope_mib_per_min(second_half):+.2f} "
          f"MiB/min over its second half; {final_rss:.0f} MiB after the drain")
    print("node PSS over time (shared pages split between the processes sharing them: the memory the node holds; "
          "the RSS sum counts the models a slice helper shares with its parent twice) (s: MiB): "
          + ", ".join(f"{t:.0f}: {v:.0f}" for t, v in pss_samples))
    pss_second_half = [s for s in pss_samples if s[0] >= pss_samples[-1][0] / 2]
    print(f"PSS slope: {slope_mib_per_min(pss_samples):+.2f} MiB/min over the run, "
          f"{slope_mib_per_min(pss_second_half):+.2f} MiB/min over its second half; {final_pss:.0f} MiB after the "
          f"drain; peak {max(v for _, v in pss_samples):.0f} MiB against the 1024 MiB target")
    console_s = tally.console_latency_s
    print(f"console latency (last C-STORE response to first Secondary Capture), {len(console_s)} studies: median "
          f"{percentile(console_s, 0.5):.2f} s, p95 {percentile(console_s, 0.95):.2f} s, max "
          f"{max(console_s, default=float('nan')):.2f} s")
    echo_s = tally.echo_latency_s
    print(f"C-ECHO, {len(echo_s)} calls: median {percentile(echo_s, 0.5) * 1000:.0f} ms, p95 "
          f"{percentile(echo_s, 0.95) * 1000:.0f} ms, max {max(echo_s, default=float('nan')) * 1000:.0f} ms")
    print(f"web logins: {dict(tally.logins)}; /healthz p95 {percentile(tally.healthz_s, 0.95) * 1000:.0f} ms")
    if tally.errors:
        print(f"unanswered: {tally.errors[:10]}")
    print(f"acknowledged but missing: {len(missing)}{' ' + str(missing[:10]) if missing else ''}")
    return 1 if missing or tally.errors else 0


if __name__ == "__main__":
    sys.exit(main())
