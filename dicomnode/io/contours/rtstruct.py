"""RT Structure Set to point contours in pixels and to masks on the referenced images.

CLOSED_PLANAR contours (patient coordinates, mm) are placed on the image that ContourImageSequence references,
or, when that reference is absent or unknown, on the known image whose plane holds every point within half a
slice thickness. Other geometric types (POINT, OPEN_PLANAR) are not regions and are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.io.contours.errors import ContourFormatError, UnresolvedReferenceError
from dicomnode.io.contours.model import ContourSet, ImageGeometry, ReaderMasks, structure_label
from dicomnode.io.contours.reader_identity import DEFAULT_IDENTITY_ORDER, IdentitySource, reader_name
from dicomnode.sop_classes import RT_STRUCTURE_SET

LOGGER = logging.getLogger(__name__)



def _plane_match(points_mm: np.ndarray, geometries: Sequence[ImageGeometry],
                 frame_of_reference: str | None) -> ImageGeometry | None:
    """The image whose plane lies nearest the points, among those holding them all within tolerance."""
    best, best_distance = None, np.inf
    for geometry in geometries:
        if frame_of_reference and geometry.frame_of_reference_uid and \
                geometry.frame_of_reference_uid != frame_of_reference:
            continue
        if geometry.contains_points(points_mm):
            distance = float(np.abs(geometry.distance_from_plane_mm(points_mm)).mean())
            if distance < best_distance:
                best, best_distance = geometry, distance
    return best


def _contour_points_mm(contour: Dataset, where: str) -> np.ndarray:
    """The contour's (n, 3) points in mm; ``where`` names the contour in the error."""
    raw = contour.get("ContourData")  # an empty element reads as None
    try:
        values = np.asarray([float(v) for v in (raw if raw is not None else [])], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ContourFormatError(f"{where}: ContourData is not a list of numbers ({error})") from error
    if values.size == 0 or values.size % 3 or not np.isfinite(values).all():
        raise ContourFormatError(f"{where}: ContourData holds {values.size} values; expected a non-empty "
                                 "multiple of 3, all finite")
    return values.reshape(-1, 3)


def _roi_number(item: Dataset, keyword: str) -> int:
    try:
        return int(item[keyword].value)
    except (KeyError, TypeError, ValueError) as error:
        raise ContourFormatError(f"{keyword} is missing or not a number: {item.get(keyword)!r}") from error


def read_rtstruct_contours(
    ds: Dataset,
    geometries: Sequence[ImageGeometry],
    *,
    reader: str | None = None,
    calling_ae_title: str | None = None,
    identity_order: Sequence[IdentitySource | str] = DEFAULT_IDENTITY_ORDER,
    match_by_plane: bool = True,
) -> ContourSet:
    """CLOSED_PLANAR contours of every ROI as pixel (x, y) points on the images they lie on.

    ROI names are mapped by :func:`~dicomnode.io.contours.model.structure_label` (``LV Endocardium`` -> ``cavity``,
    ``LV Epicardium`` -> ``epicardium``); others keep their ROIName.

    Parameters
    ----------
    ds
        The RT Structure Set.
    geometries
        Images the contours may lie on.
    reader, calling_ae_title, identity_order
        The reader's name, or how to find it with :func:`reader_name`.
    match_by_plane
        Place contours whose referenced image is absent or unknown on the image whose plane holds them.

    Raises
    ------
    ContourFormatError
        If ``ds`` is not an RT Structure Set or a contour's points are malformed.
    UnresolvedReferenceError
        If a contour lies on no known image.
    UnknownReaderError
        If ``reader`` is None and ``ds`` names no reader.
    """
    if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET and ds.get("Modality") != "RTSTRUCT":
        raise ContourFormatError(f"SOP Class UID {ds.get('SOPClassUID')} is not an RT Structure Set; expected "
                                 f"{RT_STRUCTURE_SET}")
    name = reader if reader is not None else reader_name(ds, calling_ae_title=calling_ae_title, order=identity_order)
    frames_of_reference = [str(item.FrameOfReferenceUID) for item in ds.get("ReferencedFrameOfReferenceSequence", [])
                           if "FrameOfReferenceUID" in item]
    default_frame_of_reference = frames_of_reference[0] if frames_of_reference else None
    rois = {_roi_number(item, "ROINumber"): item for item in ds.get("StructureSetROISequence") or []}
    by_uid = {geometry.sop_instance_uid: geometry for geometry in geometries}

    contours: dict[str, dict[str, list[np.ndarray]]] = {}
    missing: set[str] = set()
    unplaced: list[str] = []
    skipped = 0
    frame_of_reference = default_frame_of_reference
    for roi_contour in ds.get("ROIContourSequence") or []:
        number = _roi_number(roi_contour, "ReferencedROINumber")
        roi = rois.get(number)
        if roi is None:
            raise ContourFormatError(f"ROIContourSequence references ROI {number}; expected one of {sorted(rois)}")
        roi_name = str(roi.get("ROIName") or f"ROI {number}")
        label = structure_label(roi_name)
        frame_of_reference = str(roi.get("ReferencedFrameOfReferenceUID", "") or default_frame_of_reference or "")
        for index, contour in enumerate(roi_contour.get("ContourSequence") or [], start=1):
            if str(contour.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                skipped += 1
                continue
            points_mm = _contour_points_mm(contour, f"ROI {roi_name!r}, contour {index}")
            references = [str(item.ReferencedSOPInstanceUID) for item in contour.get("ContourImageSequence", [])]
            geometry = next((by_uid[uid] for uid in references if uid in by_uid), None)
            if geometry is None and match_by_plane:
                geometry = _plane_match(points_mm, geometries, frame_of_reference or None)
            if geometry is None:
                missing.update(references)
                if not references:
                    unplaced.append(f"{label} at {np.round(points_mm.mean(axis=0), 1).tolist()} mm")
                continue
            by_image = contours.setdefault(label, {}).setdefault(geometry.sop_instance_uid, [])
            by_image.append(geometry.patient_to_pixel(points_mm))
    if missing or unplaced:
        detail = f"contours without an image reference lie on no known plane: {unplaced}" if unplaced else ""
        raise UnresolvedReferenceError(missing, frame_of_reference or default_frame_of_reference, detail)
    if skipped:
        LOGGER.debug("RTSTRUCT %s: skipped %d contours that are not CLOSED_PLANAR", ds.get("SOPInstanceUID"), skipped)
    shapes = {uid: by_uid[uid].shape for by_image in contours.values() for uid in by_image}
    return ContourSet(
        reader=name,
        contours={label: {uid: tuple(points) for uid, points in by_image.items()}
                  for label, by_image in contours.items()},
        source_format="RTSTRUCT",
        shapes=shapes,
    )


def read_rtstruct(ds: Dataset, geometries: Sequence[ImageGeometry], **options: object) -> ReaderMasks:
    """Masks of every ROI of an RT Structure Set; myocardium is epicardium minus cavity where not drawn itself.

    Takes the options of :func:`read_rtstruct_contours` and raises what it raises.
    """
    return read_rtstruct_contours(ds, geometries, **options).to_masks()  # type: ignore[arg-type]
