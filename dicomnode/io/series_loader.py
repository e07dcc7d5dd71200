"""Load a raw mapping series from its DICOM instances into per-slice image stacks.

Real series follow the conventions listed in docs/phantom.md ("File layout") and the design page:

- several images share one slice position (one per inversion or preparation time): images are grouped by
  ImagePositionPatient and never de-duplicated by it;
- inversion times come from InversionTime, else from ImageComments / FrameComments ("TIeff 180 ms", "TI 180"),
  else from the Enhanced MR per-frame MR Modifier (InversionTimes); T2-preparation times from ImageComments /
  FrameComments ("T2prep 25 ms");
- they are not in acquisition order (MOLLI interleaves its inversions): images are sorted by that time, never by
  InstanceNumber;
- phase images may sit in the same series (ImageType ...\\P\\..., ComplexImageComponent PHASE): only magnitude
  images are kept;
- Enhanced MR holds all frames in one instance with per-frame functional groups.

Stored values are rescaled (RescaleSlope/Intercept, or the Pixel Value Transformation functional group).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import SupportsFloat

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomnode.errors import MyomapError

LOGGER = logging.getLogger(__name__)

_TI_COMMENT = re.compile(r"\bTI(?:eff)?\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_T2_PREP_COMMENT = re.compile(r"\bT2\s*-?\s*prep(?:aration)?\.?\s*(?:duration)?\s*[:=]?\s*(\d+(?:\.\d+)?)",
                              re.IGNORECASE)
_PHASE_COMPONENTS = {"P", "PHASE", "REAL", "IMAGINARY", "R", "I"}
#: Positions closer than this (mm) are the same slice; stored positions are rounded to a few decimals.
POSITION_TOLERANCE_MM = 0.01


class TimingKind(str, Enum):
    """Which preparation time orders the images of a raw series."""

    INVERSION = "inversion"  # inversion-recovery (MOLLI, ShMOLLI): inversion time
    T2_PREP = "t2_prep"  # T2-prepared: preparation duration


class SeriesLoadError(MyomapError, ValueError):
    """The instances cannot be loaded as a raw mapping series."""


class MissingTimingError(SeriesLoadError):
    """An image has no inversion or T2-preparation time in any place the loader knows."""


@dataclass(frozen=True)
class SliceStack:
    """The magnitude images of one slice position, sorted by preparation time.

    Attributes
    ----------
    images
        (n, rows, columns) float64, rescaled stored values.
    times_ms
        (n,) inversion or T2-preparation time of each image, ascending.
    acquisition_times_s
        (n,) acquisition time of each image in seconds after midnight (NaN where the image does not say).
    sources
        The dataset each image came from (one Enhanced MR dataset repeats for all its frames).
    frame_numbers
        1-based frame number of each image in its dataset (1 for single-frame images).
    """

    image_position_patient_mm: tuple[float, float, float]
    image_orientation_patient: tuple[float, float, float, float, float, float]
    pixel_spacing_mm: tuple[float, float]
    images: np.ndarray
    times_ms: np.ndarray
    acquisition_times_s: np.ndarray
    sources: tuple[Dataset, ...]
    frame_numbers: tuple[int, ...]

    @property
    def unique_sources(self) -> list[Dataset]:
        """The distinct source datasets, in image order."""
        seen: dict[int, Dataset] = {}
        for ds in self.sources:
            seen.setdefault(id(ds), ds)
        return list(seen.values())


@dataclass(frozen=True)
class LoadedSeries:
    """A raw mapping series as per-slice stacks, slices ordered along the slice normal."""

    series_instance_uid: str
    study_instance_uid: str
    series_number: int | None
    series_description: str
    sequence_name: str
    timing: TimingKind
    slices: tuple[SliceStack, ...]
    nominal_interval_ms: float | None  # RR interval from the tags (NominalInterval, RR specified, heart rate)


@dataclass(frozen=True)
class _Frame:
    """One 2-D magnitude image and where it came from."""

    pixels: np.ndarray
    time_ms: float
    acquisition_time_s: float
    position_mm: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing_mm: tuple[float, float]
    source: Dataset
    frame_number: int


def load_series_files(paths: Iterable[Path | str], timing: TimingKind) -> LoadedSeries:
    """Read the instance files of one series and load them (see :func:`load_series`).

    Raises
    ------
    SeriesLoadError
        See :func:`load_series`; also when a file cannot be parsed as DICOM.
    """
    datasets = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, InvalidDicomError) as error:
            raise SeriesLoadError(f"cannot read {path} as DICOM: {error}") from error
    return load_series(datasets, timing)


def load_series(datasets: Sequence[Dataset], timing: TimingKind | str) -> LoadedSeries:
    """Group the magnitude images of ``datasets`` by slice position and sort each slice by its preparation time.

    Parameters
    ----------
    datasets
        The instances of one series (classic single-frame and/or Enhanced multi-frame), in any order.
    timing
        Which time orders the images.

    Raises
    ------
    SeriesLoadError
        If there are no datasets, they belong to several series, or none holds a magnitude image.
    MissingTimingError
        If a magnitude image has no time of the kind asked for.
    """
    timing = TimingKind(timing)
    if not datasets:
        raise SeriesLoadError("no instances to load; expected the instances of one series")
    series_uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    if len(series_uids) != 1:
        raise SeriesLoadError(f"instances belong to {len(series_uids)} series; expected one")
    frames = [frame for ds in datasets for frame in _frames_of(ds, timing)]
    if not frames:
        raise SeriesLoadError(f"series {series_uids.pop()} holds no magnitude image")
    first = datasets[0]
    return LoadedSeries(
        series_instance_uid=str(first.SeriesInstanceUID),
        study_instance_uid=str(first.StudyInstanceUID),
        series_number=int(first.SeriesNumber) if first.get("SeriesNumber") not in (None, "") else None,
        series_description=str(first.get("SeriesDescription", "")),
        sequence_name=str(first.get("SequenceName", "") or first.get("PulseSequenceName", "")),
        timing=timing,
        slices=tuple(_stacks(frames)),
        nominal_interval_ms=_nominal_interval_ms(first),
    )


def _stacks(frames: list[_Frame]) -> list[SliceStack]:
    groups: list[list[_Frame]] = []
    for frame in frames:
        for group in groups:
            if _same_slice(group[0], frame):
                group.append(frame)
                break
        else:
            groups.append([frame])
    stacks = []
    for group in groups:
        shapes = {frame.pixels.shape for frame in group}
        if len(shapes) != 1:
            raise SeriesLoadError(f"images of one slice differ in size {sorted(shapes)}; expected one size")
        # Sort by time; equal times keep acquisition order (then arrival order), never InstanceNumber.
        order = sorted(range(len(group)), key=lambda i: (group[i].time_ms, _nan_last(group[i].acquisition_time_s)))
        ordered = [group[i] for i in order]
        stacks.append(
            SliceStack(
                image_position_patient_mm=ordered[0].position_mm,
                image_orientation_patient=ordered[0].orientation,
                pixel_spacing_mm=ordered[0].pixel_spacing_mm,
                images=np.stack([frame.pixels for frame in ordered]),
                times_ms=np.array([frame.time_ms for frame in ordered], dtype=np.float64),
                acquisition_times_s=np.array([frame.acquisition_time_s for frame in ordered], dtype=np.float64),
                sources=tuple(frame.source for frame in ordered),
                frame_numbers=tuple(frame.frame_number for frame in ordered),
            )
        )
    stacks.sort(key=_position_along_normal)
    return stacks


def _nan_last(value: float) -> float:
    return float("inf") if np.isnan(value) else value


def _position_along_normal(stack: SliceStack) -> float:
    row = np.array(stack.image_orientation_patient[:3])
    column = np.array(stack.image_orientation_patient[3:])
    return float(np.dot(np.cross(row, column), stack.image_position_patient_mm))


def _same_slice(a: _Frame, b: _Frame) -> bool:
    return (
        np.allclose(a.position_mm, b.position_mm, atol=POSITION_TOLERANCE_MM)
        and np.allclose(a.orientation, b.orientation, atol=1e-4)
    )


def _frames_of(ds: Dataset, timing: TimingKind) -> list[_Frame]:
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, timing)
    if not _is_magnitude(ds.get("ImageType"), ds.get("ComplexImageComponent")):
        return []
    pixels = _rescaled(ds.pixel_array, ds)
    return [
        _Frame(
            pixels=pixels,
            time_ms=_classic_time_ms(ds, timing),
            acquisition_time_s=_tm_seconds(ds.get("AcquisitionTime") or ds.get("ContentTime")),
            position_mm=_triple(ds, "ImagePositionPatient"),
            orientation=_orientation(ds.get("ImageOrientationPatient"), ds),
            pixel_spacing_mm=_spacing(ds.get("PixelSpacing"), ds),
            source=ds,
            frame_number=1,
        )
    ]


def _enhanced_frames(ds: Dataset, timing: TimingKind) -> list[_Frame]:
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()
    per_frame = ds.PerFrameFunctionalGroupsSequence
    stored = ds.pixel_array
    if stored.ndim == 2:
        stored = stored[np.newaxis]
    if stored.shape[0] != len(per_frame):
        raise SeriesLoadError(f"{stored.shape[0]} frames of pixels but {len(per_frame)} per-frame groups")
    frames = []
    for index, group in enumerate(per_frame):
        frame_type = _group_item(group, shared, "MRImageFrameTypeSequence")
        if frame_type is not None and not _is_magnitude(
            frame_type.get("FrameType"), frame_type.get("ComplexImageComponent")
        ):
            continue
        content = _group_item(group, shared, "FrameContentSequence") or Dataset()
        position = _group_item(group, shared, "PlanePositionSequence")
        orientation = _group_item(group, shared, "PlaneOrientationSequence")
        measures = _group_item(group, shared, "PixelMeasuresSequence")
        transform = _group_item(group, shared, "PixelValueTransformationSequence")
        frames.append(
            _Frame(
                pixels=_rescaled(stored[index], transform if transform is not None else Dataset()),
                time_ms=_enhanced_time_ms(ds, group, shared, content, timing, index),
                acquisition_time_s=_dt_seconds(content.get("FrameAcquisitionDateTime")),
                position_mm=_triple(position if position is not None else Dataset(), "ImagePositionPatient"),
                orientation=_orientation(
                    orientation.get("ImageOrientationPatient") if orientation is not None else None, ds
                ),
                pixel_spacing_mm=_spacing(measures.get("PixelSpacing") if measures is not None else None, ds),
                source=ds,
                frame_number=index + 1,
            )
        )
    return frames


def _group_item(group: Dataset, shared: Dataset, keyword: str) -> Dataset | None:
    """The item of functional group ``keyword`` for one frame: per-frame first, then shared."""
    for holder in (group, shared):
        sequence = holder.get(keyword)
        if sequence:
            return sequence[0]
    return None


def _is_magnitude(image_type: str | Iterable[object] | None, complex_component: object) -> bool:
    if complex_component and str(complex_component).upper() != "MAGNITUDE" and str(complex_component) != "MIXED":
        return False
    values = [str(value).upper() for value in (image_type or [])]
    # Value 3 onwards says which component (Siemens M/P, Philips M_FFE\M or P_FFE\P).
    return not any(value in _PHASE_COMPONENTS for value in values[2:])


def _classic_time_ms(ds: Dataset, timing: TimingKind) -> float:
    comment = str(ds.get("ImageComments", "") or "")
    if timing is TimingKind.INVERSION:
        value = ds.get("InversionTime")
        if value not in (None, ""):
            return float(value)
        found = _TI_COMMENT.search(comment)
    else:
        found = _T2_PREP_COMMENT.search(comment)
    if found is None:
        raise MissingTimingError(
            f"image {ds.get('SOPInstanceUID', '?')} has no {timing.value} time: expected "
            + ("InversionTime or ImageComments like 'TIeff 180 ms'" if timing is TimingKind.INVERSION
               else "ImageComments like 'T2prep 25 ms'")
            + f", got ImageComments {comment!r}"
        )
    return float(found.group(1))


def _enhanced_time_ms(
    ds: Dataset, group: Dataset, shared: Dataset, content: Dataset, timing: TimingKind, index: int
) -> float:
    comment = str(content.get("FrameComments", "") or "")
    if timing is TimingKind.INVERSION:
        modifier = _group_item(group, shared, "MRModifierSequence")
        values = modifier.get("InversionTimes") if modifier is not None else None
        if values not in (None, ""):
            return float(values[0]) if isinstance(values, Sequence) else float(values)
        found = _TI_COMMENT.search(comment)
    else:
        found = _T2_PREP_COMMENT.search(comment)
    if found is None:
        raise MissingTimingError(
            f"frame {index + 1} of {ds.get('SOPInstanceUID', '?')} has no {timing.value} time: expected "
            + ("MR Modifier InversionTimes or FrameComments like 'TIeff 180 ms'" if timing is TimingKind.INVERSION
               else "FrameComments like 'T2prep 25 ms'")
            + f", got FrameComments {comment!r}"
        )
    return float(found.group(1))


def _rescaled(stored: np.ndarray, holder: Dataset) -> np.ndarray:
    slope = holder.get("RescaleSlope")
    intercept = holder.get("RescaleIntercept")
    values = stored.astype(np.float64)
    if slope not in (None, "") and float(slope) != 1.0:
        values *= float(slope)
    if intercept not in (None, "") and float(intercept) != 0.0:
        values += float(intercept)
    return values


def _triple(holder: Dataset, keyword: str) -> tuple[float, float, float]:
    value = holder.get(keyword)
    if value is None or len(value) != 3:
        raise SeriesLoadError(f"{keyword} must have 3 values, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _orientation(
    value: Sequence[SupportsFloat] | None, ds: Dataset
) -> tuple[float, float, float, float, float, float]:
    if value is None and "SharedFunctionalGroupsSequence" not in ds:
        value = ds.get("ImageOrientationPatient")
    if value is None or len(value) != 6:
        raise SeriesLoadError(f"ImageOrientationPatient must have 6 values, got {value!r}")
    row_x, row_y, row_z, column_x, column_y, column_z = (float(v) for v in value)
    return (row_x, row_y, row_z, column_x, column_y, column_z)


def _spacing(value: Sequence[SupportsFloat] | None, ds: Dataset) -> tuple[float, float]:
    if value is None or len(value) != 2:
        raise SeriesLoadError(f"PixelSpacing must have 2 values, got {value!r}")
    spacing = (float(value[0]), float(value[1]))
    if min(spacing) <= 0:
        raise SeriesLoadError(f"PixelSpacing must be positive, got {spacing}")
    return spacing


def _tm_seconds(value: object) -> float:
    """DICOM TM (HHMMSS.ffffff) as seconds after midnight; NaN when absent or malformed."""
    text = str(value or "").strip()
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", text)
    if not match:
        return float("nan")
    hours, minutes, seconds, fraction = match.groups()
    return int(hours) * 3600 + int(minutes or 0) * 60 + int(seconds or 0) + float(fraction or 0)


def _dt_seconds(value: object) -> float:
    """DICOM DT (YYYYMMDDHHMMSS.ffffff) as seconds after midnight of its date; NaN when absent."""
    text = str(value or "").strip()
    if len(text) < 10:
        return float("nan")
    try:
        datetime.strptime(text[:8], "%Y%m%d")
    except ValueError:
        return float("nan")
    return _tm_seconds(text[8:].split("+")[0].split("-")[0])


def _nominal_interval_ms(ds: Dataset) -> float | None:
    """The RR interval the tags give: NominalInterval, CardiacRRIntervalSpecified, else 60000 / HeartRate."""
    for keyword in ("NominalInterval", "CardiacRRIntervalSpecified"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    heart_rate = ds.get("HeartRate")
    if heart_rate not in (None, "") and float(heart_rate) > 0:
        return 60000.0 / float(heart_rate)
    return None
