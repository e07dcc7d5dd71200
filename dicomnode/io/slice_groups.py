"""Which series of a study show the same slices of one mapping acquisition: the analysis units.

Scanners send one slice's raw images and its map as separate series, in any order, in one or several associations;
GE and Philips may send one raw series per inversion time; Siemens adds a colour display copy of each map. The node
must analyse each slice once, so series of one map kind (T1 or T2) are linked when they share a slice (same frame of
reference and orientation, positions along the slice normal within :data:`SAME_SLICE_MM`) and belong to the same
acquisition; the connected groups of linked series are the units. A pre- and a post-contrast T1 series of the same
slice are different acquisitions, and so are a MOLLI and a ShMOLLI of one slice: a map is linked to raw images it
names as its source, else to raw images of its protocol acquired within :data:`SAME_ACQUISITION_S` of it; two maps
and two raw series need the same protocol and time as well (and raw series split per TI hold different TIs).

Headers only: the pixels are read by the job that analyses a unit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from db.models import SeriesRole
from dicomnode.io.classify import inversion_time_ms

#: Slices closer than this along their normal are the same slice (scanners round positions; maps copy raw ones).
SAME_SLICE_MM = 1.0
#: Series of one acquisition are acquired (and mapped inline) within this; contrast phases lie further apart.
SAME_ACQUISITION_S = 300.0
#: Orientations whose normals agree this closely (|cos|) are the same plane.
SAME_PLANE_COS = 0.995

RAW_ROLES = frozenset({SeriesRole.RAW_IR, SeriesRole.T2_PREP})
MAP_ROLES = frozenset({SeriesRole.T1_MAP, SeriesRole.T2_MAP})
#: The map kind ("T1"/"T2") each analysable role belongs to.
KIND_OF_ROLE = {SeriesRole.RAW_IR: "T1", SeriesRole.T1_MAP: "T1", SeriesRole.T2_PREP: "T2", SeriesRole.T2_MAP: "T2"}
_DIGITS = re.compile(r"[\d.]+")
_TI_WORDS = re.compile(r"\b(?:TI|TIEFF|TE|PREP)\b")


@dataclass(frozen=True)
class SlicePlace:
    """Where one image lies: its plane's unit normal, its position along it (mm) and its frame of reference."""

    normal: tuple[float, float, float]
    position_mm: float
    frame_of_reference_uid: str

    def same_slice(self, other: SlicePlace) -> bool:
        if self.frame_of_reference_uid and other.frame_of_reference_uid \
                and self.frame_of_reference_uid != other.frame_of_reference_uid:
            return False
        if abs(float(np.dot(self.normal, other.normal))) < SAME_PLANE_COS:
            return False
        # Positions are compared along one normal; a flipped normal flips the sign of the other's position.
        sign = 1.0 if float(np.dot(self.normal, other.normal)) > 0 else -1.0
        return abs(self.position_mm - sign * other.position_mm) < SAME_SLICE_MM


@dataclass(frozen=True)
class MappingSeries:
    """One stored series of a mapping role, by its headers (pixels not read)."""

    series_id: int
    revision: int
    role: SeriesRole
    series_instance_uid: str
    headers: tuple[Dataset, ...]

    @property
    def kind(self) -> str:
        return KIND_OF_ROLE[self.role]

    @property
    def is_map(self) -> bool:
        return self.role in MAP_ROLES

    @property
    def places(self) -> list[SlicePlace]:
        return [place for ds in self.headers for place in slice_places(ds)]

    @property
    def sop_instance_uids(self) -> set[str]:
        return {str(ds.get("SOPInstanceUID", "")) for ds in self.headers}

    @property
    def acquired_s(self) -> float | None:
        """The earliest acquisition (else content, else series) time of its images, seconds after midnight."""
        times = [t for ds in self.headers if (t := _acquired_s(ds)) is not None]
        return min(times) if times else None

    @property
    def protocol(self) -> str:
        """Protocol name (else series description) without numbers: per-TI series differ only in their TI."""
        first = self.headers[0] if self.headers else Dataset()
        text = str(first.get("ProtocolName", "") or first.get("SeriesDescription", "")).upper()
        return " ".join(_TI_WORDS.sub(" ", _DIGITS.sub(" ", re.sub(r"[^A-Z0-9.]+", " ", text))).split())

    @property
    def source_sop_instance_uids(self) -> set[str]:
        """The images a map names as its source (Source / Referenced / Derivation image sequences)."""
        found: set[str] = set()
        for ds in self.headers:
            for keyword in ("SourceImageSequence", "ReferencedImageSequence"):
                found |= {str(item.get("ReferencedSOPInstanceUID", "")) for item in ds.get(keyword, [])}
            for derivation in ds.get("DerivationImageSequence", []):
                found |= {str(item.get("ReferencedSOPInstanceUID", ""))
                          for item in derivation.get("SourceImageSequence", [])}
        return found - {""}


def slice_places(ds: Dataset) -> list[SlicePlace]:
    """Where the images of one instance lie: one place for a single-frame image, one per frame for Enhanced MR."""
    frame_of_reference = str(ds.get("FrameOfReferenceUID", ""))
    places = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        shared_group = shared[0] if shared else Dataset()
        for group in per_frame:
            position = _item(group, shared_group, "PlanePositionSequence")
            orientation = _item(group, shared_group, "PlaneOrientationSequence")
            place = _place(position.get("ImagePositionPatient") if position else None,
                           orientation.get("ImageOrientationPatient") if orientation else None, frame_of_reference)
            if place is not None:
                places.append(place)
        return places
    place = _place(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), frame_of_reference)
    return [place] if place is not None else []


def linked(a: MappingSeries, b: MappingSeries, *, raw_sop_instance_uids: set[str] | None = None) -> bool:
    """Whether two series of one map kind show a slice of the same acquisition (see the module's rules).

    A map that names source images is linked by them when they are raw images the node holds
    (``raw_sop_instance_uids``, all when None); a map that names only images the node does not hold as raw (a
    MOCO series) is linked by acquisition time, as one naming none.
    """
    if a.kind != b.kind or not _share_slice(a, b):
        return False
    if a.is_map and b.is_map:  # the same map sent twice (a copy, a MOCO and a plain map), not another sequence's
        return _same_protocol(a, b) and _close_in_time(a, b)
    if a.is_map or b.is_map:
        raw, derived = (b, a) if a.is_map else (a, b)
        named = derived.source_sop_instance_uids
        if named and (raw_sop_instance_uids is None or named & raw_sop_instance_uids):
            return bool(named & raw.sop_instance_uids)
        return _same_protocol(a, b) and _close_in_time(a, b)
    return a.protocol == b.protocol and _close_in_time(a, b) and _times_disjoint(a, b)


def mapping_units(series: Sequence[MappingSeries]) -> list[tuple[MappingSeries, ...]]:
    """The connected groups of :func:`linked` series, each ordered by series id; groups by their first id."""
    parent = list(range(len(series)))
    raw_uids = {uid for s in series if not s.is_map for uid in s.sop_instance_uids}

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for i in range(len(series)):
        for j in range(i + 1, len(series)):
            if linked(series[i], series[j], raw_sop_instance_uids=raw_uids):
                parent[root(j)] = root(i)
    groups: dict[int, list[MappingSeries]] = {}
    for index, item in enumerate(series):
        groups.setdefault(root(index), []).append(item)
    units = [tuple(sorted(group, key=lambda s: s.series_id)) for group in groups.values()]
    return sorted(units, key=lambda unit: unit[0].series_id)


def unit_key(study_instance_uid: str, kind: str, members: Iterable[MappingSeries]) -> str:
    """The idempotency key of a unit: the study, the kind and a digest of its members' UIDs and revisions."""
    parts = sorted(f"{m.series_instance_uid}:{m.revision}" for m in members)
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
    return f"{study_instance_uid}/{kind}/{digest}"


def _share_slice(a: MappingSeries, b: MappingSeries) -> bool:
    places_b = b.places
    return any(pa.same_slice(pb) for pa in a.places for pb in places_b)


def _same_protocol(a: MappingSeries, b: MappingSeries) -> bool:
    """Same protocol, or one names the other plus a suffix (a map series "<protocol> T1MAP"); unknown matches."""
    pa, pb = a.protocol, b.protocol
    return not pa or not pb or pa.startswith(pb) or pb.startswith(pa)


def _close_in_time(a: MappingSeries, b: MappingSeries) -> bool:
    ta, tb = a.acquired_s, b.acquired_s
    return ta is None or tb is None or abs(ta - tb) <= SAME_ACQUISITION_S


def _times_disjoint(a: MappingSeries, b: MappingSeries) -> bool:
    """Raw series of one acquisition split per TI hold different TIs; the same TIs twice are a repeat."""
    times_a, times_b = _prep_times(a), _prep_times(b)
    return not times_a or not times_b or not (times_a & times_b)


def _prep_times(series: MappingSeries) -> set[float]:
    times: set[float] = set()
    for ds in series.headers:
        value = inversion_time_ms(ds) if series.role is SeriesRole.RAW_IR else None
        if value is not None:
            times.add(round(value))
    return times


def _acquired_s(ds: Dataset) -> float | None:
    for keyword in ("AcquisitionTime", "ContentTime", "SeriesTime"):
        text = str(ds.get(keyword, "") or "").strip()
        match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", text)
        if match:
            hours, minutes, seconds, fraction = match.groups()
            return int(hours) * 3600 + int(minutes or 0) * 60 + int(seconds or 0) + float(fraction or 0)
    return None


def _item(group: Dataset, shared: Dataset, keyword: str) -> Dataset | None:
    for holder in (group, shared):
        sequence = holder.get(keyword)
        if sequence:
            return sequence[0]
    return None


def _place(position: object, orientation: object, frame_of_reference_uid: str) -> SlicePlace | None:
    try:
        origin = np.array([float(v) for v in position], dtype=np.float64)  # type: ignore[attr-defined]
        cosines = np.array([float(v) for v in orientation], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if origin.shape != (3,) or cosines.shape != (6,):
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    length = float(np.linalg.norm(normal))
    if length < 1e-6:
        return None
    normal /= length
    return SlicePlace((float(normal[0]), float(normal[1]), float(normal[2])), float(np.dot(normal, origin)),
                      frame_of_reference_uid)
