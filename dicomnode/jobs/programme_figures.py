"""Figures the training programme follows beyond the score itself, recorded with each reader-score result.

Per scored slice: the reader's own myocardial mean (the team's spread of T1 per case is their coefficient of
variation), the reader minus the reference per AHA segment, and the Dice against every other reader's contour on
the slice (the team's inter-observer agreement), all computed where the contours are placed once already.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dicomnode.analysis.study import ReaderResult, SliceResult
from dicomnode.io.contours import ReaderMasks, Structure
from dicomnode.store.durable import write_durably
from inference.metrics import dice
from reports.result_summary import rounded


def peer_dice(myocardium: np.ndarray, readers: dict[str, ReaderMasks], reader: str, uid: str) -> dict[str, float]:
    """Dice of ``reader``'s myocardium against each other reader's myocardium on map image ``uid``."""
    found: dict[str, float] = {}
    for name, masks in readers.items():
        if name == reader:
            continue
        other = masks.mask(Structure.MYOCARDIUM, uid)
        if other is not None and other.any():
            found[name] = float(dice(myocardium, other.astype(bool)))
    return found


def segment_differences_ms(slice_result: SliceResult, reader_result: ReaderResult) -> dict[int, float]:
    """Reader minus reference mean per AHA segment; the reference's segment mean is the gold standard's, or the
    mean of the readers' (experts' or team-mates') whose STAPLE is this reader's reference. Empty when the reference
    drew no segments (the consensus model's contour has no RV insertion to orient them)."""
    references = [r for r in slice_result.readers if r.reader in reader_result.reference_readers]
    differences: dict[int, float] = {}
    for number, own in reader_result.segments.items():
        values = [r.segments[number].mean_ms for r in references if number in r.segments]
        if values:
            differences[number] = own.mean_ms - float(np.mean(values))
    return differences


def programme_figures(slice_result: SliceResult, reader_result: ReaderResult,
                      peers: dict[str, float]) -> dict[str, Any]:
    """The summary fields of :class:`reports.result_summary.ReaderSliceFigures` the training programme adds."""
    segments = sorted(segment_differences_ms(slice_result, reader_result).items())
    figures: dict[str, Any] = {
        "segment_map_differences_ms": _finite({str(number): rounded(value, 1) for number, value in segments}),
        "peer_dice": _finite({name: rounded(value, 3) for name, value in sorted(peers.items())}),
    }
    if reader_result.myocardium is not None:
        figures["map_mean_ms"] = rounded(reader_result.myocardium.mean_ms, 1)
    return figures


def _finite(values: dict[str, float | None]) -> dict[str, float]:
    return {key: value for key, value in values.items() if value is not None}


def write_overlay_png(rgb: np.ndarray, capture_path: Path, storage_root: Path) -> Path:
    """The overlay's pixels as a PNG beside its Secondary Capture (``<sop uid>.png``), for the trainee's reports
    and dashboards; the same image the reader's workstation receives as DICOM."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(buffer, format="PNG")
    path = capture_path.with_suffix(".png")
    write_durably(path, buffer.getvalue(), root=storage_root)
    return path
