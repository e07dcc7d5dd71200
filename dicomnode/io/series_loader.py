"""Load a raw mapping series from its DICOM instances into per-slice image stacks.

Real series follow the conventions listed in docs/phantom.md ("File layout") and the design page:

- several images share one slice position (one per inversion or preparation time): images are grouped by
  ImagePositionPatient and never de-duplicated by it;
- inversion times come from InversionTime, else from ImageComments / FrameComments ("TIeff 180 ms", "TI 180"),
  else from the Enhanced MR per-frame MR Modifier (InversionTimes); T2-preparation times from ImageComments /
  FrameComments ("T2prep 25 ms");
- they are not in acquisition order (MOLLI interleaves its inversions): images are sorted by that time, never by
  InstanceNumber;
- phase, real and imaginary images may sit in the same series as the magnitude images: only magnitude images are
  kept (:func:`complex_component`). GE marks the component only in its private "image type" (0043,xx2F) of block
  ``GEMS_PARM_01`` (0 magnitude, 1 phase, 2 real, 3 imaginary) and leaves ImageType silent
  (``ORIGINAL\\PRIMARY\\OTHER``); Siemens writes ``...\\M\\...`` or ``...\\P\\...``; Philips
  ``M_FFE\\M\\FFE``, ``P_FFE\\P``, ``R_FFE\\R``, ``I_FFE\\I``; Enhanced MR ComplexImageComponent per frame;
- GE and Philips may send one series per inversion time: :func:`belongs_to_same_acquisition` tells which series
  go together and :func:`load_series_group` loads them as one;
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
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from dicomnode.errors import MyomapError

LOGGER = logging.getLogger(__name__)

_TI_COMMENT = re.compile(r"\bTI(?:eff)?\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_T2_PREP_COMMENT = re.compile(r"\bT2\s*-?\s*prep(?:aration)?\.?\s*(?:duration)?\s*[:=]?\s*(\d+(?:\.\d+)?)",
                              re.IGNORECASE)
#: The values :func:`complex_component` answers.
MAGNITUDE, PHASE, REAL, IMAGINARY = "MAGNITUDE", "PHASE", "REAL", "IMAGINARY"
#: GE's private creator of the block that holds the image type (0043,xx2F).
GE_PRIVATE_CREATOR = "GEMS_PARM_01"
_GE_IMAGE_TYPE_ELEMENT = 0x2F
_GE_COMPONENTS = {0: MAGNITUDE, 1: PHASE, 2: REAL, 3: IMAGINARY}
# ImageType values (from value 3 on) that name a component: Siemens M/P, Philips M\P\R\I and M_FFE, P_SE, ...
_IMAGE_TYPE_COMPONENTS = {
    "M": MAGNITUDE, "MAGNITUDE": MAGNITUDE, "P": PHASE, "PHASE": PHASE,
    "R": REAL, "REAL": REAL, "I": IMAGINARY, "IMAGINARY": IMAGINARY,
}
_PHILIPS_COMPONENT = re.compile(r"([MPRI])_[A-Z0-9]+")
_KNOWN_COMPONENTS = (PHASE, REAL, IMAGINARY, MAGNITUDE)  # precedence when markers disagree
# An inversion (or preparation) time written into a protocol name: "TI=100", "TI 180ms", "MOLLI_TI1100".
_TIME_IN_NAME = re.compile(
    r"(?<![A-Z])(?:TI(?:EFF)?|T2\s*-?\s*PREP\w*|TE)\s*[:=_]?\s*\d+(?:\.\d+)?\s*(?:MSEC|MS)?", re.IGNORECASE
)
#: Times closer than this (ms) are the same inversion or preparation time across series.
TIME_TOLERANCE_MS = 0.5
#: Series of one acquisition lie this close in series number and in time (belongs_to_same_acquisition).
MAX_SERIES_NUMBER_GAP = 20
MAX_ACQUISITION_GAP_S = 600.0
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
    member = _member(datasets, timing)
    return _loaded(member.first, timing, member.frames)


def load_series_group(datasets_by_series: Sequence[Sequence[Dataset]], timing: TimingKind | str) -> LoadedSeries:
    """Load several raw series of ONE acquisition (GE, Philips: one series per inversion time) as one series.

    The magnitude images of all series are merged by slice position and sorted by time, as :func:`load_series`
    does for one series. The series must belong together: one StudyInstanceUID; one FrameOfReferenceUID (where
    given); the same set of slice positions and orientations; the same protocol (ProtocolName and
    SeriesDescription, each compared where both series give it, with inversion or preparation times and every
    digit left out); and no inversion (or preparation) time in two of them, since a TI repeated across series is
    a re-acquisition, not a per-TI set. The result carries the identity (UID, number, description, sequence
    name, RR interval) of the series with the lowest SeriesNumber.

    Parameters
    ----------
    datasets_by_series
        The instances of each series, one sequence per series, in any order.
    timing
        Which time orders the images.

    Raises
    ------
    SeriesLoadError
        If no series is given, a series is given twice, one holds no magnitude image or instances of several
        series, or the series do not belong to one acquisition (the message says which rule failed).
    MissingTimingError
        If a magnitude image has no time of the kind asked for.
    """
    timing = TimingKind(timing)
    if not datasets_by_series:
        raise SeriesLoadError("no series to load; expected the raw series of one acquisition")
    members = [_member(datasets, timing) for datasets in datasets_by_series]
    seen: set[str] = set()
    for member in members:
        if member.uid in seen:
            raise SeriesLoadError(f"series {member.uid} is given twice; expected each series of the group once")
        seen.add(member.uid)
    _check_one_acquisition(members, timing)
    lead = min(members, key=lambda member: _series_number_key(member.first))
    return _loaded(lead.first, timing, [frame for member in members for frame in member.frames])


def belongs_to_same_acquisition(a: Dataset, b: Dataset) -> bool:
    """Whether two raw series, each known by one header, may be parts of one acquisition (one series per TI).

    True when the headers share the StudyInstanceUID, the FrameOfReferenceUID (when both give one), slice
    position and orientation, and the protocol (as :func:`load_series_group` compares it); their inversion (or
    T2-preparation) times differ (when both give one; an equal time is a re-acquisition); their SeriesNumbers lie
    within :data:`MAX_SERIES_NUMBER_GAP` (when both give one); and their acquisition times and their series times
    lie within :data:`MAX_ACQUISITION_GAP_S` (each when both give it). Two headers of one series always belong.

    Pass the headers of the same slice when series hold several slices (e.g. each series' first image along the
    slice normal); :func:`load_series_group` then checks the whole slice sets.
    """
    if str(a.get("SeriesInstanceUID", "")) and a.get("SeriesInstanceUID") == b.get("SeriesInstanceUID"):
        return True
    study = str(a.get("StudyInstanceUID", "") or "")
    if not study or study != str(b.get("StudyInstanceUID", "") or ""):
        return False
    frames_of_reference = {str(ds.get("FrameOfReferenceUID", "") or "") for ds in (a, b)} - {""}
    if len(frames_of_reference) > 1:
        return False
    planes = [_header_plane(ds) for ds in (a, b)]
    if planes[0] is None or planes[1] is None or not _same_plane(planes[0], planes[1]):
        return False
    if _protocol_mismatch(a, b) is not None:
        return False
    times = [_header_time_ms(ds) for ds in (a, b)]
    if times[0] is not None and times[1] is not None and abs(times[0] - times[1]) < TIME_TOLERANCE_MS:
        return False
    numbers = [_series_number(ds) for ds in (a, b)]
    if numbers[0] is not None and numbers[1] is not None and abs(numbers[0] - numbers[1]) > MAX_SERIES_NUMBER_GAP:
        return False
    for date_keyword, time_keyword in (("AcquisitionDate", "AcquisitionTime"), ("SeriesDate", "SeriesTime")):
        gap_s = _time_gap_s(a, b, date_keyword, time_keyword)
        if gap_s is not None and gap_s > MAX_ACQUISITION_GAP_S:
            return False
    return True


def complex_component(ds: Dataset) -> str:
    """Which component of the complex image an image holds: ``MAGNITUDE``, ``PHASE``, ``REAL``, ``IMAGINARY``, or
    ``""`` when nothing says (then it is taken for magnitude).

    GE's private image type (0043,xx2F) decides when present (read from the ``GEMS_PARM_01`` block, or from
    (0043,102F) when anonymisation removed the private creator; IS, SS, US or raw bytes). Otherwise
    ComplexImageComponent and the ImageType values from value 3 on (Siemens ``M``/``P``, Philips ``M_FFE\\M``,
    ``R_FFE\\R``, ``I_FFE\\I``, ``P_FFE\\P``): any non-magnitude marker wins over a magnitude one. An Enhanced
    MR instance answers for its top level only (``MIXED`` gives ``""``); its frames are read one by one when loaded.
    """
    ge = _ge_component(ds)
    if ge is not None:
        return ge
    return _component(ds.get("ImageType"), ds.get("ComplexImageComponent"))


@dataclass(frozen=True)
class _Member:
    """One series of a group: its UID, first instance and magnitude frames."""

    uid: str
    first: Dataset
    datasets: tuple[Dataset, ...]
    frames: list[_Frame]


def _member(datasets: Sequence[Dataset], timing: TimingKind) -> _Member:
    if not datasets:
        raise SeriesLoadError("no instances to load; expected the instances of one series")
    series_uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    if len(series_uids) != 1:
        raise SeriesLoadError(f"instances belong to {len(series_uids)} series; expected one")
    uid = series_uids.pop()
    frames = [frame for ds in datasets for frame in _frames_of(ds, timing)]
    if not frames:
        raise SeriesLoadError(f"series {uid} holds no magnitude image")
    return _Member(uid=uid, first=datasets[0], datasets=tuple(datasets), frames=frames)


def _loaded(first: Dataset, timing: TimingKind, frames: list[_Frame]) -> LoadedSeries:
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


def _check_one_acquisition(members: list[_Member], timing: TimingKind) -> None:
    """Raise SeriesLoadError naming the first rule by which ``members`` are not parts of one acquisition."""
    studies = {str(ds.get("StudyInstanceUID", "") or "") for member in members for ds in member.datasets}
    if len(studies) != 1:
        raise SeriesLoadError(f"the series belong to {len(studies)} studies {sorted(studies)}; expected one")
    frames_of_reference = {
        str(ds.get("FrameOfReferenceUID", "") or "") for member in members for ds in member.datasets
    } - {""}
    if len(frames_of_reference) > 1:
        raise SeriesLoadError(
            f"the series lie in {len(frames_of_reference)} frames of reference {sorted(frames_of_reference)}; "
            "expected one"
        )
    reference = members[0]
    reference_planes = _planes(reference.frames)
    for member in members[1:]:
        planes = _planes(member.frames)
        if not _same_plane_sets(reference_planes, planes):
            raise SeriesLoadError(
                f"series {member.uid} covers slice positions {[p[0] for p in planes]} but series {reference.uid} "
                f"covers {[p[0] for p in reference_planes]}; expected the same slices in every series"
            )
        mismatch = _protocol_mismatch(reference.first, member.first)
        if mismatch is not None:
            raise SeriesLoadError(
                f"series {member.uid} has {mismatch[0]} {mismatch[2]!r} but series {reference.uid} has "
                f"{mismatch[1]!r}; expected one protocol (times and digits ignored)"
            )
    label = "inversion time" if timing is TimingKind.INVERSION else "T2-preparation time"
    for index, first in enumerate(members):
        for second in members[index + 1:]:
            for time_ms in sorted({frame.time_ms for frame in first.frames}):
                if any(abs(time_ms - frame.time_ms) < TIME_TOLERANCE_MS for frame in second.frames):
                    raise SeriesLoadError(
                        f"{label} {time_ms:g} ms is in series {first.uid} and in series {second.uid}: a time "
                        "repeated across series is a re-acquisition, not one series per time; load them apart"
                    )


_Plane = tuple[tuple[float, float, float], tuple[float, float, float, float, float, float]]


def _planes(frames: list[_Frame]) -> list[_Plane]:
    planes: list[_Plane] = []
    for frame in frames:
        plane = (frame.position_mm, frame.orientation)
        if not any(_same_plane(plane, known) for known in planes):
            planes.append(plane)
    return planes


def _same_plane(a: _Plane, b: _Plane) -> bool:
    return bool(
        np.allclose(a[0], b[0], atol=POSITION_TOLERANCE_MM) and np.allclose(a[1], b[1], atol=1e-4)
    )


def _same_plane_sets(a: list[_Plane], b: list[_Plane]) -> bool:
    return len(a) == len(b) and all(any(_same_plane(p, q) for q in b) for p in a)


def _header_plane(ds: Dataset) -> _Plane | None:
    """Position and orientation of a header (Enhanced MR: its first frame); None when it has none."""
    try:
        if "PerFrameFunctionalGroupsSequence" in ds:
            shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()
            group = ds.PerFrameFunctionalGroupsSequence[0]
            position = _group_item(group, shared, "PlanePositionSequence")
            orientation = _group_item(group, shared, "PlaneOrientationSequence")
            return (
                _triple(position if position is not None else Dataset(), "ImagePositionPatient"),
                _orientation(orientation.get("ImageOrientationPatient") if orientation is not None else None, ds),
            )
        return _triple(ds, "ImagePositionPatient"), _orientation(ds.get("ImageOrientationPatient"), ds)
    except (SeriesLoadError, ValueError, TypeError, IndexError):
        return None


def normalised_protocol(text: str) -> str:
    """A protocol or series name with inversion/preparation times and every digit left out, upper case, each run
    of other characters one ``_``: ``MOLLI 5(3)3 SAX TI=180`` and ``MOLLI 5(3)3 SAX TI=1100`` give the same."""
    without_times = _TIME_IN_NAME.sub(" ", text)
    return re.sub(r"[^A-Z]+", "_", re.sub(r"\d+", " ", without_times).upper()).strip("_")


def _protocol_mismatch(a: Dataset, b: Dataset) -> tuple[str, str, str] | None:
    """(keyword, a's value, b's value) of the first protocol name that differs after normalisation; else None."""
    for keyword in ("ProtocolName", "SeriesDescription"):
        first, second = (str(ds.get(keyword, "") or "").strip() for ds in (a, b))
        if first and second and normalised_protocol(first) != normalised_protocol(second):
            return keyword, first, second
    return None


def _header_time_ms(ds: Dataset) -> float | None:
    """The inversion time, else the T2-preparation time, of a header (Enhanced MR: its first frame)."""
    for timing in (TimingKind.INVERSION, TimingKind.T2_PREP):
        try:
            if "PerFrameFunctionalGroupsSequence" in ds:
                shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()
                group = ds.PerFrameFunctionalGroupsSequence[0]
                content = _group_item(group, shared, "FrameContentSequence") or Dataset()
                return _enhanced_time_ms(ds, group, shared, content, timing, 0)
            return _classic_time_ms(ds, timing)
        except (SeriesLoadError, ValueError, TypeError, IndexError):
            continue
    return None


def _series_number(ds: Dataset) -> int | None:
    try:
        return int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        return None


def _series_number_key(ds: Dataset) -> tuple[bool, int]:
    number = _series_number(ds)
    return (number is None, number or 0)


def _time_gap_s(a: Dataset, b: Dataset, date_keyword: str, time_keyword: str) -> float | None:
    """Seconds between the two headers' date and time (dates used when both give them); None if one lacks it."""
    times = [_tm_seconds(ds.get(time_keyword)) for ds in (a, b)]
    if any(np.isnan(t) for t in times):
        return None
    dates = [str(ds.get(date_keyword, "") or "").strip() for ds in (a, b)]
    try:
        days = [datetime.strptime(d, "%Y%m%d") for d in dates] if all(dates) else None
    except ValueError:
        days = None
    if days is not None:
        return abs((days[0] - days[1]).total_seconds() + times[0] - times[1])
    gap = abs(times[0] - times[1]) % 86400.0
    return min(gap, 86400.0 - gap)  # without dates, across midnight either way


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
    if complex_component(ds) not in (MAGNITUDE, ""):
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
        if frame_type is not None and _component(
            frame_type.get("FrameType"), frame_type.get("ComplexImageComponent")
        ) not in (MAGNITUDE, ""):
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


def _component(image_type: str | Iterable[object] | None, complex_image_component: object) -> str:
    """The component ComplexImageComponent and ImageType (value 3 on) name; a non-magnitude one wins; "" if none."""
    found = set()
    stated = str(complex_image_component or "").strip().upper()
    if stated in _KNOWN_COMPONENTS:
        found.add(stated)
    values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    for value in values[2:]:
        text = str(value).strip().upper()
        named = _IMAGE_TYPE_COMPONENTS.get(text)
        philips = _PHILIPS_COMPONENT.fullmatch(text)
        if named is None and philips is not None:
            named = _IMAGE_TYPE_COMPONENTS[philips.group(1)]
        if named is not None:
            found.add(named)
    return next((component for component in _KNOWN_COMPONENTS if component in found), "")


def _ge_component(ds: Dataset) -> str | None:
    """The component GE's private image type names; None when the element is absent or holds another value."""
    element = _ge_image_type_element(ds)
    if element is None:
        return None
    number = _private_int(element.value, little_endian=getattr(ds, "is_little_endian", None) is not False)
    return _GE_COMPONENTS.get(number) if number is not None else None


def _ge_image_type_element(ds: Dataset) -> DataElement | None:
    """(0043,xx2F) of the GEMS_PARM_01 block; (0043,102F) when no private creator is left (anonymised data) and
    the header does not name another manufacturer."""
    creators = {}
    for element in ds[Tag(0x0043, 0x0010):Tag(0x0043, 0x0100)]:
        creators[element.tag.element] = _text_value(element.value)
    for block, creator in creators.items():
        if creator == GE_PRIVATE_CREATOR:
            return ds.get(Tag(0x0043, (block << 8) | _GE_IMAGE_TYPE_ELEMENT))
    if 0x10 in creators:
        return None  # block 0x10 belongs to another creator: (0043,102F) means something else
    manufacturer = str(ds.get("Manufacturer", "") or "").strip().upper()
    if manufacturer and not manufacturer.startswith("GE"):
        return None
    return ds.get(Tag(0x0043, 0x1000 | _GE_IMAGE_TYPE_ELEMENT))


def _text_value(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", "replace").strip("\0 ")
    return str(value or "").strip("\0 ")


def _private_int(value: object, *, little_endian: bool) -> int | None:
    """An integer from a private element as pydicom gives it: int (SS, US), str (IS), a list, or raw bytes (UN)."""
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if re.fullmatch(rb"\s*[+-]?\d+\s*", raw):  # IS written as UN
            return int(raw)
        if len(raw) >= 2:  # SS or US: the first value
            return int.from_bytes(raw[:2], "little" if little_endian else "big", signed=True)
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if len(value) else None
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


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
