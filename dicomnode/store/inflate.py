"""Bounded inflation of Deflated Explicit VR Little Endian data sets (PS3.5 A.5).

A deflate stream can expand a thousandfold: 1 MB on the wire can ask for 1 GB of memory. The data set is
therefore inflated in chunks and refused as soon as it outgrows the limit, before the memory is taken. The same
limit also bounds the bytes inflated by all associations at once (:class:`InflationBudget`): sixteen bombs sent
together hold no more memory than one, and a data set that finds the budget spent is refused with 0xA700, which
tells its sender to try again later.
"""

from __future__ import annotations

import ctypes
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from config.settings import DicomSettings
from dicomnode.errors import CannotUnderstandError, OutOfResourcesError

BYTES_PER_MB = 1024 * 1024
# The most bytes a pixel can take: Double Float Pixel Data, or three samples of 16 bits plus slack.
MAX_BYTES_PER_PIXEL = 8
# Room for everything besides the pixels: an Enhanced MR's per-frame groups, overlays, private blocks.
HEADER_ALLOWANCE_BYTES = 16 * BYTES_PER_MB
DEFAULT_MAX_INFLATED_BYTES = 256 * BYTES_PER_MB
_INPUT_SLICE_BYTES = 64 * 1024
_OUTPUT_CHUNK_BYTES = 4 * BYTES_PER_MB
#: Blocks from this size up get their own mapping, given back to the system when freed (:func:`map_large_blocks`).
LARGE_BLOCK_BYTES = BYTES_PER_MB
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def inflated_limit_bytes(dicom: DicomSettings) -> int:
    """The largest inflated data set the node accepts: ``max_inflated_mb``, or what ``max_image_pixels`` of the
    widest pixels plus the header allowance can need, whichever is smaller."""
    return limit_for(dicom.max_image_pixels, dicom.max_inflated_mb * BYTES_PER_MB)


def limit_for(max_image_pixels: int, max_inflated_bytes: int) -> int:
    return min(max_inflated_bytes, max_image_pixels * MAX_BYTES_PER_PIXEL + HEADER_ALLOWANCE_BYTES)


class InflationBudget:
    """Bytes inflated and still held by all data sets being checked at once, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_use_bytes = 0

    @contextmanager
    def reservation(self, capacity_bytes: int) -> Iterator[_Reservation]:
        """A reservation that grows chunk by chunk against ``capacity_bytes`` and is given back on exit."""
        reservation = _Reservation(self, capacity_bytes)
        try:
            yield reservation
        finally:
            with self._lock:
                self.in_use_bytes -= reservation.held_bytes
            reservation.held_bytes = 0


class _Reservation:
    def __init__(self, budget: InflationBudget, capacity_bytes: int) -> None:
        self._budget = budget
        self._capacity_bytes = capacity_bytes
        self.held_bytes = 0

    def take(self, n_bytes: int) -> None:
        """Raise OutOfResourcesError when the budget cannot hold ``n_bytes`` more."""
        budget = self._budget
        with budget._lock:
            if budget.in_use_bytes + n_bytes > self._capacity_bytes:
                # Short: the Error Comment keeps 64 characters.
                raise OutOfResourcesError(
                    f"deflate budget of {self._capacity_bytes // BYTES_PER_MB} MB in use; send again later"
                )
            budget.in_use_bytes += n_bytes
            self.held_bytes += n_bytes


def map_large_blocks() -> bool:
    """Make the C library map every block of :data:`LARGE_BLOCK_BYTES` or more on its own and unmap it when freed.

    glibc otherwise raises its mapping threshold (up to 32 MB) once a large block is freed, so that later chunks
    of inflation and of received data sets come from each thread's arena, which keeps them: sixteen associations'
    threads then hold their peak long after the budget is given back, and the process grows past the budget
    (measured: 515 MiB for sixteen bombs against a 256 MB budget). False where the C library is not glibc.
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
    except (OSError, AttributeError):
        return False


#: The process's budget: every association's thread inflates against it.
BUDGET = InflationBudget()


def inflate_bounded(deflated: bytes, limit_bytes: int, reservation: _Reservation | None = None) -> bytes:
    """Inflate a raw deflate stream (no zlib header, as DICOM writes it), holding at most ``limit_bytes``.

    With a ``reservation`` (of :data:`BUDGET`), each chunk is also taken from the budget shared by all threads
    before it is kept.

    Raises
    ------
    OutOfResourcesError
        The stream inflates beyond ``limit_bytes``, or the shared budget is spent (answered 0xA700); inflation
        stops there.
    CannotUnderstandError
        The stream is corrupt or ends before its last block.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    parts: list[bytes] = []
    total = 0
    view = memoryview(deflated)
    try:
        for start in range(0, len(view), _INPUT_SLICE_BYTES):
            pending: bytes | memoryview = view[start : start + _INPUT_SLICE_BYTES]
            while pending and not inflater.eof:
                chunk = inflater.decompress(pending, _OUTPUT_CHUNK_BYTES)
                total += len(chunk)
                if total > limit_bytes:
                    raise OutOfResourcesError(
                        f"deflated data set inflates beyond the limit of {limit_bytes // BYTES_PER_MB} MB "
                        f"({len(deflated)} bytes received)"
                    )
                if reservation is not None:
                    reservation.take(len(chunk))
                parts.append(chunk)
                pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        tail = inflater.flush()
    except zlib.error as error:
        raise CannotUnderstandError(f"deflated data set cannot be inflated: {error}") from error
    if not inflater.eof:
        raise CannotUnderstandError("deflated data set truncated: the deflate stream ends before its last block")
    if total + len(tail) > limit_bytes:
        raise OutOfResourcesError(f"deflated data set inflates beyond the limit of {limit_bytes // BYTES_PER_MB} MB")
    parts.append(tail)
    return b"".join(parts)
