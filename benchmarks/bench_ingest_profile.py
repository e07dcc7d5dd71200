"""Where ingest time goes: the node's Storage SCP against DCMTK storescp, a do-nothing pynetdicom SCP and the disk.

The MR images of benchmarks/bench_ingest.py (256 x 218 uint16, Explicit VR Little Endian) are sent by DCMTK
``storescu`` over one association on 127.0.0.1 (``TCP_NODELAY=1``), in turn to

- DCMTK ``storescp`` writing into a fresh folder (the reference; no fsync),
- a pynetdicom SCP with the node's AE and association tuning whose handler only takes the encoded data set (the
  ceiling pynetdicom itself sets), and
- the node's :class:`dicomnode.net.scp.StorageSCP` with its assembler, on a fresh storage folder and SQLite database.

It prints the median images/s of each and the ratio node / storescp (target 0.5), then the per-image cost of the
durable write alone (temporary file, fdatasync, rename, folder fsync) on the storage volume, and of the node's
steps outside the network (inspection, classification, write, database) timed in this process. With
``--py-spy FILE`` the last node run is sampled by py-spy (the thread holding the GIL only, so waits do not count)
and the functions with the most samples are listed.

Usage: ``python benchmarks/bench_ingest_profile.py [--images 300] [--repetitions 3] [--py-spy FILE]``
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pynetdicom import evt
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_ingest import (  # noqa: E402
    COLUMNS,
    ROWS,
    send_with_storescu,
    storescp,
    wait_listening,
    write_images,
)
from config.settings import Settings  # noqa: E402
from db import migrate  # noqa: E402
from db.models import Instance  # noqa: E402
from db.session import make_engine, make_session_factory  # noqa: E402
from dicomnode.net.scp import StorageSCP, make_ae, tune_association  # noqa: E402
from dicomnode.store.assembly import Assembler  # noqa: E402
from dicomnode.store.storage import (  # noqa: E402
    engine_of,
    instance_facts,
    instance_path,
    record_instance,
    series_facts,
    write_durably,
)
from dicomnode.store.validate import PREAMBLE, encode_file_meta, inspect_instance, split_part10  # noqa: E402

TARGET_RATIO = 0.5


def _settings(root: Path) -> Settings:
    return Settings(
        storage={"path": root, "min_free_mb": 64},
        dicom={"ae_title": "MYOMAP", "bind": "127.0.0.1", "port": 0},
        series={"quiet_seconds": 3600.0},  # completion is not what is measured
    )


@contextmanager
def noop_scp() -> Iterator[int]:
    """The node's AE and association tuning with a handler that only takes the received bytes."""
    settings = _settings(Path(tempfile.gettempdir()))

    def handle_store(event: evt.Event) -> int:
        event.encoded_dataset(include_meta=False)
        return 0x0000

    ae = make_ae(settings)
    handlers = [(evt.EVT_C_STORE, handle_store), (evt.EVT_CONN_OPEN, tune_association)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


@contextmanager
def node_scp(root: Path) -> Iterator[tuple[int, Callable[[], int]]]:
    settings = _settings(root)
    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    session_factory = make_session_factory(engine)
    assembler = Assembler(session_factory, settings, lambda _series_id, _revision: None)
    assembler.start()
    scp = StorageSCP(settings, session_factory, assembler)
    scp.start()

    def recorded() -> int:
        with session_factory() as session:
            return int(session.scalar(select(func.count(Instance.id))) or 0)

    try:
        wait_listening(int(scp.port))
        yield int(scp.port), recorded
    finally:
        scp.stop()
        assembler.stop()
        engine.dispose()


@contextmanager
def sampled(output: Path | None) -> Iterator[None]:
    """py-spy sampling this process while the block runs (nothing when ``output`` is None)."""
    if output is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    process = subprocess.Popen(
        [py_spy, "record", "--pid", str(os.getpid()), "--format", "raw", "--rate", "500", "--gil", "-o", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        process.wait(timeout=30)


def summarise_samples(raw: Path, top: int = 20) -> None:
    """Print the functions with the most samples (self and total); only the thread holding the GIL is sampled."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [frame for frame in stack.split(";")[1:] if frame]
        if not frames:
            continue
        count = int(count_text)
        busy += count
        own[_short(frames[-1])] += count
        for name in {_short(frame) for frame in frames}:
            total[name] += count
    print(f"py-spy: {busy} samples holding the GIL")
    print("  self %  function")
    for name, count in own.most_common(top):
        print(f"  {100 * count / busy:5.1f}  {name}")
    print("  total %  function")
    for name, count in total.most_common(top):
        print(f"  {100 * count / busy:5.1f}  {name}")


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}"


def durable_write_ms(folder: Path, data: bytes, n_files: int = 100) -> float:
    """Median milliseconds of one durable write (temporary file, fdatasync, rename, folder fsync)."""
    times = []
    for index in range(n_files):
        started = time.perf_counter()
        write_durably(folder / f"{index}.dcm", data, root=folder.parent)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def step_costs_ms(paths: list[Path], root: Path) -> dict[str, float]:
    """Median milliseconds per image of the node's steps outside the network, timed in this process."""
    settings = _settings(root)
    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    session_factory = make_session_factory(engine)
    engine = engine_of(session_factory)
    steps: dict[str, list[float]] = collections.defaultdict(list)
    for path in paths:
        meta, data = split_part10(path.read_bytes())
        clock = time.perf_counter()
        inspected = inspect_instance(data, meta, max_image_pixels=settings.dicom.max_image_pixels)
        facts = instance_facts(inspected)
        about_series = series_facts(inspected.header, calling_ae="PROFILESCU", calling_host="127.0.0.1")
        steps["inspect + classify"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        digest = hashlib.sha256(data).hexdigest()
        file_bytes = PREAMBLE + encode_file_meta(meta) + data
        steps["hash + file meta"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        relative = instance_path(facts, 1)
        write_durably(settings.storage_root / relative, file_bytes, root=settings.storage_root)
        steps["durable write"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        record_instance(
            engine,
            facts,
            about_series,
            path=relative.as_posix(),
            sha256=digest,
            size_bytes=len(file_bytes),
            version=1,
            existing=None,
        )
        steps["database"].append(time.perf_counter() - clock)
    engine.dispose()
    return {name: 1000 * statistics.median(values) for name, values in steps.items()}


def run(n_images: int, repetitions: int, py_spy_output: Path | None) -> float:
    work = Path(tempfile.mkdtemp(prefix="myomap-bench-profile-", dir=os.environ.get("MYOMAP_BENCH_DIR")))
    try:
        images = work / "images"
        images.mkdir()
        paths = write_images(images, n_images)
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{n_images} MR images {ROWS}x{COLUMNS} uint16 ({size_mb:.1f} MB), {repetitions} repetitions")
        rates: dict[str, list[float]] = collections.defaultdict(list)
        for repetition in range(repetitions):
            with storescp(work / f"storescp_{repetition}") as port:
                rates["storescp"].append(n_images / send_with_storescu(images, port=port, called_ae="STORESCP"))
            with noop_scp() as port:
                rates["noop"].append(n_images / send_with_storescu(images, port=port, called_ae="MYOMAP"))
            with node_scp(work / f"node_{repetition}") as (port, recorded), sampled(
                py_spy_output if repetition == repetitions - 1 else None
            ):
                rates["node"].append(n_images / send_with_storescu(images, port=port, called_ae="MYOMAP"))
                if recorded() != n_images:
                    raise RuntimeError(f"the node recorded {recorded()} of {n_images} images")
            print(
                f"  repetition {repetition + 1}: storescp {rates['storescp'][-1]:7.1f}, "
                f"pynetdicom no-op {rates['noop'][-1]:7.1f}, node {rates['node'][-1]:7.1f} images/s"
            )
            shutil.rmtree(work / f"storescp_{repetition}")
            shutil.rmtree(work / f"node_{repetition}")
        medians = {name: statistics.median(values) for name, values in rates.items()}
        ratio = medians["node"] / medians["storescp"]
        print(f"DCMTK storescp (no fsync):        {medians['storescp']:7.1f} images/s")
        print(f"pynetdicom SCP, no-op handler:    {medians['noop']:7.1f} images/s")
        print(f"myomap StorageSCP (durable):      {medians['node']:7.1f} images/s")
        print(f"ratio node / storescp: {ratio:.2f} (target {TARGET_RATIO}); no-op / storescp: "
              f"{medians['noop'] / medians['storescp']:.2f}")
        print(f"per image: node {1000 / medians['node']:.2f} ms, no-op pynetdicom {1000 / medians['noop']:.2f} ms, "
              f"storescp {1000 / medians['storescp']:.2f} ms")
        (work / "disk" / "probe").mkdir(parents=True)
        print(f"durable write alone: {durable_write_ms(work / 'disk' / 'probe', paths[0].read_bytes()):.2f} ms")
        costs = step_costs_ms(paths, work / "steps")
        print("node steps outside the network (median ms per image): " + ", ".join(
            f"{name} {value:.2f}" for name, value in costs.items()
        ))
        if py_spy_output is not None and py_spy_output.exists():
            summarise_samples(py_spy_output)
        return ratio
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="number of images (default 300)")
    parser.add_argument("--repetitions", type=int, default=3, help="repetitions per receiver (default 3)")
    parser.add_argument("--py-spy", type=Path, default=None, help="sample the last node run into this file")
    arguments = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"DCMTK {tool} is not installed (apt-get install dcmtk)", file=sys.stderr)
            return 2
    ratio = run(arguments.images, arguments.repetitions, arguments.py_spy)
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
