"""Running a real node (`myomap serve` in a subprocess), DCMTK's storescp as a console and storescu as a scanner.

Everything binds 127.0.0.1 on free ports; DCMTK tools get TCP_NODELAY=1 (otherwise Nagle's delay dominates).
A node configured with a PostgreSQL database and a Redis queue (``write_config(database_url=..., queue_url=...)``)
can get extra ``myomap worker`` processes on the same configuration (:meth:`NodeProcess.worker`).
The web page needs a login: once started, ``NodeProcess.web_auth`` holds the first ``admin`` user's name and
password (from ``<data>/initial_admin_password``) for httpx's ``auth=``.
The phantom helpers make the synthetic studies the end-to-end tests send and read their ground truth.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import tomli_w

from reports.web.users import INITIAL_ADMIN, INITIAL_PASSWORD_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_AE = "MYOMAP"
CONSOLE_AE = "CONSOLE"
#: What `myomap worker` logs once its consumer is about to take tasks (dicomnode.app.server.run_worker).
WORKER_READY = "myomap worker started"


def myomap_executable() -> list[str]:
    """The `myomap` entry point of the running interpreter's environment (as `make run` uses it)."""
    script = Path(sys.executable).with_name("myomap")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dicomnode.app.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def echo(port: int, *, ae_title: str = NODE_AE, timeout_s: float = 5.0) -> bool:
    """True when echoscu gets a C-ECHO response from 127.0.0.1:port."""
    try:
        done = subprocess.run(
            ["echoscu", "-to", "2", "-aec", ae_title, "-aet", CONSOLE_AE, "127.0.0.1", str(port)],
            env=dcmtk_env(), capture_output=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


class _ManagedProcess:
    """Stop, kill and log of a `myomap` subprocess; subclasses set ``process`` and ``log_file``."""

    process: subprocess.Popen | None
    log_file: Path

    def stop(self, *, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not stop); the exit status, None if it was not running."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@dataclass
class NodeProcess(_ManagedProcess):
    """A `myomap serve` subprocess with its own data folder and ports."""

    folder: Path
    dicom_port: int
    web_port: int
    console_port: int
    process: subprocess.Popen | None = None
    #: (user, password) for the web page and its JSON API (HTTP Basic, httpx's ``auth=``): the ``admin`` the node
    #: created at its first start, read from ``<data>/initial_admin_password``; None while not started or with
    #: the login off.
    web_auth: tuple[str, str] | None = None

    @property
    def config_file(self) -> Path:
        return self.folder / "myomap.toml"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "node.log"

    def write_config(
        self,
        *,
        workers: int = 2,
        quiet_seconds: float = 3.0,
        database_url: str | None = None,
        queue_url: str | None = None,
        overrides: Mapping[str, Mapping[str, object]] | None = None,
        peers: Sequence[Mapping[str, object]] = (),
        console_receives: Sequence[str] = (),
        console_peer: Mapping[str, object] | None = None,
    ) -> None:
        """Write the node's TOML file; without URLs the database and the queue are SQLite files under ``data``.

        ``overrides`` adds or replaces keys per section, e.g. ``{"dicom": {"dimse_timeout_s": 2.0}}``; ``peers``
        are added after the console, e.g. a PACS: ``{"ae_title": "ORTHANC", "host": ..., "port": ...,
        "receives": ["sr", "seg", "sc"]}``; ``console_receives`` are the outputs routed to the console besides
        the maps it gets back as their sender, e.g. ``["sr", "sc"]``; ``console_peer`` adds or replaces keys of
        the console's ``[[peers]]`` entry, e.g. ``{"tls": True}``.
        """
        queue: dict[str, object] = {"workers": workers}
        if queue_url:
            queue["url"] = queue_url
        config = {
            "dicom": {"ae_title": NODE_AE, "bind": "127.0.0.1", "port": self.dicom_port},
            "web": {"bind": "127.0.0.1", "port": self.web_port},
            "storage": {"path": str(self.data), "min_free_mb": 1},
            "queue": queue,
            "series": {"quiet_seconds": quiet_seconds},
            "scu": {"backoff_initial_s": 0.5, "max_attempts": 4},
            "logging": {"level": "DEBUG"},
            # The console sends the raw images and gets the maps back (return to sender).
            "peers": [{"ae_title": CONSOLE_AE, "host": "127.0.0.1", "port": self.console_port,
                       "receives": list(console_receives), **(console_peer or {})},
                      *(dict(peer) for peer in peers)],
        }
        if database_url:
            config["database"] = {"url": database_url}
        for section, values in (overrides or {}).items():
            config[section] = {**config.get(section, {}), **values}
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_file.write_bytes(tomli_w.dumps(config).encode())

    def worker(self, name: str = "worker") -> WorkerProcess:
        """A `myomap worker` process on this node's configuration, logging to ``<folder>/<name>.log``."""
        return WorkerProcess(self.config_file, self.folder / f"{name}.log")

    def start(self, *, timeout_s: float = 60.0) -> None:
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [*myomap_executable(), "serve", "--config", str(self.config_file)],
            cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env(),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"myomap serve exited with {self.process.returncode}:\n{self.log()}")
            if echo(self.dicom_port):
                self.web_auth = self._read_web_auth()
                return
            time.sleep(0.2)
        raise TimeoutError(f"myomap serve did not answer C-ECHO within {timeout_s} s:\n{self.log()}")

    def _read_web_auth(self) -> tuple[str, str] | None:
        # The node writes the file before its DICOM listener starts, so it is there once C-ECHO answers.
        password_file = self.data / INITIAL_PASSWORD_FILE
        if not password_file.exists():
            return None
        return INITIAL_ADMIN, password_file.read_text().strip()

    def transfers(self, ae_title: str) -> list[dict]:
        """The node's outgoing transfers to ``ae_title`` (its JSON API), newest first."""
        response = httpx.get(f"http://127.0.0.1:{self.web_port}/api/transfers", params={"limit": 1000},
                             auth=self.web_auth, timeout=10)
        response.raise_for_status()
        return [t for t in response.json() if t["ae_title"] == ae_title]

    def wait_delivered(self, ae_title: str, *, timeout_s: float = 60.0) -> list[dict]:
        """Wait until the node has transfers to ``ae_title`` and none of them is still pending; those transfers.

        Outputs committed together are queued together, so once one has arrived this says when the rest have.
        """
        def settled() -> bool:
            transfers = self.transfers(ae_title)
            return bool(transfers) and all(t["state"] != "pending" for t in transfers)

        wait_until(settled, timeout_s=timeout_s, interval_s=0.2, what=f"every transfer to {ae_title} settled")
        return self.transfers(ae_title)

    def myomap(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*myomap_executable(), *args, "--config", str(self.config_file)],
            cwd=self.folder, capture_output=True, text=True, timeout=60,
        )


def serve(folder: Path, console_port: int, **config: Any) -> Iterator[NodeProcess]:
    """For a fixture to ``yield from``: `myomap serve` in ``folder`` on free ports, configured by
    :meth:`NodeProcess.write_config` with ``config``, sending to the console on ``console_port``; at teardown it
    must stop cleanly (exit status 0)."""
    node = NodeProcess(folder, free_port(), free_port(), console_port)
    node.write_config(**config)
    node.start()
    yield node
    assert node.stop() == 0, node.log()


@dataclass
class WorkerProcess(_ManagedProcess):
    """A `myomap worker` subprocess: queue workers only, on the configuration file of a :class:`NodeProcess`."""

    config_file: Path
    log_file: Path
    process: subprocess.Popen | None = None

    def start(self, *, workers: int | None = None, timeout_s: float = 60.0) -> None:
        """Start it (``workers`` overrides the file's worker count) and wait until it consumes the queue."""
        env = dict(os.environ)
        if workers is not None:
            env["MYOMAP_QUEUE__WORKERS"] = str(workers)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [*myomap_executable(), "worker", "--config", str(self.config_file)],
            cwd=self.config_file.parent, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"myomap worker exited with {self.process.returncode}:\n{self.log()}")
            if WORKER_READY in self.log()[offset:]:
                return
            time.sleep(0.1)
        raise TimeoutError(f"myomap worker did not start within {timeout_s} s:\n{self.log()}")



@dataclass
class Console:
    """DCMTK storescp standing in for the scanner console that receives the maps."""

    folder: Path
    port: int
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "-aet", CONSOLE_AE, "-od", str(self.folder), "-fe", ".dcm", str(self.port)],
            env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not echo(self.port, ae_title=CONSOLE_AE):
            if time.monotonic() > deadline:
                raise TimeoutError("storescp did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file() and p.suffix == ".dcm")

    def files_of(self, *sop_class_uids: str) -> list[Path]:
        """The received files of these SOP classes (maps, Secondary Captures, ...); a file storescp is still writing
        (no header yet) is left out until it is complete."""
        found = []
        for path in self.files():
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except (pydicom.errors.InvalidDicomError, EOFError):
                continue
            if str(header.SOPClassUID) in sop_class_uids:
                found.append(path)
        return found


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((\w+)")


def parse_storescu_log(lines: Iterable[str]) -> dict[Path, str]:
    """File -> status word ("Success", "Warning", ...) of every file storescu got a C-STORE response for."""
    statuses: dict[Path, str] = {}
    current: Path | None = None
    for line in lines:
        sending = _SENDING.search(line)
        if sending:
            current = Path(sending.group(1).strip())
            continue
        response = _RESPONSE.search(line)
        if response and current is not None:
            statuses[current] = response.group(1)
            current = None
    return statuses


def storescu_command(port: int, files: Iterable[Path]) -> list[str]:
    """storescu as the scanner: calling AE CONSOLE (so maps return to it), verbose, one association."""
    return ["storescu", "-v", "-aet", CONSOLE_AE, "-aec", NODE_AE, "127.0.0.1", str(port), *map(str, files)]


def send(port: int, files: Iterable[Path], *, timeout_s: float = 120.0) -> dict[Path, str]:
    """Send files with storescu and return the status of each acknowledged file."""
    done = subprocess.run(
        storescu_command(port, files), env=dcmtk_env(), capture_output=True, text=True, timeout=timeout_s,
    )
    return parse_storescu_log((done.stdout + done.stderr).splitlines())


def dcmtk_available() -> bool:
    return all(shutil.which(tool) for tool in ("storescu", "storescp", "echoscu"))


#: Marks a test that runs DCMTK's tools.
requires_dcmtk = pytest.mark.skipif(not dcmtk_available(),
                                    reason="DCMTK (storescu, storescp, echoscu) is not installed")


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")


def make_phantom(out: Path, *, seed: int, sequence: str = "all", motion_rate: float | None = None) -> Path:
    """One Siemens-flavoured phantom study with one mid-ventricular slice and no readers; its folder.

    ``motion_rate`` is the probability of breathing motion in a series (the phantom's default when None)."""
    motion = ["--motion-rate", str(motion_rate)] if motion_rate is not None else []
    subprocess.run(
        [*myomap_executable(), "phantom", "--out", str(out), "--studies", "1", "--seed", str(seed),
         "--sequence", sequence, "--vendor", "siemens", "--readers", "", "--slices", "1", "--workers", "1", *motion],
        check=True, capture_output=True, timeout=300,
    )
    return out / "study_0000"


def phantom_sidecar(study: Path) -> dict:
    """The phantom's ground truth and series listing of the mid slice."""
    return json.loads((study / "mid" / "sidecar.json").read_text())


def magnitude_files(study: Path, sequence: str) -> list[Path]:
    """The magnitude images of one phantom sequence (e.g. ``molli_5(3)3``, ``t2prep``)."""
    record = next(s for s in phantom_sidecar(study)["sequences"] if s["scheme"]["sequence"] == sequence)
    return [study / path for path in record["series"]["magnitude"]["paths"]]


def truth_myocardium(study: Path) -> np.ndarray:
    """The myocardium mask of the phantom's truth SEG (mid slice)."""
    seg = pydicom.dcmread(study / "mid" / "readers" / "truth_seg" / "001.dcm")
    myocardium = next(int(s.SegmentNumber) for s in seg.SegmentSequence if s.SegmentLabel == "Myocardium")
    (frame,) = [
        index for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence)
        if int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == myocardium
    ]
    return seg.pixel_array[frame].astype(bool)
