"""The Sunnybrook Cardiac Data: real cine short-axis images with expert contours, read without the node's readers.

Folder layout (as in ``shared/data/sunnybrook``): ``link.csv`` maps each DICOM folder ``dicoms/<patient_id>/`` to
its contour folder ``contourfiles/<original_id>/``; contour files
``{i,o}-contours/IM-0001-NNNN-{i,o}contour-manual.txt`` hold "x y" pixel points of the endocardium (``i``, the
cavity with its papillary muscles) and the epicardium (``o``) drawn on the image whose InstanceNumber is NNNN
(``NNNN.dcm``).

Two uses in the phantom: the expert contours are the shape templates of phantom v2's left ventricle
(:func:`shape_templates`, shipped as :mod:`phantom.sunnybrook_shapes`), and the images with their contours are the
real reference of the realism comparison (:mod:`phantom.realism`).

The phantom must not import the node (``dicomnode``), hence this small reader of its own. Patient SC-HF-I-6's
epicardial contours do not enclose its endocardial ones (drawn on another frame or shifted); its epicardium is
never used (:data:`DISPLACED_EPICARDIUM`).

Source: Radau P, Lu Y, Connelly K, et al. Evaluation framework for algorithms segmenting short axis cardiac MRI.
The MIDAS Journal - Cardiac MR Left Ventricle Segmentation Challenge, 2009. Licence CC0.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

LOGGER = logging.getLogger(__name__)

#: Patients whose epicardial contours must not be used (they do not enclose the endocardial ones).
DISPLACED_EPICARDIUM = frozenset({"SC-HF-I-6"})
CONTOUR_NAME = re.compile(r"IM-(?P<series>\d+)-(?P<instance>\d+)-(?P<border>[io])contour-(?:manual|auto)\.txt$")
#: Radii of a shape template are sampled at these display angles (deg): counter-clockwise on the screen from the
#: patient's left (lateral wall), 90 deg anterior, as in :mod:`phantom.anatomy`.
N_TEMPLATE_ANGLES = 72
TEMPLATE_ANGLES_DEG = np.arange(N_TEMPLATE_ANGLES) * (360.0 / N_TEMPLATE_ANGLES)
# Direction of the image's "down" in the phantom's convention: posterior-inferior (LPS), see make_heart_geometry.
_TOWARDS_DIAPHRAGM = np.array([0.0, 0.45, -0.9]) / np.linalg.norm([0.0, 0.45, -0.9])


class SunnybrookError(ValueError):
    """A Sunnybrook folder or contour file that does not follow the layout above."""


@dataclass(frozen=True)
class SunnybrookSlice:
    """One image with its expert contours; points are (x, y) pixel coordinates of the image."""

    patient: str  # the original id, e.g. "SC-HF-I-1"
    instance_number: int
    pixels: np.ndarray  # (rows, columns) float64
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns)
    image_orientation_patient: tuple[float, float, float, float, float, float]
    slice_location_mm: float
    endo_px: np.ndarray  # (N, 2)
    epi_px: np.ndarray | None  # None where not drawn or not usable (DISPLACED_EPICARDIUM)
    diastolic: bool  # the experts drew an epicardium on this image (end-diastole), usable or not

    @property
    def has_epicardium(self) -> bool:
        return self.epi_px is not None


def parse_point_list(text: str) -> np.ndarray:
    """(N, 2) float (x, y) points from "x y" lines (spaces, tabs or a comma between); blank and # lines skipped.

    Raises
    ------
    SunnybrookError
        If a line does not hold two numbers or fewer than three points remain.
    """
    points = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.replace(",", " ").split()
        try:
            if len(fields) != 2:
                raise ValueError(len(fields))
            points.append((float(fields[0]), float(fields[1])))
        except ValueError:
            raise SunnybrookError(f"line {number} {stripped!r} is not two numbers 'x y'") from None
    if len(points) < 3:
        raise SunnybrookError(f"a closed contour needs at least 3 points, got {len(points)}")
    return np.asarray(points, dtype=np.float64)


def read_point_list(path: Path | str) -> np.ndarray:
    """(N, 2) (x, y) pixel points of a point-list file; raises as :func:`parse_point_list`."""
    return parse_point_list(Path(path).read_text(encoding="ascii", errors="replace"))


def load_sunnybrook(folder: Path | str) -> list[SunnybrookSlice]:
    """Every image of the folder that has an endocardial contour, with its contours, in patient then instance order.

    Raises
    ------
    SunnybrookError
        If ``link.csv`` is missing, a contour file name does not follow the pattern, or a contour names an image
        that is not there.
    """
    root = Path(folder)
    link = root / "link.csv"
    if not link.is_file():
        raise SunnybrookError(f"{root} has no link.csv (expected the Sunnybrook layout: dicoms/, contourfiles/)")
    with link.open(encoding="utf-8") as handle:
        pairs = [(row["patient_id"], row["original_id"]) for row in csv.DictReader(handle)]
    slices: list[SunnybrookSlice] = []
    for patient_id, original_id in pairs:
        image_folder, contour_folder = root / "dicoms" / patient_id, root / "contourfiles" / original_id
        if not image_folder.is_dir() or not contour_folder.is_dir():
            LOGGER.warning("Sunnybrook patient %s is not complete here; passed over", original_id)
            continue
        borders: dict[int, dict[str, np.ndarray]] = {}
        for path in sorted(contour_folder.glob("*-contours/*.txt")):
            match = CONTOUR_NAME.search(path.name)
            if match is None:
                raise SunnybrookError(f"{path.name} does not match {CONTOUR_NAME.pattern}")
            borders.setdefault(int(match["instance"]), {})[match["border"]] = read_point_list(path)
        for instance, found in sorted(borders.items()):
            if "i" not in found:
                continue
            path = image_folder / f"{instance}.dcm"
            if not path.is_file():
                raise SunnybrookError(f"contour of Instance Number {instance} names no image ({path} is missing)")
            with warnings.catch_warnings():  # the images' UIDs have zero-padded components
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
                pixels = ds.pixel_array.astype(np.float64)
            epi = found.get("o") if original_id not in DISPLACED_EPICARDIUM else None
            row_spacing, column_spacing = (float(value) for value in ds.PixelSpacing)
            orientation = tuple(float(value) for value in ds.ImageOrientationPatient)
            slices.append(SunnybrookSlice(
                patient=original_id,
                instance_number=instance,
                pixels=pixels,
                pixel_spacing_mm=(row_spacing, column_spacing),
                image_orientation_patient=orientation,  # type: ignore[arg-type]
                slice_location_mm=float(ds.get("SliceLocation", 0.0)),
                endo_px=found["i"],
                epi_px=epi,
                diastolic="o" in found,
            ))
    if not slices:
        raise SunnybrookError(f"{root} holds no image with an endocardial contour")
    return slices


def canonical_axes(image_orientation_patient: tuple[float, ...]) -> np.ndarray:
    """2 x 2 matrix from in-plane mm along (row, column) directions to the phantom's (u, v) mm.

    ``v`` points down the phantom's image (posterior-inferior projected onto the plane), ``u`` to the patient's
    left within the plane, as :func:`phantom.anatomy.make_heart_geometry` orients its slices; the matrix is a
    rotation, or a rotation with a flip when the image is viewed from the other side.
    """
    values = np.asarray(image_orientation_patient, dtype=np.float64)
    row, column = values[:3], values[3:]
    down = np.array([np.dot(_TOWARDS_DIAPHRAGM, row), np.dot(_TOWARDS_DIAPHRAGM, column)])
    down /= np.linalg.norm(down)
    left = np.array([row[0], column[0]])  # the patient's left (+x, LPS) in the plane
    left -= np.dot(left, down) * down
    left /= np.linalg.norm(left)
    return np.stack([left, down])


def to_canonical_mm(points_px: np.ndarray, image: SunnybrookSlice, centre_px: np.ndarray) -> np.ndarray:
    """(N, 2) (u, v) mm of pixel points relative to ``centre_px`` in the phantom's orientation."""
    row_spacing, column_spacing = image.pixel_spacing_mm
    offsets = (np.asarray(points_px, dtype=np.float64) - centre_px) * [column_spacing, row_spacing]
    return offsets @ canonical_axes(image.image_orientation_patient).T


def polygon_centroid(points: np.ndarray) -> np.ndarray:
    """Area centroid of a closed polygon of (x, y) points."""
    x, y = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2.0
    if abs(area) < 1e-9:
        return points.mean(axis=0)
    return np.array([((x + x1) * cross).sum(), ((y + y1) * cross).sum()]) / (6.0 * area)


def polar_radii(points_uv_mm: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Radius (mm) of a closed contour around the origin at display angles (``theta = atan2(-v, u)``).

    Each ray from the origin is intersected with every polygon edge and the farthest crossing is kept, so a
    contour that is not quite star-shaped around the origin still gives its outer envelope.
    """
    points = np.asarray(points_uv_mm, dtype=np.float64)
    start, end = points, np.roll(points, -1, axis=0)
    rad = np.radians(np.asarray(angles_deg, dtype=np.float64))
    direction = np.stack([np.cos(rad), -np.sin(rad)], axis=1)  # (A, 2) in (u, v)
    edge = end - start  # (E, 2)
    # Solve t * d = start + s * edge for t >= 0, 0 <= s <= 1, for every ray and edge.
    denominator = direction[:, None, 0] * edge[None, :, 1] - direction[:, None, 1] * edge[None, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (start[None, :, 0] * edge[None, :, 1] - start[None, :, 1] * edge[None, :, 0]) / denominator
        s = (start[None, :, 0] * direction[:, None, 1] - start[None, :, 1] * direction[:, None, 0]) / denominator
    hit = np.isfinite(t) & (t >= 0) & (s >= -1e-9) & (s <= 1 + 1e-9)
    radii = np.where(hit, t, -np.inf).max(axis=1)
    if not np.all(np.isfinite(radii)):
        raise SunnybrookError("the contour does not surround its centre")
    return radii


@dataclass(frozen=True)
class ShapeTemplate:
    """An expert's LV borders in polar form: radii (mm) at :data:`TEMPLATE_ANGLES_DEG` around the cavity centroid,
    in the phantom's orientation (anterior up, septum at about 180 deg)."""

    patient: str
    instance_number: int
    position: float  # 0 at the patient's most basal contoured slice, 1 at the most apical
    diastolic: bool  # drawn on an end-diastolic frame (the frames with an epicardial contour)
    endo_mm: np.ndarray
    epi_mm: np.ndarray | None  # None where no usable epicardium was drawn

    @property
    def has_epicardium(self) -> bool:
        return self.epi_mm is not None


def template_of(image: SunnybrookSlice, position: float) -> ShapeTemplate:
    """The polar shape template of one contoured image (raises :class:`SunnybrookError` as :func:`polar_radii`)."""
    centre = polygon_centroid(image.endo_px)
    endo = polar_radii(to_canonical_mm(image.endo_px, image, centre), TEMPLATE_ANGLES_DEG)
    epi = None
    if image.epi_px is not None:
        epi = polar_radii(to_canonical_mm(image.epi_px, image, centre), TEMPLATE_ANGLES_DEG)
        if np.any(epi < endo + 1.0):  # touching borders: keep at least a millimetre of wall
            epi = np.maximum(epi, endo + 1.0)
    return ShapeTemplate(image.patient, image.instance_number, position, image.diastolic, endo, epi)


def shape_templates(slices: list[SunnybrookSlice]) -> list[ShapeTemplate]:
    """One template per contoured image, with its position from base (0) to apex (1) within its patient.

    The base is the end of the patient's slice stack with the larger cavities.
    """
    templates = []
    for patient in sorted({image.patient for image in slices}):
        own = [image for image in slices if image.patient == patient]
        locations = np.array([image.slice_location_mm for image in own])
        unique = np.unique(np.round(locations, 2))
        areas = np.array([_polygon_area(image.endo_px) * np.prod(image.pixel_spacing_mm) for image in own])
        rank = np.searchsorted(unique, np.round(locations, 2)) / max(len(unique) - 1, 1)
        if np.corrcoef(rank, areas)[0, 1] > 0:  # cavities grow with the location: the base is at the high end
            rank = 1.0 - rank
        for image, position in zip(own, rank, strict=True):
            templates.append(template_of(image, float(position)))
    return templates


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def shape_module_text(templates: list[ShapeTemplate]) -> str:
    """Python source of :mod:`phantom.sunnybrook_shapes` holding ``templates`` (radii in tenths of a mm)."""

    def radii(values: np.ndarray | None) -> str:
        if values is None:
            return "None"
        numbers = [str(int(round(10.0 * v))) for v in values]
        chunks = [" ".join(numbers[start : start + 24]) for start in range(0, len(numbers), 24)]
        quoted = [f'"{chunk} "' for chunk in chunks[:-1]] + [f'"{chunks[-1]}"']
        return "\n      ".join(quoted)

    lines = [
        '"""LV shape templates from the Sunnybrook Cardiac Data expert contours (CC0), generated by',
        "phantom.sunnybrook.shape_module_text from shared/data/sunnybrook; do not edit by hand.",
        "",
        "Each entry: (patient, instance number, position 0 base .. 1 apex, end-diastolic frame, endocardial radii,",
        "epicardial radii or None), radii in tenths of a mm at 72 display angles 0, 5, .. 355 deg around the cavity",
        'centroid, anterior up and septum at about 180 deg (phantom.anatomy conventions)."""',
        "",
        "TEMPLATES: tuple[tuple[str, int, float, bool, str, str | None], ...] = (",
    ]
    for template in templates:
        lines.append(f'    ("{template.patient}", {template.instance_number}, {template.position:.3f}, '
                     f"{template.diastolic},")
        lines.append(f"     ({radii(template.endo_mm)}),")
        lines.append(f"     ({radii(template.epi_mm)})),")
    lines.append(")")
    return "\n".join(lines) + "\n"


def shipped_templates() -> list[ShapeTemplate]:
    """The templates of :mod:`phantom.sunnybrook_shapes` (no access to the Sunnybrook folder needed)."""
    from phantom.sunnybrook_shapes import TEMPLATES

    def parse(text: str | None) -> np.ndarray | None:
        return None if text is None else np.array([float(v) for v in text.split()]) / 10.0

    out = []
    for patient, instance, position, diastolic, endo, epi in TEMPLATES:
        endo_mm = parse(endo)
        assert endo_mm is not None
        out.append(ShapeTemplate(patient, instance, position, diastolic, endo_mm, parse(epi)))
    return out
