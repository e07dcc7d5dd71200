"""Shared fixtures of the integration tests: free ports, DCMTK's environment, a running node, PostgreSQL.

Fixtures (all processes bind 127.0.0.1 and are stopped at teardown):

- ``free_port`` (function): an unused TCP port on 127.0.0.1; ``find_free_port()`` is the plain function.
- ``dcmtk_env`` (session): ``os.environ`` plus ``TCP_NODELAY=1`` (without it Nagle's delay dominates DCMTK timings);
  pass it as ``env=`` to storescu, echoscu, storescp and Orthanc.
- ``node_factory`` (function): ``node_factory(database_url=None, **settings_overrides) -> RunningNode`` builds
  settings under ``tmp_path`` (port 0, ``min_free_mb=0``, ``quiet_seconds=0.5``, ``pairing_seconds=0`` unless
  overridden), migrates the database, starts an :class:`~dicomnode.store.assembly.Assembler` recording
  completions in ``node.completed`` and a :class:`~dicomnode.net.scp.StorageSCP`; every node started is stopped
  at teardown.
- ``node`` (function): ``node_factory()`` with the defaults (SQLite, any calling AE allowed).
- ``console`` (function): DCMTK storescp as the scanner console (:class:`tests.integration.node_harness.Console`)
  on a free port, receiving into ``tmp_path / "console"``; for nodes run by
  :func:`tests.integration.node_harness.serve`.
- ``postgres_server`` (session): a PostgreSQL 15 server started with initdb/pg_ctl in a temporary folder
  (as the ``postgres`` user when the tests run as root); ``postgres_server.create_database()`` returns the URL
  of a fresh, empty database. Skips when the PostgreSQL binaries are not installed.
- ``database_url`` (function, parametrised ``sqlite`` / ``postgresql``): a fresh, empty database of each kind.
- ``redis_server`` (session): a redis-server on 127.0.0.1 on a free port, in a temporary folder, without
  persistence (``--save "" --appendonly no``); ``redis_server.create_database()`` returns the ``redis://`` URL of
  a logical database no other test has used (the node's queue name is fixed, so tests sharing one server must
  not share a database). Skips when redis-server is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, load_settings
from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from dicomnode.net.scp import StorageSCP
from dicomnode.store.assembly import Assembler
from tests.integration.node_harness import Console

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_DATABASES = 64
LOOPBACK = "127.0.0.1"


def find_free_port() -> int:
    """An unused TCP port on 127.0.0.1 (bound to port 0, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passed; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


@pytest.fixture
def free_port() -> int:
    return find_free_port()


@pytest.fixture(scope="session")
def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class RunningNode:
    """A node receiving on 127.0.0.1:``port``; ``completed`` lists (series_id, revision) handed on."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    assembler: Assembler
    scp: StorageSCP
    env: dict[str, str]
    completed: list[tuple[int, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self.scp.port is not None
        return self.scp.port

    @property
    def ae_title(self) -> str:
        return self.settings.dicom.ae_title

    def storescu(
        self, files: Sequence[Path], *args: str, calling_ae: str = "STORESCU"
    ) -> subprocess.CompletedProcess:
        """Run DCMTK storescu (verbose) against the node; returns the finished process (output as text)."""
        command = [
            "storescu",
            "-v",
            "-aet",
            calling_ae,
            "-aec",
            self.ae_title,
            *args,
            LOOPBACK,
            str(self.port),
        ]
        return subprocess.run(
            [*command, *map(str, files)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def echoscu(self, *args: str, calling_ae: str = "ECHOSCU") -> subprocess.CompletedProcess:
        command = [
            "echoscu",
            "-v",
            "-aet",
            calling_ae,
            "-aec",
            self.ae_title,
            *args,
            LOOPBACK,
            str(self.port),
        ]
        return subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=60, check=False)

    def stop(self) -> None:
        self.scp.stop()
        self.assembler.stop()
        self.engine.dispose()


def _settings(tmp_path: Path, database_url: str | None, overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "dicom": {"port": 0, "bind": LOOPBACK},
        "storage": {"path": tmp_path / "storage", "min_free_mb": 0},
        "series": {"quiet_seconds": 0.5, "pairing_seconds": 0.0},
    }
    if database_url:
        values["database"] = {"url": database_url}
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(section), dict):
            values[section] = {**values[section], **value}
        else:
            values[section] = value
    return load_settings(**values)


@pytest.fixture
def node_factory(tmp_path: Path, dcmtk_env: dict[str, str]) -> Iterator[Callable[..., RunningNode]]:
    started: list[RunningNode] = []

    def start(database_url: str | None = None, **overrides: Any) -> RunningNode:
        folder = tmp_path / f"node{len(started)}"
        settings = _settings(folder, database_url, overrides)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        session_factory = make_session_factory(engine)
        completed: list[tuple[int, int]] = []
        lock = threading.Lock()

        def on_complete(series_id: int, revision: int) -> None:
            with lock:
                completed.append((series_id, revision))

        assembler = Assembler(session_factory, settings, on_complete)
        assembler.start()
        scp = StorageSCP(settings, session_factory, assembler)
        scp.start()
        running = RunningNode(settings, engine, session_factory, assembler, scp, dcmtk_env, completed, lock)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def node(node_factory: Callable[..., RunningNode]) -> RunningNode:
    return node_factory()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    console = Console(tmp_path / "console", find_free_port())
    console.start()
    yield console
    console.stop()


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL server on 127.0.0.1:``port`` with trust authentication for ``user``."""

    port: int
    user: str
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def create_database(self) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        name = f"myomap_{uuid.uuid4().hex[:12]}"
        command = [
            str(POSTGRES_BIN / "createdb"),
            "-h",
            LOOPBACK,
            "-p",
            str(self.port),
            "-U",
            self.user,
            name,
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {POSTGRES_BIN} (make deps installs them)")
    data_dir = Path(tempfile.mkdtemp(prefix="myomap-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
    port = find_free_port()
    user = "postgres"
    subprocess.run(
        _as_postgres(
            [
                str(POSTGRES_BIN / "initdb"),
                "-D",
                str(data_dir / "data"),
                "-U",
                user,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-h {LOOPBACK} -p {port} -k {data_dir} -F"
    subprocess.run(
        _as_postgres(
            [
                str(POSTGRES_BIN / "pg_ctl"),
                "-D",
                str(data_dir / "data"),
                "-o",
                options,
                "-l",
                str(data_dir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        yield PostgresServer(port=port, user=user, data_dir=data_dir)
    finally:
        subprocess.run(
            _as_postgres(
                [str(POSTGRES_BIN / "pg_ctl"), "-D", str(data_dir / "data"), "-m", "immediate", "-w", "stop"]
            ),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'myomap.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@dataclass
class RedisServer:
    """A throw-away Redis server on 127.0.0.1:``port`` handing out one logical database per caller."""

    port: int
    data_dir: Path
    _next_database: Iterator[int] = field(default_factory=count)

    def url(self, database: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{database}"

    def create_database(self) -> str:
        """The URL of an unused, empty logical database.

        Raises
        ------
        RuntimeError
            If all ``REDIS_DATABASES`` databases have been handed out.
        """
        database = next(self._next_database)
        if database >= REDIS_DATABASES:
            raise RuntimeError(f"redis_server has {REDIS_DATABASES} logical databases, all handed out already")
        return self.url(database)


def _redis_answers(port: int) -> bool:
    import redis  # the optional [redis] extra; the fixture skips without it

    try:
        with redis.Redis(host=LOOPBACK, port=port, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make deps installs it)")
    pytest.importorskip("redis", reason="the redis client (extra [redis]) is not installed")
    data_dir = Path(tempfile.mkdtemp(prefix="myomap-redis-"))
    port = find_free_port()
    command = [binary, "--bind", LOOPBACK, "--port", str(port), "--dir", str(data_dir), "--save", "",
               "--appendonly", "no", "--databases", str(REDIS_DATABASES), "--logfile", str(data_dir / "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: process.poll() is not None or _redis_answers(port), timeout_s=30)
        if process.poll() is not None or not _redis_answers(port):
            log = data_dir / "redis.log"
            raise RuntimeError(f"redis-server did not start on port {port}: {log.read_text() if log.exists() else ''}")
        yield RedisServer(port=port, data_dir=data_dir)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
