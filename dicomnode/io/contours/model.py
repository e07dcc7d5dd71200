"""Plain data the contour readers return: image geometry, point contours in pixels, masks per reader.

Pixel coordinates follow the DICOM convention used throughout the project: ``x`` is the column index, ``y`` the
row index, and the centre of the top-left pixel is (0, 0). A pixel belongs to a polygon when its centre lies inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from pydicom.dataset import Dataset
from skimage.draw import polygon2mask

from dicomnode.io.contours.errors import ContourFormatError


class Structure(str, Enum):
    """Labels the readers map contours and segments onto; other structures keep their own label."""

    MYOCARDIUM = "myocardium"
    CAVITY = "cavity"  # LV blood pool inside the endocardial border, papillary muscles included
    EPICARDIUM = "epicardium"  # everything inside the epicardial border


@dataclass(frozen=True)
class ImageGeometry:
    """Where one image (or one frame) lies in the patient coordinate system (LPS, mm).

    ``pixel_spacing_mm`` is (between rows, between columns), as DICOM PixelSpacing.
    """

    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]
    image_position_patient_mm: tuple[float, float, float]
    image_orientation_patient: tuple[float, float, float, float, float, float]
    sop_instance_uid: str
    frame_of_reference_uid: str | None
    slice_thickness_mm: float | None = None

    def __post_init__(self) -> None:
        if self.rows < 1 or self.columns < 1:
            raise ValueError(f"rows and columns must be positive, got ({self.rows}, {self.columns})")
        if min(self.pixel_spacing_mm) <= 0:
            raise ValueError(f"pixel_spacing_mm must be positive, got {self.pixel_spacing_mm}")

    @classmethod
    def from_dataset(cls, ds: Dataset, frame_index: int = 0) -> ImageGeometry:
        """Geometry of a single-frame image, or of frame ``frame_index`` of an enhanced multi-frame image.

        Raises
        ------
        ContourFormatError
            If the position, orientation or spacing is missing.
        """
        spacing = ds.get("PixelSpacing")
        position = ds.get("ImagePositionPatient")
        orientation = ds.get("ImageOrientationPatient")
        thickness = ds.get("SliceThickness")
        groups = [ds.SharedFunctionalGroupsSequence[0]] if "SharedFunctionalGroupsSequence" in ds else []
        if "PerFrameFunctionalGroupsSequence" in ds:
            groups.append(ds.PerFrameFunctionalGroupsSequence[frame_index])
        for group in groups:
            if "PixelMeasuresSequence" in group:
                measures = group.PixelMeasuresSequence[0]
                spacing = measures.get("PixelSpacing", spacing)
                thickness = measures.get("SliceThickness", thickness)
            if "PlanePositionSequence" in group:
                position = group.PlanePositionSequence[0].get("ImagePositionPatient", position)
            if "PlaneOrientationSequence" in group:
                orientation = group.PlaneOrientationSequence[0].get("ImageOrientationPatient", orientation)
        if not spacing or not position or not orientation:
            raise ContourFormatError(
                f"image {ds.get('SOPInstanceUID', '?')} lacks PixelSpacing, ImagePositionPatient or "
                "ImageOrientationPatient; expected all three to place contours on it"
            )
        return cls(
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            pixel_spacing_mm=(float(spacing[0]), float(spacing[1])),
            image_position_patient_mm=tuple(float(v) for v in position),  # type: ignore[arg-type]
            image_orientation_patient=tuple(float(v) for v in orientation),  # type: ignore[arg-type]
            sop_instance_uid=str(ds.SOPInstanceUID),
            frame_of_reference_uid=str(ds.FrameOfReferenceUID) if "FrameOfReferenceUID" in ds else None,
            slice_thickness_mm=float(thickness) if thickness not in (None, "") else None,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.columns)

    @property
    def row_direction(self) -> np.ndarray:
        """Unit vector along increasing column index."""
        return np.asarray(self.image_orientation_patient[:3], dtype=np.float64)

    @property
    def column_direction(self) -> np.ndarray:
        """Unit vector along increasing row index."""
        return np.asarray(self.image_orientation_patient[3:], dtype=np.float64)

    @property
    def normal(self) -> np.ndarray:
        normal = np.cross(self.row_direction, self.column_direction)
        return normal / np.linalg.norm(normal)

    @property
    def plane_tolerance_mm(self) -> float:
        """Half a slice thickness, or one pixel when the thickness is unknown."""
        if self.slice_thickness_mm:
            return 0.5 * self.slice_thickness_mm
        return max(self.pixel_spacing_mm)

    def pixel_to_patient(self, points_px: np.ndarray) -> np.ndarray:
        """(N, 2) pixel (x, y) points to (N, 3) patient coordinates in mm."""
        points = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
        row_spacing_mm, column_spacing_mm = self.pixel_spacing_mm
        origin = np.asarray(self.image_position_patient_mm, dtype=np.float64)
        return (origin + points[:, :1] * column_spacing_mm * self.row_direction
                + points[:, 1:2] * row_spacing_mm * self.column_direction)

    def patient_to_pixel(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) patient points (mm) projected onto the image plane, as (N, 2) pixel (x, y).

        A least-squares inverse of :meth:`pixel_to_patient`, exact even when the stored direction cosines, rounded
        to a few decimals, are not quite orthogonal.
        """
        offsets = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3) - np.asarray(self.image_position_patient_mm)
        row_spacing_mm, column_spacing_mm = self.pixel_spacing_mm
        steps = np.stack([self.row_direction * column_spacing_mm, self.column_direction * row_spacing_mm], axis=1)
        return offsets @ np.linalg.pinv(steps).T

    def distance_from_plane_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """Signed distance (mm) of (N, 3) patient points from the image plane."""
        offsets = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3) - np.asarray(self.image_position_patient_mm)
        return offsets @ self.normal

    def contains_points(self, points_mm: np.ndarray) -> bool:
        """Whether every point lies within :attr:`plane_tolerance_mm` of the image plane."""
        distances = self.distance_from_plane_mm(points_mm)
        return bool(distances.size) and bool(np.all(np.abs(distances) <= self.plane_tolerance_mm))

    def same_orientation(self, orientation: tuple[float, ...] | np.ndarray, tolerance: float = 1e-3) -> bool:
        return bool(np.allclose(np.asarray(orientation, dtype=np.float64), self.image_orientation_patient,
                                atol=tolerance))


def polygon_mask(shape: tuple[int, int], points_px: np.ndarray) -> np.ndarray:
    """Pixels whose centres lie inside a closed polygon of (x, y) points."""
    points = np.asarray(points_px, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 3:
        raise ContourFormatError(f"a closed contour needs (N >= 3, 2) points, got shape {points.shape}")
    return polygon2mask(shape, points[:, ::-1])


@dataclass(frozen=True)
class ReaderMasks:
    """One reader's masks: ``masks[label][sop_instance_uid]`` is a (rows, columns) bool array on that image."""

    reader: str
    masks: dict[str, dict[str, np.ndarray]]
    source_format: str

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(sorted({uid for by_image in self.masks.values() for uid in by_image}))

    def mask(self, label: str | Structure, sop_instance_uid: str) -> np.ndarray | None:
        """The mask of ``label`` on one image, or None when the reader drew none there."""
        key = label.value if isinstance(label, Structure) else label
        return self.masks.get(key, {}).get(sop_instance_uid)


@dataclass(frozen=True)
class ContourSet:
    """One reader's closed point contours: ``contours[label][sop_instance_uid]`` is a tuple of (N, 2) (x, y)."""

    reader: str
    contours: dict[str, dict[str, tuple[np.ndarray, ...]]]
    source_format: str
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (rows, columns) per SOP Instance UID

    def to_masks(self) -> ReaderMasks:
        """Rasterise every contour; several contours of one label on one image are joined.

        The myocardium is derived as epicardium minus cavity on images where it was not drawn itself.

        Raises
        ------
        ContourFormatError
            If an image's shape is unknown or a contour has fewer than three points.
        """
        masks: dict[str, dict[str, np.ndarray]] = {}
        for label, by_image in self.contours.items():
            for uid, polygons in by_image.items():
                if uid not in self.shapes:
                    raise ContourFormatError(f"no image shape known for {uid}; expected one in shapes")
                mask = np.zeros(self.shapes[uid], dtype=bool)
                for polygon in polygons:
                    mask |= polygon_mask(self.shapes[uid], polygon)
                masks.setdefault(label, {})[uid] = mask
        return ReaderMasks(self.reader, derive_myocardium(masks), self.source_format)


def derive_myocardium(masks: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Add myocardium = epicardium minus cavity on images that have both but no myocardium of their own."""
    result = {label: dict(by_image) for label, by_image in masks.items()}
    epi = result.get(Structure.EPICARDIUM.value, {})
    cavity = result.get(Structure.CAVITY.value, {})
    myocardium = result.setdefault(Structure.MYOCARDIUM.value, {})
    for uid, epi_mask in epi.items():
        if uid not in myocardium and uid in cavity:
            myocardium[uid] = epi_mask & ~cavity[uid]
    if not myocardium:
        del result[Structure.MYOCARDIUM.value]
    return result


def _normalise(label: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in label.lower()).split())


# Segment and ROI labels (compared lower-case, punctuation as spaces) and property type codes the readers accept.
LABEL_STRUCTURES: dict[str, Structure] = {
    **dict.fromkeys(
        ("myocardium", "myo", "lv myocardium", "lv myo", "left ventricular myocardium", "left ventricle myocardium",
         "lv wall"), Structure.MYOCARDIUM),
    **dict.fromkeys(
        ("cavity", "lv cavity", "left ventricle cavity", "left ventricular cavity", "lv blood pool", "blood pool",
         "lv bloodpool", "endocardium", "lv endocardium", "endo", "lv endo", "left ventricle", "lv"),
        Structure.CAVITY),
    **dict.fromkeys(("epicardium", "lv epicardium", "epi", "lv epi"), Structure.EPICARDIUM),
}
CODE_STRUCTURES: dict[tuple[str, str], Structure] = {
    ("SCT", "74281007"): Structure.MYOCARDIUM,  # Myocardium structure
    ("SCT", "49848007"): Structure.MYOCARDIUM,  # Left Ventricle Myocardium (PS3.16 CID 12305; the node's own SEG)
    ("SRT", "T-32620"): Structure.MYOCARDIUM,  # Left Ventricle Myocardium, legacy SNOMED RT (T-32000 is the heart)
    ("SCT", "87878005"): Structure.CAVITY,  # Left ventricle
    ("SRT", "T-32600"): Structure.CAVITY,  # Left ventricle, legacy SNOMED RT
}


def structure_label(label: str, code: tuple[str, str] | None = None) -> str:
    """The :class:`Structure` value a segment or ROI stands for, else its own label unchanged.

    The label is looked up first in :data:`LABEL_STRUCTURES`, then the (scheme, value) code in
    :data:`CODE_STRUCTURES`.
    """
    structure = LABEL_STRUCTURES.get(_normalise(label))
    if structure is None and code is not None:
        structure = CODE_STRUCTURES.get((code[0].upper(), code[1]))
    return structure.value if structure is not None else label
