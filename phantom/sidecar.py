"""JSON sidecars: the ground truth and provenance of every phantom slice, and the study's manifest.

Sidecars are plain JSON (sorted keys, two-space indent, floats rounded to 4 decimals) so that a seed always gives
the same bytes. Paths are relative to the study folder. The keys are listed in docs/phantom.md ("File layout").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phantom.model import FrameMotion, ReaderContour, SliceAnatomy

LOGGER = logging.getLogger(__name__)

PHANTOM_VERSION = "1.0.0"
SIDECAR_NAME = "sidecar.json"
MANIFEST_NAME = "manifest.json"
_DECIMALS = 4


@dataclass(frozen=True)
class SeriesRecord:
    """One written series: what it is and where its files are."""

    role: str  # magnitude, phase, moco, map, fit_quality, seg, rtstruct
    sop_class_uid: str
    series_instance_uid: str
    series_number: int
    series_description: str
    sop_instance_uids: tuple[str, ...]
    paths: tuple[str, ...]  # relative to the study folder, one per instance
    # Vendor quirks only (absent from the JSON otherwise): the component of each instance (ge-mixed), the SOP
    # Class of each instance when they differ (display-copy), the inversion or T2-prep times the series holds (per-ti).
    image_components: tuple[str, ...] | None = None
    sop_class_uids: tuple[str, ...] | None = None
    times_ms: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "role": self.role,
            "sop_class_uid": self.sop_class_uid,
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "sop_instance_uids": list(self.sop_instance_uids),
            "paths": list(self.paths),
        }
        if self.image_components is not None:
            data["image_components"] = list(self.image_components)
        if self.sop_class_uids is not None:
            data["sop_class_uids"] = list(self.sop_class_uids)
        if self.times_ms is not None:
            data["times_ms"] = list(self.times_ms)
        return data


def rounded(value: Any) -> Any:
    """``value`` with every float rounded to 4 decimals and numpy scalars and arrays made plain JSON."""
    if isinstance(value, Mapping):
        return {str(key): rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item) for item in value]
    if isinstance(value, np.ndarray):
        return rounded(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer | int):
        return int(value)
    if isinstance(value, np.floating | float):
        number = float(value)
        return None if not np.isfinite(number) else round(number, _DECIMALS)
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as deterministic JSON (sorted keys, rounded floats, trailing newline)."""
    path.write_text(json.dumps(rounded(data), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def true_values(anatomy: SliceAnatomy, values: np.ndarray) -> dict[str, Any]:
    """Mean of ``values`` over the true myocardium: globally and per AHA segment of the slice."""
    myocardium = anatomy.myocardium_mask
    segments = {
        str(segment): float(values[anatomy.aha_segment_map == segment].mean())
        for segment in sorted(anatomy.wall_thickness_mm)
        if np.any(anatomy.aha_segment_map == segment)
    }
    return {"global": float(values[myocardium].mean()), "segments": segments}


def wall_thickness(anatomy: SliceAnatomy) -> dict[str, Any]:
    """Wall thickness per AHA segment and their mean, in mm."""
    per_segment = {str(segment): value for segment, value in sorted(anatomy.wall_thickness_mm.items())}
    return {"mean": float(np.mean(list(anatomy.wall_thickness_mm.values()))), "segments": per_segment}


def frame_motion_json(motions: Sequence[FrameMotion]) -> list[dict[str, Any]]:
    """Per-frame motion as JSON objects, in acquisition order."""
    return [asdict(motion) | {"still": motion.is_still} for motion in motions]


def motion_labels_json(labels: Mapping[int, bool]) -> dict[str, bool]:
    """Motion label per AHA segment (keys are segment numbers as strings)."""
    return {str(segment): bool(flag) for segment, flag in sorted(labels.items())}


def reader_json(reader: ReaderContour, seg: SeriesRecord, rtstruct: SeriesRecord,
                map_record: SeriesRecord) -> dict[str, Any]:
    """One reader's entry: role, error mode and parameters, and where its SEG and RTSTRUCT are."""
    return {
        "reader": reader.reader,
        "role": reader.role,
        "error_mode": reader.error_mode,
        "parameters": dict(sorted(reader.parameters.items())),
        "myocardium_pixels": int(np.count_nonzero(reader.myocardium_mask)),
        "map_series_instance_uid": map_record.series_instance_uid,
        "map_sop_instance_uid": map_record.sop_instance_uids[0],
        "seg": seg.to_json(),
        "rtstruct": rtstruct.to_json(),
    }
