"""Ingest side by side: DCMTK storescp, Orthanc, a bare pynetdicom SCP and myomap (idle and while analysing),
over 1 and 4 parallel associations, in one run, with ratios against storescp.

The MR images of benchmarks/bench_ingest.py (256 x 218 uint16, eight inversion times per series) are sent by DCMTK
``storescu +sd`` on 127.0.0.1 (``TCP_NODELAY=1``); for 4 associations the images are split into four folders sent
by four ``storescu`` at once, and the time is until the last one ends. Every receiver is started before the clock
starts; afterwards the benchmark checks that each received every image (files, Orthanc's count, the bare SCP's
count, the node's instance rows). Each repetition sends fresh SOP instances (a re-send is not a store).

- ``storescp``: DCMTK's storescp writing into a folder (no fsync), one association at a time: the reference (1.0).
  ``storescp --fork`` (a process per association) is shown beside it for 4 associations.
- ``orthanc``: Orthanc (``/usr/sbin/Orthanc``) with its SQLite index, accepting any caller.
- ``pynetdicom``: the node's AE and association tuning in a process of its own, handler answering 0x0000.
- ``myomap idle``: ``myomap serve`` as shipped, its mapping series held back (``pairing_seconds`` an hour), so
  nothing is analysed while it receives.
- ``myomap analysing``: ``myomap serve`` analysing what it receives (``pairing_seconds`` 0): before the clock
  starts it has been sent a backlog of series and runs their analysis; the CPU seconds its analysis process and
  its slice helpers used during each send are printed beside it (0 would mean it was not analysing then).

Prints the median and range of images/s over the repetitions, ratios against storescp's median, and the goals:
myomap idle >= 0.2x storescp on one association, >= 0.5x with 4, analysing >= 0.8x idle. Prints the load average
before and after, since the machine may be shared. Exit status 1 when a goal is missed.

Usage: ``python benchmarks/bench_ingest_peers.py [--images 400] [--repetitions 3] [--backlog 240]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_ingest import DCMTK_ENV, free_port, wait_listening, write_images  # noqa: E402
from db.models import Instance, Job, JobState  # noqa: E402

ASSOCIATIONS = (1, 4)
GOAL_IDLE_1 = 0.2
GOAL_IDLE_4 = 0.5
GOAL_ANALYSING = 0.8
ORTHANC = Path("/usr/sbin/Orthanc")
MYOMAP = [str(Path(sys.executable).with_name("myomap"))]
STARTED = re.compile(r"analysis workers started in process (\d+)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_S = 2.0  # after the node says it is started, before the clock starts


@dataclass
class Series:
    """Images/s of one receiver over the repetitions, per number of associations."""

    rates: dict[int, list[float]] = field(default_factory=lambda: {n: [] for n in ASSOCIATIONS})
    notes: dict[int, list[str]] = field(default_factory=lambda: {n: [] for n in ASSOCIATIONS})


def split(folder: Path, parts: int) -> list[Path]:
    """The images of ``folder`` in ``parts`` sub-folders (hard links), series kept together."""
    files = sorted(folder.glob("*.dcm"))
    if parts == 1:
        return [folder]
    folders = [folder / f"part{index}" for index in range(parts)]
    for index, path in enumerate(files):
        target = folders[(index // 8) % parts]
        target.mkdir(exist_ok=True)
        os.link(path, target / path.name)
    return folders


def send(folders: list[Path], port: int, called_ae: str) -> float:
    """storescu per folder, all at once; seconds until the last ends."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["storescu", "--aetitle", "BENCHSCU", "--call", called_ae, "+sd", "127.0.0.1", str(port), str(f)],
            env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for f in folders
    ]
    failures = []
    for process in processes:
        _out, err = process.communicate()
        if process.returncode != 0:
            failures.append(err[-1000:])
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"storescu failed: {failures[0]}")
    return seconds


# --- receivers: each a context manager yielding (port, called AE, count of what it received) ---------------------

Counted = tuple[int, str, Callable[[], int]]


@contextmanager
def storescp(folder: Path, *, fork: bool = False) -> Iterator[Counted]:
    folder.mkdir(parents=True)
    port = free_port()
    process = subprocess.Popen(
        ["storescp", *(["--fork"] if fork else []), "--aetitle", "STORESCP", "--output-directory", str(folder),
         str(port)],
        env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        yield port, "STORESCP", lambda: sum(1 for _ in folder.iterdir())
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def orthanc(folder: Path) -> Iterator[Counted]:
    folder.mkdir(parents=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(folder), "IndexDirectory": str(folder), "Plugins": [],
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True, "DicomCheckModalityHost": False, "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], cwd=folder, env=DCMTK_ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}"

    def count() -> int:
        return int(httpx.get(f"{url}/statistics", timeout=30).json()["CountInstances"])

    try:
        wait_listening(dicom_port, process, timeout_s=30)
        wait_listening(http_port, process, timeout_s=30)
        yield dicom_port, "ORTHANC", count
    finally:
        process.terminate()
        process.wait(30)


def bare_scp(port: int, count_file: Path) -> None:
    """A pynetdicom SCP with the node's AE and tuning whose C-STORE handler only answers success."""
    from pynetdicom import evt

    from config.settings import DicomSettings, Settings
    from dicomnode.net.scp import make_ae, tune_association

    received = 0

    def handle_store(_event: object) -> int:
        nonlocal received
        received += 1
        return 0x0000

    def stop(_signum: int, _frame: object) -> None:
        count_file.write_text(str(received))
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    ae = make_ae(Settings(dicom=DicomSettings(ae_title="BARE", port=port)))
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[
        (evt.EVT_CONN_OPEN, tune_association), (evt.EVT_C_STORE, handle_store)])


@contextmanager
def pynetdicom_scp(folder: Path) -> Iterator[Counted]:
    folder.mkdir(parents=True)
    port = free_port()
    count_file = folder / "count"
    process = subprocess.Popen([sys.executable, __file__, "--bare-scp", str(port), str(count_file)])
    stopped: list[int] = []

    def count() -> int:
        if not stopped:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
            stopped.append(int(count_file.read_text()))
        return stopped[0]

    try:
        wait_listening(port, process, timeout_s=30)
        yield port, "BARE", count
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


@dataclass
class NodeHandle:
    port: int
    folder: Path
    process: subprocess.Popen

    def instances(self) -> int:
        engine = create_engine(f"sqlite:///{self.folder / 'data' / 'myomap.db'}")
        try:
            with engine.connect() as connection:
                return int(connection.scalar(select(func.count(Instance.id))) or 0)
        finally:
            engine.dispose()

    def jobs(self, *states: JobState) -> int:
        engine = create_engine(f"sqlite:///{self.folder / 'data' / 'myomap.db'}")
        try:
            with engine.connect() as connection:
                return int(connection.scalar(select(func.count(Job.id)).where(Job.state.in_(states))) or 0)
        finally:
            engine.dispose()

    def analysis_cpu_s(self) -> float:
        """CPU seconds used so far by the node's analysis process and its slice helpers (0 when it has none)."""
        found = STARTED.findall((self.folder / "node.log").read_text(errors="replace"))
        if not found:
            return 0.0
        analysis = int(found[-1])
        helpers = [int(pid) for children in Path(f"/proc/{analysis}/task").glob("*/children")
                   for pid in children.read_text().split()]
        return sum(_cpu_s(pid) for pid in [analysis, *helpers])


def _cpu_s(pid: int) -> float:
    """CPU seconds a process has used (0 once it has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def myomap_node(folder: Path, *, analysing: bool) -> Iterator[NodeHandle]:
    folder.mkdir(parents=True)
    port, web_port = free_port(), free_port()
    config = "\n".join([
        "[dicom]", 'ae_title = "MYOMAP"', 'bind = "127.0.0.1"', f"port = {port}",
        "[web]", 'bind = "127.0.0.1"', f"port = {web_port}",
        "[storage]", f'path = "{folder / "data"}"', "min_free_mb = 64",
        "[series]", "quiet_seconds = 1.0", f"pairing_seconds = {0.0 if analysing else 3600.0}",
        "[logging]", 'level = "INFO"',
    ])
    (folder / "myomap.toml").write_text(config + "\n")
    log = (folder / "node.log").open("ab")
    process = subprocess.Popen([*MYOMAP, "serve", "--config", str(folder / "myomap.toml")], cwd=folder,
                               stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    try:
        wait_listening(port, process, timeout_s=60)
        # Measured once fully started: the workers' process loads its models and the further SCP processes start
        # after the node listens, and on a small machine that start-up would share the CPUs with the first send.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log = (folder / "node.log").read_text(errors="replace")
            if "myomap worker started" in log and ("Storage SCP process" in log or (os.cpu_count() or 1) == 1):
                break
            time.sleep(0.2)
        time.sleep(SETTLE_S)
        yield NodeHandle(port, folder, process)
    finally:
        process.terminate()
        process.wait(120)


def percent(values: list[float]) -> str:
    return f"{min(values):6.1f}-{max(values):6.1f}"


def run(n_images: int, repetitions: int, backlog: int) -> bool:
    work = Path(tempfile.mkdtemp(prefix="myomap-bench-peers-"))
    names = ["storescp", "storescp --fork", "orthanc", "pynetdicom", "myomap idle", "myomap analysing"]
    results = {name: Series() for name in names}
    load_before = os.getloadavg()
    try:
        print(f"{n_images} MR images 256x218 uint16 per send, {repetitions} repetitions, backlog of {backlog} "
              f"images for the analysing node; {os.cpu_count()} CPUs, load average before "
              f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
        for repetition in range(repetitions):
            sets = {}
            for n in ASSOCIATIONS:
                images = work / f"images_{repetition}_{n}"
                images.mkdir()
                write_images(images, n_images)
                sets[n] = split(images, n)
            receivers: list[tuple[str, Callable[[Path], object]]] = [
                ("storescp", storescp), ("storescp --fork", lambda f: storescp(f, fork=True)),
                ("orthanc", orthanc), ("pynetdicom", pynetdicom_scp),
            ]
            for name, make in receivers:
                if name == "orthanc" and not ORTHANC.exists():
                    continue
                for n in ASSOCIATIONS:
                    if name == "storescp --fork" and n == 1:
                        continue
                    folder = work / f"{name.replace(' ', '_')}_{repetition}_{n}"
                    with make(folder) as (port, ae, count):  # type: ignore[attr-defined]
                        seconds = send(sets[n], port, ae)
                        arrived = count()
                    if arrived != n_images:
                        raise RuntimeError(f"{name} received {arrived} of {n_images} images")
                    results[name].rates[n].append(n_images / seconds)
                    shutil.rmtree(folder, ignore_errors=True)
            for analysing in (False, True):
                name = "myomap analysing" if analysing else "myomap idle"
                folder = work / f"node_{repetition}_{int(analysing)}"
                with myomap_node(folder, analysing=analysing) as node:
                    if analysing:
                        pre = work / f"backlog_{repetition}"
                        pre.mkdir()
                        write_images(pre, backlog)
                        send([pre], node.port, "MYOMAP")
                        deadline = time.monotonic() + 60
                        while node.jobs(JobState.RUNNING) == 0 and time.monotonic() < deadline:
                            time.sleep(0.1)
                    expected = 0 if not analysing else backlog
                    for n in ASSOCIATIONS:
                        cpu_before = node.analysis_cpu_s()
                        seconds = send(sets[n], node.port, "MYOMAP")
                        cpu_s = node.analysis_cpu_s() - cpu_before
                        expected += n_images
                        if node.instances() != expected:
                            raise RuntimeError(f"{name} recorded {node.instances()} of {expected} instances")
                        results[name].rates[n].append(n_images / seconds)
                        results[name].notes[n].append(
                            f"analysis {cpu_s:.1f} CPU-s in {seconds:.1f} s, "
                            f"{node.jobs(JobState.QUEUED, JobState.RUNNING)} jobs left")
                shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(work / f"images_{repetition}_1", ignore_errors=True)
            shutil.rmtree(work / f"images_{repetition}_4", ignore_errors=True)
            print(f"  repetition {repetition + 1} done")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    reference = {n: statistics.median(results["storescp"].rates[n]) for n in ASSOCIATIONS}
    print()
    print(f"{'receiver':<18} | {'1 association: img/s (range)':<30} {'ratio':>6} | "
          f"{'4 associations: img/s (range)':<30} {'ratio':>6}")
    for name in names:
        cells = []
        for n in ASSOCIATIONS:
            rates = results[name].rates[n]
            if not rates:
                cells.append(f"{'-':<30} {'-':>6}")
                continue
            median = statistics.median(rates)
            cells.append(f"{median:6.1f} ({percent(rates)}){'':<10} {median / reference[n]:6.2f}")
        print(f"{name:<18} | {cells[0]} | {cells[1]}")
    for n in ASSOCIATIONS:
        for note in results["myomap analysing"].notes[n]:
            print(f"  myomap analysing, {n} association(s): {note}")
    idle = {n: statistics.median(results["myomap idle"].rates[n]) for n in ASSOCIATIONS}
    busy = {n: statistics.median(results["myomap analysing"].rates[n]) for n in ASSOCIATIONS}
    goals = [
        (f"myomap idle / storescp, 1 association >= {GOAL_IDLE_1}", idle[1] / reference[1], GOAL_IDLE_1),
        (f"myomap idle / storescp, 4 associations >= {GOAL_IDLE_4}", idle[4] / reference[4], GOAL_IDLE_4),
        (f"myomap analysing / idle, 1 association >= {GOAL_ANALYSING}", busy[1] / idle[1], GOAL_ANALYSING),
        (f"myomap analysing / idle, 4 associations >= {GOAL_ANALYSING}", busy[4] / idle[4], GOAL_ANALYSING),
    ]
    print()
    for text, value, goal in goals:
        print(f"{text}: {value:.2f} {'met' if value >= goal else 'MISSED'}")
    print(f"load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    return all(value >= goal for _text, value, goal in goals)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-scp":
        bare_scp(int(sys.argv[2]), Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="images per send (default 400)")
    parser.add_argument("--repetitions", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--backlog", type=int, default=240, help="images queued for analysis first (default 240)")
    arguments = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"DCMTK {tool} is not installed (apt-get install dcmtk)", file=sys.stderr)
            return 2
    return 0 if run(arguments.images, arguments.repetitions, arguments.backlog) else 1


if __name__ == "__main__":
    sys.exit(main())
