"""Freed memory handed back to the system after a job."""

from __future__ import annotations

import ctypes.util
import sys

import numpy as np
import pytest

from dicomnode.analysis.memory import release_freed_memory

CHUNK_BYTES = 96 * 1024  # below glibc's mmap threshold: from the heap, kept there when freed
CHUNKS = 2000


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux") or "libc.so" not in (ctypes.util.find_library("c") or ""),
                    reason="glibc only")
def test_freed_heap_pages_go_back_to_the_system() -> None:
    chunks = [np.ones(CHUNK_BYTES, dtype=np.uint8) for _ in range(CHUNKS)]  # ~190 MB, touched
    kept = chunks[::20]  # the heap's top stays in use: freeing the rest does not shrink it by itself
    del chunks
    before = _rss_mib()
    assert release_freed_memory()
    after = _rss_mib()
    assert before - after > 100, (before, after)
    assert all(chunk[0] == 1 for chunk in kept)
