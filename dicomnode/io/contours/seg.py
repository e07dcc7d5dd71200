"""DICOM Segmentation (BINARY, FRACTIONAL, LABELMAP) to per-image masks.

Frames are parsed one by one from the functional groups rather than through a toolkit's volume reconstruction,
because real files reference their sources in several ways: by SOP Instance UID in DerivationImageSequence, in a
per-frame SourceImageSequence, only at the top level (single-frame SEGs), or not at all, leaving the frame of
reference and ImagePositionPatient to place them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.io.contours.errors import ContourFormatError, UnresolvedReferenceError
from dicomnode.io.contours.model import ImageGeometry, ReaderMasks, derive_myocardium, structure_label
from dicomnode.io.contours.reader_identity import DEFAULT_IDENTITY_ORDER, IdentitySource, reader_name
from dicomnode.sop_classes import LABEL_MAP_SEGMENTATION, SEGMENTATION

LOGGER = logging.getLogger(__name__)

SEGMENTATION_TYPES = ("BINARY", "FRACTIONAL", "LABELMAP")


@dataclass(frozen=True)
class _Frame:
    index: int
    segment_number: int | None  # None for LABELMAP, where the pixel value is the segment number
    source_uids: tuple[str, ...]
    position_mm: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None


def _group_item(groups: Sequence[Dataset], keyword: str) -> Dataset | None:
    """The first item of ``keyword`` in the per-frame group, else in the shared group."""
    for group in groups:
        if keyword in group and len(group[keyword].value):
            return group[keyword].value[0]
    return None


def _top_level_uids(ds: Dataset) -> tuple[str, ...]:
    uids = [str(item.ReferencedSOPInstanceUID) for series in ds.get("ReferencedSeriesSequence", [])
            for item in series.get("ReferencedInstanceSequence", [])]
    uids += [str(item.ReferencedSOPInstanceUID) for item in ds.get("SourceImageSequence", [])]
    return tuple(dict.fromkeys(uids))


def _frames(ds: Dataset, n_frames: int) -> list[_Frame]:
    shared = list(ds.get("SharedFunctionalGroupsSequence", []))[:1]
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if per_frame and len(per_frame) != n_frames:
        if "NumberOfFrames" in ds or len(per_frame) < n_frames:
            raise ContourFormatError(
                f"SEG has {len(per_frame)} per-frame groups for {n_frames} frames; expected equal")
        # Without NumberOfFrames the pixel data holds one frame; cut-down files keep all the groups.
        LOGGER.warning("SEG %s lacks NumberOfFrames: reading %d of %d per-frame groups",
                       ds.get("SOPInstanceUID", "?"), n_frames, len(per_frame))
        per_frame = per_frame[:n_frames]
    top_level = _top_level_uids(ds)
    frames = []
    for index in range(n_frames):
        groups = ([per_frame[index]] if per_frame else []) + shared
        identification = _group_item(groups, "SegmentIdentificationSequence")
        number = int(identification.ReferencedSegmentNumber) if identification is not None else None
        uids = []
        for group in groups:
            for derivation in group.get("DerivationImageSequence", []):
                uids += [str(s.ReferencedSOPInstanceUID) for s in derivation.get("SourceImageSequence", [])]
            uids += [str(s.ReferencedSOPInstanceUID) for s in group.get("SourceImageSequence", [])]
        if not uids and n_frames == 1 and len(top_level) == 1:
            uids = list(top_level)  # a single frame with a single referenced image
        position = _group_item(groups, "PlanePositionSequence")
        orientation = _group_item(groups, "PlaneOrientationSequence")
        frames.append(_Frame(
            index=index,
            segment_number=number,
            source_uids=tuple(dict.fromkeys(uids)),
            position_mm=tuple(float(v) for v in position.ImagePositionPatient)  # type: ignore[arg-type]
            if position is not None and "ImagePositionPatient" in position else None,
            orientation=tuple(float(v) for v in orientation.ImageOrientationPatient)
            if orientation is not None and "ImageOrientationPatient" in orientation else None,
        ))
    return frames


def _match_by_position(frame: _Frame, geometries: Sequence[ImageGeometry], frame_of_reference: str | None,
                       shape: tuple[int, int]) -> ImageGeometry | None:
    """The geometry whose plane holds the frame's top-left pixel centre, in the same orientation and grid."""
    if frame.position_mm is None:
        return None
    best, best_distance = None, np.inf
    for geometry in geometries:
        if frame_of_reference and geometry.frame_of_reference_uid and \
                geometry.frame_of_reference_uid != frame_of_reference:
            continue
        if geometry.shape != shape:
            continue
        if frame.orientation is not None and not geometry.same_orientation(frame.orientation):
            continue
        distance = abs(float(geometry.distance_from_plane_mm(np.asarray(frame.position_mm))[0]))
        in_plane_px = geometry.patient_to_pixel(np.asarray(frame.position_mm))[0]
        if distance <= geometry.plane_tolerance_mm and np.all(np.abs(in_plane_px) < 0.5) and distance < best_distance:
            best, best_distance = geometry, distance
    return best


def _frame_mask(frame_pixels: np.ndarray, segmentation_type: str, maximum_fractional: float,
                segment_number: int) -> np.ndarray:
    if segmentation_type == "BINARY":
        return frame_pixels.astype(bool)
    if segmentation_type == "FRACTIONAL":
        return frame_pixels.astype(np.float64) >= 0.5 * maximum_fractional
    return frame_pixels == segment_number


def read_seg(
    ds: Dataset,
    geometries: Sequence[ImageGeometry] | None = None,
    *,
    reader: str | None = None,
    calling_ae_title: str | None = None,
    identity_order: Sequence[IdentitySource | str] = DEFAULT_IDENTITY_ORDER,
) -> ReaderMasks:
    """Masks of every segment of a Segmentation, per referenced image.

    Segment labels are mapped onto ``myocardium`` / ``cavity`` / ``epicardium`` by
    :func:`~dicomnode.io.contours.model.structure_label`; other segments keep their SegmentLabel. FRACTIONAL
    frames are thresholded at half the MaximumFractionalValue.

    Parameters
    ----------
    ds
        The Segmentation.
    geometries
        Images the SEG may be drawn on. With None, frames are keyed by the SOP Instance UIDs they reference;
        otherwise every frame must resolve to one of them by UID or, failing that, by plane position.
    reader
        The reader's name; when None it is taken from ``ds`` by :func:`reader_name`.
    calling_ae_title, identity_order
        Passed to :func:`reader_name`.

    Raises
    ------
    ContourFormatError
        If ``ds`` is not a Segmentation of a known type or its grid differs from the referenced image's.
    UnresolvedReferenceError
        If a frame references no known image.
    UnknownReaderError
        If ``reader`` is None and ``ds`` names no reader.
    """
    if str(ds.get("SOPClassUID", "")) not in (SEGMENTATION, LABEL_MAP_SEGMENTATION):
        raise ContourFormatError(f"SOP Class UID {ds.get('SOPClassUID')} is not a Segmentation; expected "
                                 f"{SEGMENTATION} or {LABEL_MAP_SEGMENTATION}")
    segmentation_type = str(ds.get("SegmentationType", "")).upper()
    if segmentation_type not in SEGMENTATION_TYPES:
        raise ContourFormatError(f"SegmentationType {segmentation_type!r} is not one of {SEGMENTATION_TYPES}")
    name = reader if reader is not None else reader_name(ds, calling_ae_title=calling_ae_title, order=identity_order)
    segments = {}
    for item in ds.get("SegmentSequence", []):
        codes = item.get("SegmentedPropertyTypeCodeSequence", [])
        code = (str(codes[0].CodingSchemeDesignator), str(codes[0].CodeValue)) if codes else None
        segments[int(item.SegmentNumber)] = structure_label(str(item.get("SegmentLabel", item.SegmentNumber)), code)
    if not segments:
        raise ContourFormatError(f"SEG {ds.get('SOPInstanceUID', '?')} has no SegmentSequence items")

    pixels = ds.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    shape = (int(ds.Rows), int(ds.Columns))
    maximum_fractional = float(ds.get("MaximumFractionalValue", 255) or 255)
    frame_of_reference = str(ds.FrameOfReferenceUID) if "FrameOfReferenceUID" in ds else None
    by_uid = {geometry.sop_instance_uid: geometry for geometry in geometries or ()}

    masks: dict[str, dict[str, np.ndarray]] = {}
    missing: set[str] = set()
    unplaced: list[int] = []
    for frame in _frames(ds, pixels.shape[0]):
        if geometries is None:
            target = frame.source_uids[0] if frame.source_uids else None
        else:
            known = next((by_uid[uid] for uid in frame.source_uids if uid in by_uid), None)
            known = known or _match_by_position(frame, geometries, frame_of_reference, shape)
            target = known.sop_instance_uid if known is not None else None
            if known is not None and known.shape != shape:
                raise ContourFormatError(f"SEG frames are {shape} but image {known.sop_instance_uid} is "
                                         f"{known.shape}; expected the same grid")
        if target is None:
            missing.update(frame.source_uids)
            if not frame.source_uids:
                unplaced.append(frame.index + 1)
            continue
        numbers = [n for n in segments if n != 0] if segmentation_type == "LABELMAP" else [frame.segment_number]
        for number in numbers:
            if number not in segments:
                raise ContourFormatError(f"frame {frame.index + 1} references segment {number}; expected one of "
                                         f"{sorted(segments)}")
            mask = _frame_mask(pixels[frame.index], segmentation_type, maximum_fractional, number)
            by_image = masks.setdefault(segments[number], {})
            by_image[target] = by_image[target] | mask if target in by_image else mask
    if missing or unplaced:
        detail = f"frames {unplaced} carry no source reference and match no image by position" if unplaced else ""
        raise UnresolvedReferenceError(missing, frame_of_reference, detail)
    LOGGER.debug("SEG %s: %d labels on %d images", ds.get("SOPInstanceUID", "?"), len(masks),
                 len({uid for m in masks.values() for uid in m}))
    return ReaderMasks(name, derive_myocardium(masks), f"DICOM-SEG {segmentation_type}")
