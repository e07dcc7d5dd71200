"""The slices of one analysis unit (:mod:`dicomnode.io.slice_groups`) with their pixels: per slice the scanner's map
(when the unit holds one) and the raw images (when it holds them).

A map series may hold a colour display copy of each map next to the map itself (Siemens sends both); only
greyscale images carry values, so the copy is left out. Two greyscale maps of one slice with the same values are
one map; different values (a re-computed map) keep the one with the highest instance number, with a note.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from db.models import SeriesRole
from dicomnode.errors import MyomapError
from dicomnode.io.series_loader import (
    LoadedSeries,
    SeriesLoadError,
    SliceStack,
    TimingKind,
    load_series,
    load_series_group,
)
from dicomnode.io.slice_groups import SlicePlace, slice_places
from dicomnode.sop_classes import PARAMETRIC_MAP

LOGGER = logging.getLogger(__name__)

_TIMING = {SeriesRole.RAW_IR: TimingKind.INVERSION, SeriesRole.T2_PREP: TimingKind.T2_PREP}


class UnitLoadError(MyomapError, ValueError):
    """The unit's instances cannot be loaded as slices."""


@dataclass(frozen=True)
class ScannerMap:
    """One slice of a scanner's map: the image and its values in ms (NaN where the scanner has no value)."""

    dataset: Dataset
    map_ms: np.ndarray
    pixel_spacing_mm: tuple[float, float]


@dataclass(frozen=True)
class UnitSlice:
    """One slice of a unit: where it lies, the scanner's map and/or the raw images of it."""

    place: SlicePlace
    scanner_map: ScannerMap | None
    raw: LoadedSeries | None
    stack: SliceStack | None
    notes: tuple[str, ...] = field(default=())


def load_unit(members: Sequence[tuple[SeriesRole, Sequence[Dataset]]]) -> list[UnitSlice]:
    """The unit's slices along the slice normal, from each member's (role, full datasets).

    Raises
    ------
    UnitLoadError
        If the unit holds neither a usable map nor raw images, or raw series of several kinds.
    SeriesLoadError
        As raised by the raw series loader.
    """
    raw_members = [(role, list(datasets)) for role, datasets in members if role in _TIMING]
    map_datasets = [ds for role, datasets in members if role not in _TIMING for ds in datasets]
    loaded = _load_raw(raw_members)
    notes: dict[int, list[str]] = {}
    maps = _scanner_maps(map_datasets, notes)
    slices: list[UnitSlice] = []
    for index, (place, scanner_map) in enumerate(maps):
        stack = _stack_at(loaded, place) if loaded is not None else None
        slices.append(UnitSlice(place, scanner_map, loaded if stack is not None else None, stack,
                                tuple(notes.get(index, ()))))
    if loaded is not None:
        for stack in loaded.slices:
            place = _stack_place(stack, loaded)
            if not any(s.place.same_slice(place) for s in slices):
                slices.append(UnitSlice(place, None, loaded, stack))
    if not slices:
        raise UnitLoadError("the unit holds neither a greyscale map image nor raw images")
    return sorted(slices, key=lambda s: s.place.position_mm)


def read_datasets(paths: Iterable[Path]) -> list[Dataset]:
    """Read the instance files of a unit's series.

    Raises
    ------
    SeriesLoadError
        When a file cannot be parsed as DICOM.
    """
    datasets: list[Dataset] = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, InvalidDicomError) as error:
            raise SeriesLoadError(f"cannot read {path.name} as DICOM: {error}") from error
    return datasets


def map_values_ms(ds: Dataset) -> np.ndarray:
    """A single-frame map image in ms: an MR image's rescaled values or a Parametric Map's real-world values."""
    stored = ds.pixel_array.reshape(int(ds.Rows), int(ds.Columns)).astype(np.float64)
    if ds.SOPClassUID == PARAMETRIC_MAP:
        mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        return stored * float(mapping.RealWorldValueSlope) + float(mapping.get("RealWorldValueIntercept", 0.0))
    return stored * float(ds.get("RescaleSlope", 1.0) or 1.0) + float(ds.get("RescaleIntercept", 0.0) or 0.0)


def without_missing(map_ms: np.ndarray) -> np.ndarray:
    """The map with NaN where it holds no value: scanners write 0 (or less) where their fit failed."""
    values = np.asarray(map_ms, dtype=np.float32)
    return np.where(np.isfinite(values) & (values > 0), values, np.nan).astype(np.float32)


def _load_raw(raw_members: list[tuple[SeriesRole, list[Dataset]]]) -> LoadedSeries | None:
    if not raw_members:
        return None
    roles = {role for role, _ in raw_members}
    if len(roles) != 1:
        raise UnitLoadError(f"raw series of several kinds in one unit: {sorted(r.value for r in roles)}")
    timing = _TIMING[roles.pop()]
    if len(raw_members) == 1:
        return load_series(raw_members[0][1], timing)
    # One raw series per inversion time (GE, Philips): one acquisition, fitted together.
    return load_series_group([datasets for _, datasets in raw_members], timing)


def _scanner_maps(datasets: list[Dataset], notes: dict[int, list[str]]) -> list[tuple[SlicePlace, ScannerMap]]:
    chosen: list[tuple[SlicePlace, ScannerMap]] = []
    for ds in sorted(datasets, key=lambda d: int(d.get("InstanceNumber") or 0)):
        if int(ds.get("SamplesPerPixel") or 1) != 1:
            LOGGER.info("map %s is a colour display copy; its greyscale map is used", ds.get("SOPInstanceUID"))
            continue
        if int(ds.get("NumberOfFrames") or 1) != 1:
            raise UnitLoadError(f"map {ds.get('SOPInstanceUID', '?')} has {ds.NumberOfFrames} frames; expected "
                                "single-frame map images")
        places = slice_places(ds)
        if not places:
            raise UnitLoadError(f"map {ds.get('SOPInstanceUID', '?')} has no position and orientation")
        values = map_values_ms(ds)
        spacing = tuple(float(v) for v in ds.get("PixelSpacing") or _shared_spacing(ds))
        scanner_map = ScannerMap(ds, without_missing(values), (spacing[0], spacing[1]))
        index = next((i for i, (place, _) in enumerate(chosen) if place.same_slice(places[0])), None)
        if index is None:
            chosen.append((places[0], scanner_map))
            continue
        kept = chosen[index][1]
        if kept.map_ms.shape != scanner_map.map_ms.shape or not np.array_equal(
                np.nan_to_num(kept.map_ms), np.nan_to_num(scanner_map.map_ms)):
            notes.setdefault(index, []).append(
                "two different maps of this slice were received; the later one (highest instance number) is used")
        chosen[index] = (places[0], scanner_map)
    return chosen


def _shared_spacing(ds: Dataset) -> Sequence[float]:
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        sequence = ds.get(groups)
        if sequence and sequence[0].get("PixelMeasuresSequence"):
            return [float(v) for v in sequence[0].PixelMeasuresSequence[0].PixelSpacing]
    raise UnitLoadError(f"map {ds.get('SOPInstanceUID', '?')} has no PixelSpacing")


def _stack_place(stack: SliceStack, loaded: LoadedSeries) -> SlicePlace:
    source = stack.sources[0]
    orientation = np.asarray(stack.image_orientation_patient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    return SlicePlace((float(normal[0]), float(normal[1]), float(normal[2])),
                      float(np.dot(normal, stack.image_position_patient_mm)),
                      str(source.get("FrameOfReferenceUID", "")))


def _stack_at(loaded: LoadedSeries, place: SlicePlace) -> SliceStack | None:
    return next((stack for stack in loaded.slices if _stack_place(stack, loaded).same_slice(place)), None)
