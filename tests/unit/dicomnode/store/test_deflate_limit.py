"""Deflated data sets are inflated in bounded chunks: a deflate bomb is refused without taking the memory."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.malformed_inputs import MIB, deflate_bomb, part10, phantom_like_image
from config.settings import Settings, load_settings
from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from dicomnode.errors import CannotUnderstandError, OutOfResourcesError
from dicomnode.store.inflate import HEADER_ALLOWANCE_BYTES, InflationBudget, inflate_bounded, inflated_limit_bytes
from dicomnode.store.storage import store_instance


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(storage={"path": tmp_path / "storage", "min_free_mb": 0}, dicom={"max_inflated_mb": 16})


@pytest.fixture
def session_factory(settings: Settings) -> sessionmaker[Session]:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _store(data: bytes, settings: Settings, session_factory: sessionmaker[Session]):  # noqa: ANN202
    return store_instance(
        data, calling_ae="SCANNER", calling_host="127.0.0.1", settings=settings, session_factory=session_factory
    )


def test_deflate_bomb_is_refused_out_of_resources_with_bounded_memory(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    bomb = deflate_bomb(256 * MIB)  # about 260 kB on the wire
    tracemalloc.start()
    try:
        with pytest.raises(OutOfResourcesError, match="inflates beyond"):
            _store(bomb, settings, session_factory)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The limit is 16 MiB; inflating whole took the full 256 MiB (twice, with pydicom's copy).
    assert peak_bytes < 48 * MIB, f"peak {peak_bytes / MIB:.0f} MiB"
    assert not list(settings.storage_root.rglob("*.dcm"))


def test_limit_follows_max_image_pixels_when_smaller() -> None:
    small = load_settings(dicom={"max_image_pixels": 1024, "max_inflated_mb": 512})
    large = load_settings(dicom={"max_inflated_mb": 16})
    assert inflated_limit_bytes(small.dicom) == 1024 * 8 + HEADER_ALLOWANCE_BYTES
    assert inflated_limit_bytes(large.dicom) == 16 * MIB


def test_deflated_image_under_the_limit_is_stored_as_received(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    data = part10(phantom_like_image(rows=64, columns=64), "1.2.840.10008.1.2.1.99")
    stored = _store(data, settings, session_factory)
    copy = pydicom.dcmread(stored.path)
    assert stored.created and copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    assert copy.Rows == 64 and len(copy.PixelData) == 64 * 64 * 2


def test_padded_deflated_image_just_under_the_limit_is_accepted(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    assert _store(deflate_bomb(8 * MIB), settings, session_factory).created


def test_corrupt_deflate_stream_cannot_be_understood(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    data = bytearray(part10(phantom_like_image(), "1.2.840.10008.1.2.1.99"))
    # The deflate stream starts after the file meta: preamble and "DICM" (132 bytes), the group length element
    # (12 bytes) and the group it counts. Its first block gets the reserved block type 3, which no inflater accepts.
    # (Overwriting bytes near the end instead inflates without a zlib error, and the data set it gives is
    # readable now and then.)
    stream_start = 132 + 12 + struct.unpack_from("<L", data, 140)[0]
    data[stream_start] |= 0b110
    with pytest.raises(CannotUnderstandError, match="cannot be inflated"):
        _store(bytes(data), settings, session_factory)
    assert not list(settings.storage_root.rglob("*.dcm"))


def test_inflations_at_once_share_one_budget() -> None:
    budget = InflationBudget()
    bomb_stream = zlib.compress(bytes(12 * MIB))[2:-4]  # raw deflate, as DICOM writes it
    with budget.reservation(16 * MIB) as first:
        assert len(inflate_bounded(bomb_stream, 16 * MIB, first)) == 12 * MIB
        with budget.reservation(16 * MIB) as second, pytest.raises(OutOfResourcesError, match="send again later"):
            inflate_bounded(bomb_stream, 16 * MIB, second)
        assert budget.in_use_bytes == first.held_bytes == 12 * MIB
    assert budget.in_use_bytes == 0
    with budget.reservation(16 * MIB) as again:  # given back: the next one fits
        assert len(inflate_bounded(bomb_stream, 16 * MIB, again)) == 12 * MIB


_FREED_CHUNKS_SCRIPT = """
import sys, threading
from dicomnode.store.inflate import map_large_blocks

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

mapped = map_large_blocks()
block = bytes(4 << 20); del block  # freeing a mapped block is what raises glibc's own threshold
def inflate_like():  # 1 MiB pieces joined into 4 MiB chunks, all freed when the association ends
    pieces = [bytes(range(256)) * (4 << 12) for _ in range(25)]
    chunks = [piece * 4 for piece in pieces]
    del pieces, chunks
before = rss_mib()
threads = [threading.Thread(target=inflate_like) for _ in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(mapped, rss_mib() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_freed_chunks_of_many_threads_go_back_to_the_system() -> None:
    # Without map_large_blocks glibc keeps 45-49 MiB of them in the threads' arenas, with it 0.1 MiB; a fresh
    # interpreter, since the setting is process-wide.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FREED_CHUNKS_SCRIPT], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[4], check=True)
    mapped, rise_mib = done.stdout.split()
    if mapped != "True":
        pytest.skip("the C library is not glibc")
    assert float(rise_mib) < 16, f"{rise_mib} MiB still held after every chunk was freed"
