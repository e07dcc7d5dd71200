"""Phantom v2 anatomy: a short-axis slice drawn from real LV contours, with the structures that real maps show.

What v1 (:mod:`phantom.anatomy`) draws as textbook shapes, v2 draws closer to real images (docs/phantom.md,
"Phantom v2"):

- the LV borders come from the Sunnybrook expert contours (:mod:`phantom.sunnybrook_shapes`, end-diastolic
  frames): one patient per study, the template nearest to each level, sized to the study's heart, rotated, stretched
  and smoothly deformed at random; the wall is the template's own thickness pattern (synthesised for the patient
  whose epicardium is unusable);
- papillary muscles (sometimes bifid) and trabeculae in the LV blood pool, an RV with a free wall of varying
  thickness, trabeculae and a moderator band; epicardial and pericardial fat;
- lungs with pulmonary vessels, the liver (with vessels) and spleen below the diaphragm, the descending aorta, a
  vertebral body, ribs, chest-wall muscle and subcutaneous fat inside an irregular body outline, air outside;
- the heart off the image centre (the operator centres the field of view on the chest);
- partial volume at every border: structures are labelled at pixel centres and at 4 x 4 sub-pixels in every pixel
  on or next to a border (or near a structure smaller than a pixel), the fractions averaged per pixel; the heart's
  borders are in addition spread over the slice thickness (through-plane partial volume, the borders tapering
  along the long axis);
- smooth texture of T1 and proton density within tissues, strong mottling of the lungs' (tiny) signal.

The result, :class:`RealisticSlice`, holds the v1 truth (:class:`phantom.model.SliceAnatomy`: labels at pixel
centres, 360-point contours, AHA segments, insertion points and PD-weighted property maps, so that readers,
sidecars and SEG/RTSTRUCT writers work unchanged) and, for the image formation (:mod:`phantom.acquisition_v2`),
the area fraction of every structure in every pixel and the structures' properties.

Labels: structures v1 has no label for take the nearest v1 label (:data:`STRUCTURE_LABEL`): subcutaneous fat,
ribs, the vertebra and the descending aorta are ``CHEST_WALL`` (other body tissue), pulmonary vessels ``LUNG``,
hepatic vessels ``LIVER``, RV trabeculae ``RV_WALL``; LV trabeculae are ``PAPILLARY`` (cavity for the readers, as
papillary muscles). The myocardium and cavity labels equal the rasterised truth contours exactly (a pixel belongs
to a polygon when its centre is inside, as the readers' masks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np
from scipy import ndimage
from skimage.draw import polygon2mask

from phantom.acquisition import CoilField, make_coil_field
from phantom.anatomy import (
    ANGLE_GRID_DEG,
    N_CONTOUR_POINTS,
    AnatomyError,
    Shape,
    pathology_weight,
    polar_to_px,
    segment_of_angle,
    slice_orientation,
)
from phantom.model import FieldStrength, HeartGeometry, SliceAnatomy, SliceGeometry, SliceLevel, Tissue
from phantom.sunnybrook import ShapeTemplate, shipped_templates
from phantom.tissue import Pathology, TissueProperties, apply_iron_to_organs, level_segments

LOGGER = logging.getLogger(__name__)

SUPERSAMPLING = 4
#: Display (DICOM) matrix and pixel spacing ranges drawn for v2 studies.
MATRIX_RANGE = (96, 256)
PIXEL_SPACING_RANGE_MM = (1.0, 2.5)
FOV_RANGE_MM = (260.0, 400.0)
ACQUIRED_READOUT_MM = (1.3, 2.5)
MAX_ACQUIRED_PHASE_MM = 2.8
#: Target position (0 base .. 1 apex) of each level in a template patient's contoured stack.
LEVEL_POSITION = {SliceLevel.BASAL: 0.15, SliceLevel.MID: 0.5, SliceLevel.APICAL: 0.85}
MIN_WALL_MM = 4.0
_LEVEL_RADIUS = {SliceLevel.BASAL: 1.0, SliceLevel.MID: 0.9, SliceLevel.APICAL: 0.62}  # as v1
MAX_WALL_MM = 15.0
_TEMPLATE_ORDERS = 12  # Fourier orders kept of a template's radii (the 72 samples hold up to 35)


class Structure(IntEnum):
    """What phantom v2 draws; :data:`STRUCTURE_LABEL` gives each its v1 label."""

    AIR = 0
    LUNG = 1
    PULMONARY_VESSEL = 2
    SUBCUTANEOUS_FAT = 3
    CHEST_MUSCLE = 4
    BONE = 5
    MARROW = 6
    LIVER = 7
    HEPATIC_VESSEL = 8
    SPLEEN = 9
    AORTA = 10
    EPICARDIAL_FAT = 11
    RV_WALL = 12
    RV_BLOOD = 13
    RV_TRABECULA = 14
    MYOCARDIUM = 15
    LV_BLOOD = 16
    PAPILLARY = 17  # papillary muscles and LV trabeculae


STRUCTURE_LABEL: dict[Structure, Tissue] = {
    Structure.AIR: Tissue.BACKGROUND,
    Structure.LUNG: Tissue.LUNG,
    Structure.PULMONARY_VESSEL: Tissue.LUNG,
    Structure.SUBCUTANEOUS_FAT: Tissue.CHEST_WALL,
    Structure.CHEST_MUSCLE: Tissue.CHEST_WALL,
    Structure.BONE: Tissue.CHEST_WALL,
    Structure.MARROW: Tissue.CHEST_WALL,
    Structure.LIVER: Tissue.LIVER,
    Structure.HEPATIC_VESSEL: Tissue.LIVER,
    Structure.SPLEEN: Tissue.SPLEEN,
    Structure.AORTA: Tissue.CHEST_WALL,
    Structure.EPICARDIAL_FAT: Tissue.EPICARDIAL_FAT,
    Structure.RV_WALL: Tissue.RV_WALL,
    Structure.RV_BLOOD: Tissue.RV_BLOOD,
    Structure.RV_TRABECULA: Tissue.RV_WALL,
    Structure.MYOCARDIUM: Tissue.MYOCARDIUM,
    Structure.LV_BLOOD: Tissue.LV_BLOOD,
    Structure.PAPILLARY: Tissue.PAPILLARY,
}
_LABEL_LUT = np.array([STRUCTURE_LABEL[s] for s in Structure], dtype=np.uint8)
_HEART = (Structure.EPICARDIAL_FAT, Structure.RV_WALL, Structure.RV_BLOOD, Structure.RV_TRABECULA,
          Structure.MYOCARDIUM, Structure.LV_BLOOD, Structure.PAPILLARY)
# Texture amplitudes per structure: relative SD of T1 (smooth field) and of proton density (smooth, fine field).
_T1_TEXTURE = {Structure.MYOCARDIUM: 0.015, Structure.PAPILLARY: 0.015, Structure.RV_WALL: 0.015,
               Structure.LV_BLOOD: 0.02, Structure.RV_BLOOD: 0.025, Structure.LIVER: 0.03, Structure.SPLEEN: 0.03,
               Structure.CHEST_MUSCLE: 0.03, Structure.SUBCUTANEOUS_FAT: 0.02, Structure.MARROW: 0.05}
_PD_TEXTURE = {Structure.MYOCARDIUM: 0.03, Structure.LV_BLOOD: 0.03, Structure.RV_BLOOD: 0.04,
               Structure.LIVER: 0.05, Structure.SPLEEN: 0.05, Structure.CHEST_MUSCLE: 0.06,
               Structure.SUBCUTANEOUS_FAT: 0.05, Structure.MARROW: 0.1}
LUNG_PD_MOTTLING = 0.5  # relative SD of the lung's (apparent) proton density, fine texture


@dataclass(frozen=True)
class ImagingV2:
    """How the scanner samples a v2 study: the acquired k-space inside the displayed (interpolated) matrix."""

    display_matrix: tuple[int, int]  # (rows, columns) of the DICOM images
    pixel_spacing_mm: float  # displayed (square) pixel spacing
    acquired_matrix: tuple[int, int]  # (rows, columns) of k-space lines/samples actually measured
    phase_encoding: str  # "COL" (phase encoded down the columns, i.e. along y) or "ROW" (along x), as DICOM
    kspace_filter: str  # "none", "hann" (mild raw-data filter) or "fermi"

    def __post_init__(self) -> None:
        rows, columns = self.display_matrix
        acquired_rows, acquired_columns = self.acquired_matrix
        if not (8 <= acquired_rows <= rows and 8 <= acquired_columns <= columns):
            raise AnatomyError(
                f"acquired_matrix must be 8 or more and within the display matrix {self.display_matrix}, "
                f"got {self.acquired_matrix}"
            )
        if self.phase_encoding not in ("ROW", "COL"):
            raise AnatomyError(f"phase_encoding must be ROW or COL, got {self.phase_encoding!r}")
        if self.kspace_filter not in ("none", "hann", "fermi"):
            raise AnatomyError(f"kspace_filter must be none, hann or fermi, got {self.kspace_filter!r}")

    @property
    def acquired_spacing_mm(self) -> tuple[float, float]:
        """Acquired resolution (mm) along rows (y) and columns (x)."""
        rows, columns = self.display_matrix
        return (self.pixel_spacing_mm * rows / self.acquired_matrix[0],
                self.pixel_spacing_mm * columns / self.acquired_matrix[1])

    def to_json(self) -> dict[str, object]:
        return {
            "display_matrix": list(self.display_matrix),
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "acquired_matrix": list(self.acquired_matrix),
            "acquired_spacing_mm": list(self.acquired_spacing_mm),
            "phase_encoding": self.phase_encoding,
            "kspace_filter": self.kspace_filter,
        }


def choose_imaging(rng: np.random.Generator, *, matrix: tuple[int, int] | None = None,
                   pixel_spacing_mm: float | None = None) -> ImagingV2:
    """Draw a display matrix (96-256) and spacing (1.0-2.5 mm), and what the scanner acquired within it.

    The readout is acquired at 1.3-2.5 mm, the phase-encoding direction at 65-100 % of that resolution (never
    coarser than 2.8 mm); the scanner interpolates by zero-filling k-space (none, 4/3 or two-fold, as scanners
    offer it), down to a displayed spacing of 1.0 mm at the finest. ``matrix`` and ``pixel_spacing_mm`` fix the
    display grid (the acquired matrix then follows the drawn interpolation and phase resolution).
    """
    readout_mm = float(rng.uniform(*ACQUIRED_READOUT_MM))
    factor = float(rng.choice([1.0, 4.0 / 3.0, 2.0], p=[0.35, 0.2, 0.45]))
    spacing = round(float(np.clip(readout_mm / factor, *PIXEL_SPACING_RANGE_MM)), 4)
    factor = readout_mm / spacing
    fov = float(rng.uniform(*FOV_RANGE_MM))
    rectangular = float(rng.uniform(0.75, 1.0))
    long_side = int(np.clip(round(fov / spacing), *MATRIX_RANGE))
    short_side = int(np.clip(round(long_side * rectangular), *MATRIX_RANGE))
    drawn = (short_side, long_side) if rng.random() < 0.6 else (long_side, short_side)
    phase_along_rows = rng.random() < 0.5
    phase_resolution = float(rng.uniform(max(0.65, readout_mm / MAX_ACQUIRED_PHASE_MM), 1.0))
    kspace_filter = str(rng.choice(["none", "hann", "fermi"], p=[0.3, 0.4, 0.3]))
    if matrix is not None:
        drawn = (int(matrix[0]), int(matrix[1]))
    if pixel_spacing_mm is not None:
        spacing = float(pixel_spacing_mm)
    rows, columns = drawn
    acquired = [max(8, int(round(rows / factor))), max(8, int(round(columns / factor)))]
    phase_axis = 0 if not phase_along_rows else 1  # "COL": phase encoding along y (rows index)
    acquired[phase_axis] = max(8, int(round(acquired[phase_axis] * phase_resolution)))
    return ImagingV2(
        display_matrix=(rows, columns),
        pixel_spacing_mm=spacing,
        acquired_matrix=(min(acquired[0], rows), min(acquired[1], columns)),
        phase_encoding="ROW" if phase_along_rows else "COL",
        kspace_filter=kspace_filter,
    )


@dataclass(frozen=True)
class StudyShape:
    """The choices of one study that every v2 slice shares: template patient, deformation, size."""

    patient: str
    basal_endo_radius_mm: float  # mean endocardial radius of the basal slice
    wall_scale: float
    rotation_deg: float
    stretch: float  # anisotropic scaling along stretch_angle_deg (and 1/stretch across)
    stretch_angle_deg: float
    harmonics: tuple[tuple[float, float], ...]  # (relative amplitude, phase) of orders 1-4
    lung_proton_density: float  # apparent: lung water times its T2* decay at the readout's echo time
    heart_offset_mm: tuple[float, float]  # FOV centre minus body centre
    seed: int


def make_study_shape(rng: np.random.Generator, geometry: HeartGeometry, field: FieldStrength) -> StudyShape:
    """Draw the study-wide v2 shape choices (template patient and its deformation)."""
    templates = _templates()
    patients = sorted({t.patient for t in templates})
    patient = patients[int(rng.integers(len(patients)))]
    # Hearts from normal to dilated (the template patients have heart failure; their cavities are large).
    target = geometry.basal_endo_radius_mm * float(rng.uniform(0.9, 1.2))
    harmonics = tuple((float(rng.normal(0.0, 0.025)), float(rng.uniform(0, 2 * np.pi))) for _ in range(4))
    lung_range = (0.03, 0.08) if field is FieldStrength.T1_5 else (0.015, 0.05)
    return StudyShape(
        patient=patient,
        basal_endo_radius_mm=target,
        wall_scale=float(rng.uniform(0.8, 1.1)),
        rotation_deg=float(rng.normal(0.0, 8.0)),
        stretch=float(rng.uniform(0.92, 1.08)),
        stretch_angle_deg=float(rng.uniform(0.0, 180.0)),
        harmonics=harmonics,
        lung_proton_density=float(rng.uniform(*lung_range)),
        heart_offset_mm=(float(rng.normal(0.0, 12.0)), float(rng.normal(0.0, 12.0))),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


@dataclass(frozen=True)
class _Blob:
    """An ellipse in mm around the LV centre: centre, semi-axes and the angle (rad) of ``a`` from +u."""

    u: float
    v: float
    a: float
    b: float
    angle: float
    structure: Structure
    inside: Structure | None = None  # only replaces this structure (None: whatever lies there)

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        du, dv = u - self.u, v - self.v
        c, s = np.cos(self.angle), np.sin(self.angle)
        along, across = du * c + dv * s, -du * s + dv * c
        return (along / self.a) ** 2 + (across / self.b) ** 2 <= 1.0

    @property
    def reach(self) -> float:
        return max(self.a, self.b)


@dataclass(frozen=True)
class _ShapeV2:
    """Everything that decides the structures of a v2 slice, in mm around the LV centre."""

    endo_mm: np.ndarray  # on ANGLE_GRID_DEG
    epi_mm: np.ndarray
    rv_depth_mm: np.ndarray
    rv_wall_mm: np.ndarray
    fat_mm: np.ndarray
    body_centre: tuple[float, float]
    body_radius_mm: np.ndarray  # on ANGLE_GRID_DEG around the body centre
    subcutaneous_mm: np.ndarray
    muscle_mm: np.ndarray
    diaphragm: tuple[float, float, float, float] | None  # dome top v, curvature, split u, tilt of the liver edge
    has_spleen: bool
    blobs: tuple[_Blob, ...]  # drawn in order, after the organs and before the heart (ribs, spine, aorta, vessels)
    heart_blobs: tuple[_Blob, ...]  # papillary muscles, trabeculae, RV trabeculae: inside the heart's cavities
    anterior_insertion_deg: float
    septal_span_deg: float
    template: tuple[str, int]
    through_plane_mm: float  # spread of the heart's borders over the slice thickness

    @staticmethod
    def at(values: np.ndarray, theta_deg: np.ndarray) -> np.ndarray:
        return np.interp(theta_deg, ANGLE_GRID_DEG, values, period=360.0)

    def as_v1(self) -> Shape:
        """The v1 shape of the heart, for the v1 pathology rule."""
        return Shape(
            endo_mm=self.endo_mm, epi_mm=self.epi_mm, rv_depth_mm=self.rv_depth_mm, rv_wall_mm=self.rv_wall_mm,
            fat_mm=self.fat_mm, papillary=(), body=(0.0, 0.0, 1.0, 1.0, 0.0), diaphragm=None,
            has_spleen=self.has_spleen, anterior_insertion_deg=self.anterior_insertion_deg,
            septal_span_deg=self.septal_span_deg,
        )


@dataclass(frozen=True)
class RealisticSlice:
    """A v2 slice: the v1-compatible truth and what the v2 image formation needs."""

    anatomy: SliceAnatomy
    fractions: np.ndarray  # (len(Structure), rows, columns) float32, summing to 1 per pixel
    properties: dict[Structure, TissueProperties]
    t1_factor: np.ndarray  # (rows, columns) float32: myocardial pathology multiplier of T1 (1 elsewhere)
    t2_factor: np.ndarray  # (rows, columns) float32: myocardial pathology multiplier of T2
    t1_texture: np.ndarray  # (rows, columns) float32, unit RMS smooth field
    pd_texture: np.ndarray  # (rows, columns) float32, unit RMS smooth field
    pd_fine_texture: np.ndarray  # (rows, columns) float32, unit RMS fine field (lung mottling)
    b1_relative: np.ndarray  # (rows, columns) float32, spatial variation of the transmit field (1 = nominal)
    coil: CoilField
    imaging: ImagingV2
    field_strength: FieldStrength
    template: tuple[str, int]  # Sunnybrook patient and instance number of the LV shape
    extras: dict[str, float] = field(default_factory=dict)  # drawn values worth recording (sidecar)

    @property
    def rv_mask(self) -> np.ndarray:
        return np.isin(self.anatomy.label_map, [Tissue.RV_BLOOD, Tissue.RV_WALL])


def structure_properties(properties: dict[Tissue, TissueProperties],
                         lung_proton_density: float) -> dict[Structure, TissueProperties]:
    """Relaxation times and proton density of every v2 structure from the study's v1 tissue properties.

    Structures v1 lacks: vessels and the aorta hold blood; subcutaneous fat is fat; bone (cortex) gives almost no
    signal; vertebral marrow is taken as T1 1.6 x fat, T2 50 ms, proton density 0.8 (approximate). The lung's
    proton density is apparent: its water (v1's 0.15) times the T2* decay at the bSSFP echo (T2* about 1-2 ms).
    """
    fat = properties[Tissue.EPICARDIAL_FAT]
    blood = properties[Tissue.LV_BLOOD]
    myocardium = properties[Tissue.MYOCARDIUM]
    lung = properties[Tissue.LUNG]
    return {
        Structure.AIR: properties[Tissue.BACKGROUND],
        Structure.LUNG: TissueProperties(lung.t1_ms, lung.t2_ms, lung_proton_density),
        Structure.PULMONARY_VESSEL: blood,
        Structure.SUBCUTANEOUS_FAT: fat,
        Structure.CHEST_MUSCLE: properties[Tissue.CHEST_WALL],
        Structure.BONE: TissueProperties(fat.t1_ms, 10.0, 0.05),
        Structure.MARROW: TissueProperties(1.6 * fat.t1_ms, 50.0, 0.8),
        Structure.LIVER: properties[Tissue.LIVER],
        Structure.HEPATIC_VESSEL: blood,
        Structure.SPLEEN: properties[Tissue.SPLEEN],
        Structure.AORTA: blood,
        Structure.EPICARDIAL_FAT: fat,
        Structure.RV_WALL: myocardium,
        Structure.RV_BLOOD: properties[Tissue.RV_BLOOD],
        Structure.RV_TRABECULA: myocardium,
        Structure.MYOCARDIUM: myocardium,
        Structure.LV_BLOOD: blood,
        Structure.PAPILLARY: properties[Tissue.PAPILLARY],
    }


def make_realistic_slice(
    rng: np.random.Generator,
    level: SliceLevel,
    field: FieldStrength,
    *,
    imaging: ImagingV2,
    geometry: HeartGeometry,
    study_shape: StudyShape,
    properties: dict[Tissue, TissueProperties],
    pathology: Pathology | None = None,
) -> RealisticSlice:
    """Build a v2 slice: truth, structure fractions, textures, transmit and receive fields.

    Parameters
    ----------
    rng
        Random generator of this slice.
    level
        Basal, mid or apical.
    field
        Field strength (the spread of the transmit field grows with it).
    imaging
        Display matrix and spacing (:func:`choose_imaging`).
    geometry, study_shape
        The study's geometry (:func:`phantom.anatomy.make_heart_geometry`) and v2 shape (:func:`make_study_shape`).
    properties
        The study's tissue properties (:func:`phantom.tissue.sample_tissue_properties`).
    pathology
        Change of myocardial T1/T2 in some segments of this level, or None.

    Raises
    ------
    AnatomyError
        If the matrix or spacing are out of range, or the pathology names segments of another level.
    """
    level = SliceLevel(level)
    rows, columns = imaging.display_matrix
    if not (64 <= rows <= 1024 and 64 <= columns <= 1024):
        raise AnatomyError(f"matrix must have 64-1024 rows and columns, got {imaging.display_matrix}")
    spacing = float(imaging.pixel_spacing_mm)
    if not 0.5 <= spacing <= 4.0:
        raise AnatomyError(f"pixel_spacing_mm must be in [0.5, 4.0], got {spacing}")
    if pathology is not None and not set(pathology.segments) <= set(level_segments(level)):
        raise AnatomyError(f"pathology segments {pathology.segments} are not all in the {level.value} slice")
    properties = apply_iron_to_organs(properties, pathology)
    structure_props = structure_properties(properties, study_shape.lung_proton_density)

    shape = _draw_shape(rng, level, geometry, study_shape, spacing)
    # The operator centres the field of view on the chest, so the heart lies off the image centre; keep the heart
    # (and a margin) inside the image.
    body_u, body_v = shape.body_centre
    centre_u = body_u + study_shape.heart_offset_mm[0] + float(rng.normal(0.0, 4.0))
    centre_v = body_v + study_shape.heart_offset_mm[1] + float(rng.normal(0.0, 4.0))
    half_u, half_v = (columns - 1) / 2.0 * spacing, (rows - 1) / 2.0 * spacing
    reach = float((shape.epi_mm + shape.rv_depth_mm + shape.rv_wall_mm).max()) + 12.0
    centre_u = float(np.clip(centre_u, reach - half_u, half_u - reach)) if half_u > reach else 0.0
    centre_v = float(np.clip(centre_v, reach - half_v, half_v - reach)) if half_v > reach else 0.0
    # LV centre in pixels: the image centre is at (centre_u, centre_v) mm from the LV centre.
    x_lv = (columns - 1) / 2.0 - centre_u / spacing
    y_lv = (rows - 1) / 2.0 - centre_v / spacing

    theta_contour = np.arange(N_CONTOUR_POINTS) * (360.0 / N_CONTOUR_POINTS)
    endo = polar_to_px(shape.at(shape.endo_mm, theta_contour), theta_contour, x_lv, y_lv, spacing)
    epi = polar_to_px(shape.at(shape.epi_mm, theta_contour), theta_contour, x_lv, y_lv, spacing)
    fractions, centre_structures = _fractions(shape, rows, columns, x_lv, y_lv, spacing, endo, epi)
    label_map = _LABEL_LUT[centre_structures]

    u_px = (np.arange(columns) - x_lv) * spacing
    v_px = (np.arange(rows) - y_lv) * spacing
    t1_texture = _smooth_field(rng, u_px, v_px, (40.0, 120.0))
    pd_texture = _smooth_field(rng, u_px, v_px, (25.0, 90.0))
    pd_fine = _smooth_field(rng, u_px, v_px, (6.0, 25.0), components=10)
    t1_factor = np.ones((rows, columns), dtype=np.float32)
    t2_factor = np.ones((rows, columns), dtype=np.float32)
    if pathology is not None:
        uu, vv = np.meshgrid(u_px, v_px)
        radius = np.hypot(uu, vv)
        theta = np.mod(np.degrees(np.arctan2(-vv, uu)), 360.0)
        wall = fractions[Structure.MYOCARDIUM] > 0
        weight = pathology_weight(shape.as_v1(), pathology, level, radius[wall], theta[wall])
        t1_factor[wall] = 1.0 + (pathology.t1_factor - 1.0) * weight
        t2_factor[wall] = 1.0 + (pathology.t2_factor - 1.0) * weight

    t1_map, t2_map, pd_map = _property_maps(fractions, structure_props, t1_factor, t2_factor, t1_texture,
                                            pd_texture, pd_fine)
    inferior_deg = shape.anterior_insertion_deg + shape.septal_span_deg
    insertion_angles = np.array([shape.anterior_insertion_deg, inferior_deg])
    insertions = polar_to_px(shape.at(shape.epi_mm, insertion_angles), insertion_angles, x_lv, y_lv, spacing)
    yy, xx = np.mgrid[0:rows, 0:columns]
    theta_px = np.degrees(np.arctan2(-(yy - y_lv), xx - x_lv))
    segments = segment_of_angle(theta_px, level, shape.anterior_insertion_deg, shape.septal_span_deg)
    aha_map = np.where(label_map == Tissue.MYOCARDIUM, segments, 0).astype(np.uint8)
    thickness_grid = shape.epi_mm - shape.endo_mm
    grid_segments = segment_of_angle(ANGLE_GRID_DEG, level, shape.anterior_insertion_deg, shape.septal_span_deg)
    wall_thickness = {int(s): float(thickness_grid[grid_segments == s].mean()) for s in level_segments(level)}

    row_dir, col_dir = slice_orientation(geometry, None)
    centre_mm = np.asarray(geometry.slice_centre_mm(level))
    position = centre_mm - x_lv * spacing * row_dir - y_lv * spacing * col_dir
    normal = np.cross(row_dir, col_dir)
    slice_geometry = SliceGeometry(
        rows=rows,
        columns=columns,
        pixel_spacing_mm=(spacing, spacing),
        slice_thickness_mm=geometry.slice_thickness_mm,
        image_orientation_patient=_as_tuple(row_dir) + _as_tuple(col_dir),
        image_position_patient_mm=_as_tuple(position),
        slice_location_mm=round(float(np.dot(centre_mm, normal)), 4),
        level=level,
    )
    anatomy = SliceAnatomy(
        geometry=slice_geometry,
        label_map=label_map,
        endo_contour_px=endo,
        epi_contour_px=epi,
        lv_centre_px=(float(x_lv), float(y_lv)),
        rv_insertion_px=(
            (float(insertions[0, 0]), float(insertions[0, 1])),
            (float(insertions[1, 0]), float(insertions[1, 1])),
        ),
        aha_segment_map=aha_map,
        t1_ms=t1_map,
        t2_ms=t2_map,
        proton_density=pd_map,
        wall_thickness_mm=wall_thickness,
    )
    coil = make_coil_field(anatomy, rng)
    b1_relative = _transmit_field(rng, field, u_px - centre_u, v_px - centre_v)
    LOGGER.debug("built v2 %s slice %dx%d at %.3f mm (template %s)", level.value, rows, columns, spacing,
                 shape.template)
    return RealisticSlice(
        anatomy=anatomy,
        fractions=fractions,
        properties=structure_props,
        t1_factor=t1_factor,
        t2_factor=t2_factor,
        t1_texture=t1_texture,
        pd_texture=pd_texture,
        pd_fine_texture=pd_fine,
        b1_relative=b1_relative,
        coil=coil,
        imaging=imaging,
        field_strength=FieldStrength(field),
        template=shape.template,
        extras={"through_plane_mm": shape.through_plane_mm, "lv_offset_from_image_centre_mm":
                float(np.hypot(centre_u, centre_v))},
    )


# --- shape ----------------------------------------------------------------------------------------------------


_TEMPLATE_CACHE: list[ShapeTemplate] = []


def _templates() -> list[ShapeTemplate]:
    """End-diastolic templates (those whose image had an epicardial contour, usable or not)."""
    if not _TEMPLATE_CACHE:
        _TEMPLATE_CACHE.extend(t for t in shipped_templates() if t.diastolic)
    return _TEMPLATE_CACHE


def _fourier_resample(values: np.ndarray, orders: int = _TEMPLATE_ORDERS) -> np.ndarray:
    """Periodic samples at TEMPLATE_ANGLES_DEG onto ANGLE_GRID_DEG, keeping Fourier orders up to ``orders``."""
    spectrum = np.fft.rfft(values)
    spectrum[orders + 1 :] = 0.0
    padded = np.zeros(ANGLE_GRID_DEG.size // 2 + 1, dtype=complex)
    padded[: spectrum.size] = spectrum
    return np.fft.irfft(padded, n=ANGLE_GRID_DEG.size) * (ANGLE_GRID_DEG.size / values.size)


def _transform_polar(radius: np.ndarray, rotation_deg: float, stretch: float, stretch_angle_deg: float,
                     harmonics: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Rotate, stretch and smoothly deform a closed radius function on ANGLE_GRID_DEG."""
    theta = np.radians(ANGLE_GRID_DEG)
    u = radius * np.cos(theta)
    v = -radius * np.sin(theta)
    angle = np.radians(stretch_angle_deg)
    c, s = np.cos(angle), np.sin(angle)
    along, across = u * c + v * s, -u * s + v * c
    along, across = along * stretch, across / stretch
    u, v = along * c - across * s, along * s + across * c
    rotation = np.radians(rotation_deg)
    u, v = u * np.cos(rotation) + v * np.sin(rotation), -u * np.sin(rotation) + v * np.cos(rotation)
    new_theta = np.mod(np.degrees(np.arctan2(-v, u)), 360.0)
    new_radius = np.hypot(u, v)
    order = np.argsort(new_theta)
    resampled = np.interp(ANGLE_GRID_DEG, new_theta[order], new_radius[order], period=360.0)
    factor = 1.0 + sum(a * np.cos((k + 1) * theta + p) for k, (a, p) in enumerate(harmonics))
    return np.asarray(resampled * factor)


def _draw_shape(rng: np.random.Generator, level: SliceLevel, geometry: HeartGeometry, study: StudyShape,
                spacing: float) -> _ShapeV2:
    templates = [t for t in _templates() if t.patient == study.patient]
    target = LEVEL_POSITION[level] + float(rng.normal(0.0, 0.05))
    template = min(templates, key=lambda t: abs(t.position - target))
    theta = np.radians(ANGLE_GRID_DEG)
    # The template's shape at the level's size (v1's sizes per level: the contoured stacks stop short of the apex).
    endo_template = _fourier_resample(template.endo_mm)
    radius = study.basal_endo_radius_mm * _LEVEL_RADIUS[level] * float(rng.uniform(0.96, 1.04))
    endo_template *= radius / float(endo_template.mean())
    if template.epi_mm is not None:
        thickness_template = np.clip(_fourier_resample(template.epi_mm - template.endo_mm, 6), 1.0, None)
        thickness_template /= thickness_template.mean()
    else:  # the patient's epicardium is unusable: a wall pattern as in v1 (harmonics 1-3)
        orders = np.arange(1, 4)
        wall_amplitude = rng.normal(0.0, 0.1, 3)
        phase = rng.uniform(0.0, 2 * np.pi, 3)
        thickness_template = 1.0 + (wall_amplitude[:, None] * np.cos(orders[:, None] * theta + phase[:, None])).sum(0)
    level_wall = {SliceLevel.BASAL: 1.0, SliceLevel.MID: 0.97, SliceLevel.APICAL: 0.8}[level]
    wall_mean = geometry.basal_wall_thickness_mm * study.wall_scale * level_wall * float(rng.uniform(0.93, 1.07))
    min_wall = max(MIN_WALL_MM, 1.8 * spacing)
    rotation = study.rotation_deg + float(rng.normal(0.0, 3.0))
    harmonics = tuple((a + float(rng.normal(0.0, 0.008)), p) for a, p in study.harmonics)
    smooth_endo = _transform_polar(endo_template, rotation, study.stretch, study.stretch_angle_deg, harmonics)
    smooth_endo *= float(rng.uniform(0.97, 1.03))
    smooth_endo = np.maximum(smooth_endo, 4.0)
    wall = np.clip(_transform_polar(thickness_template, rotation, 1.0, 0.0, ()) * wall_mean, min_wall, MAX_WALL_MM)
    # Fine irregularity of the endocardial border (trabeculation below the pixel scale), about 0.2-0.5 mm RMS.
    orders = np.arange(8, 25)
    rms = float(rng.uniform(0.2, 0.5))
    coefficients = rng.normal(0.0, rms * np.sqrt(2.0 / len(orders)), len(orders))
    phases = rng.uniform(0.0, 2 * np.pi, len(orders))
    rough = (coefficients[:, None] * np.cos(orders[:, None] * theta[None, :] + phases[:, None])).sum(0)
    rough = np.minimum(rough, wall - min_wall)
    endo = smooth_endo + rough
    epi = smooth_endo + wall

    # RV: a crescent over the septum between the insertion points, with a wavy free wall.
    scale = {SliceLevel.BASAL: 1.0, SliceLevel.MID: 0.8, SliceLevel.APICAL: 0.4}[level]
    anterior_deg = geometry.anterior_insertion_deg + float(rng.normal(0.0, 4.0))
    span_deg = geometry.septal_span_deg + float(rng.normal(0.0, 4.0))
    position = np.mod(ANGLE_GRID_DEG - anterior_deg, 360.0) / span_deg
    in_span = position < 1.0
    rv_present = level is not SliceLevel.APICAL or rng.random() < 0.8
    depth_max = geometry.rv_depth_mm * scale * float(rng.uniform(0.85, 1.2)) if rv_present else 0.0
    skew = float(rng.uniform(0.8, 1.3))
    clipped = np.clip(position, 0.0, 1.0)
    wave = 1.0 + sum(float(rng.normal(0.0, 0.06)) * np.sin((k + 1) * np.pi * clipped) for k in range(1, 4))
    rv_depth = np.where(in_span, depth_max * np.sin(np.pi * clipped**skew) ** 0.45 * wave, 0.0)
    rv_depth = np.maximum(rv_depth, 0.0)
    rv_wall_mean = float(rng.uniform(2.5, 5.0))
    rv_wall_pattern = rv_wall_mean * (1.0 + 0.25 * np.sin(2 * np.pi * clipped * float(rng.uniform(1, 3))
                                                          + float(rng.uniform(0, 2 * np.pi))))
    rv_wall = np.where(in_span, rv_wall_pattern * np.clip(rv_depth / 2.0, 0.0, 1.0), 0.0)

    # Epicardial fat at the insertion points (AV and interventricular grooves), a few patches elsewhere, and
    # pericardial fat over the RV free wall.
    fat = np.zeros_like(theta)
    level_fat = {SliceLevel.BASAL: 1.0, SliceLevel.MID: 0.75, SliceLevel.APICAL: 0.6}[level]
    centres = [anterior_deg, anterior_deg + span_deg] + [float(c) for c in rng.uniform(0, 360, int(rng.integers(1, 4)))]
    for index, centre in enumerate(centres):
        amplitude = (rng.uniform(3.0, 9.0) if index < 2 else rng.uniform(1.0, 4.0)) * level_fat
        width = rng.uniform(10.0, 30.0)
        distance = np.mod(ANGLE_GRID_DEG - centre + 180.0, 360.0) - 180.0
        fat += amplitude * np.exp(-0.5 * (distance / width) ** 2)
    fat += np.where(in_span, float(rng.uniform(0.0, 5.0)) * np.sin(np.pi * clipped) ** 2, 0.0)
    fat = np.where(fat > 0.8, fat, 0.0)

    heart_blobs = _heart_blobs(rng, level, smooth_endo, wall, epi, rv_depth, anterior_deg, span_deg)
    heart_outer = epi + rv_depth + rv_wall + fat
    body_centre, body_radius, subcutaneous, muscle = _place_body(rng, heart_outer)
    diaphragm = _place_diaphragm(rng, level, heart_outer)
    has_spleen = diaphragm is not None and level is not SliceLevel.APICAL and rng.random() < 0.4
    blobs = _body_blobs(rng, heart_outer, body_centre, body_radius, subcutaneous, muscle)
    slope = {SliceLevel.BASAL: (0.1, 0.35), SliceLevel.MID: (0.1, 0.3), SliceLevel.APICAL: (0.3, 0.7)}[level]
    through_plane = float(rng.uniform(*slope)) * geometry.slice_thickness_mm
    shape = _ShapeV2(
        endo_mm=endo,
        epi_mm=epi,
        rv_depth_mm=rv_depth,
        rv_wall_mm=rv_wall,
        fat_mm=fat,
        body_centre=body_centre,
        body_radius_mm=body_radius,
        subcutaneous_mm=subcutaneous,
        muscle_mm=muscle,
        diaphragm=diaphragm,
        has_spleen=has_spleen,
        blobs=(),
        heart_blobs=heart_blobs,
        anterior_insertion_deg=float(np.mod(anterior_deg, 360.0)),
        septal_span_deg=float(span_deg),
        template=(template.patient, template.instance_number),
        through_plane_mm=through_plane,
    )
    return _with_vessels(rng, shape, blobs)


def _heart_blobs(rng: np.random.Generator, level: SliceLevel, smooth_endo: np.ndarray, wall: np.ndarray,
                 epi: np.ndarray, rv_depth: np.ndarray, anterior_deg: float, span_deg: float) -> tuple[_Blob, ...]:
    """Papillary muscles and trabeculae in the LV, trabeculae and a moderator band in the RV."""
    blobs: list[_Blob] = []

    def wall_radius(angle_deg: float, radii: np.ndarray) -> float:
        return float(_ShapeV2.at(radii, np.array([np.mod(angle_deg, 360.0)]))[0])

    def place(angle_deg: float, distance: float, a: float, b: float, structure: Structure,
              inside: Structure, tangential: bool = True) -> None:
        rad = np.radians(angle_deg)
        u, v = distance * np.cos(rad), -distance * np.sin(rad)
        # The blob's long axis runs along the wall (tangential) or across it (radial).
        axis = -rad + (np.pi / 2 if tangential else 0.0)
        blobs.append(_Blob(float(u), float(v), float(a), float(b), float(axis), structure, inside))

    size = {SliceLevel.BASAL: 0.7, SliceLevel.MID: 1.0, SliceLevel.APICAL: 0.55}[level]
    present = {SliceLevel.BASAL: 0.85, SliceLevel.MID: 1.0, SliceLevel.APICAL: 0.5}[level]
    for angle in (anterior_deg - 80.0 + rng.normal(0, 10), anterior_deg + 170.0 + rng.normal(0, 10)):
        if rng.random() >= present:
            continue
        heads = 2 if rng.random() < 0.3 else 1
        for head in range(heads):
            offset = (head - (heads - 1) / 2.0) * rng.uniform(8.0, 14.0)
            a = size * rng.uniform(3.5, 6.5) / (1.3 if heads == 2 else 1.0)
            b = size * rng.uniform(2.5, 4.5) / (1.2 if heads == 2 else 1.0)
            gap = rng.uniform(-0.8, 1.5)  # < 0: merged with the wall; > 0: free in the blood pool
            distance = wall_radius(angle + offset, smooth_endo) - b - gap
            place(angle + offset, max(distance, 1.0), a, b, Structure.PAPILLARY, Structure.LV_BLOOD)
    n_trabeculae = int(rng.poisson({SliceLevel.BASAL: 3, SliceLevel.MID: 6, SliceLevel.APICAL: 10}[level]))
    for _ in range(n_trabeculae):
        angle = float(rng.uniform(0.0, 360.0))
        b = float(rng.uniform(0.6, 1.6))
        a = b * float(rng.uniform(1.0, 2.5))
        distance = wall_radius(angle, smooth_endo) - rng.uniform(0.2, 2.5) - 0.5 * a
        place(angle, max(distance, 1.0), a, b, Structure.PAPILLARY, Structure.LV_BLOOD, tangential=False)
    # RV trabeculae along the free wall, and a moderator band across the cavity at mid and apical levels.
    if rv_depth.max() > 6.0:
        for _ in range(int(rng.integers(3, 9))):
            angle = anterior_deg + span_deg * float(rng.uniform(0.15, 0.85))
            outer = wall_radius(angle, epi) + wall_radius(angle, rv_depth)
            b = float(rng.uniform(0.7, 1.8))
            a = b * float(rng.uniform(1.0, 2.2))
            place(angle, outer - rng.uniform(0.0, 2.0) - 0.5 * a, a, b, Structure.RV_TRABECULA,
                  Structure.RV_BLOOD, tangential=False)
        if level is not SliceLevel.BASAL and rng.random() < 0.6:
            angle = anterior_deg + span_deg * float(rng.uniform(0.5, 0.8))
            inner = wall_radius(angle, epi)
            depth = wall_radius(angle, rv_depth)
            place(angle, inner + depth / 2.0, depth / 2.0 + 1.0, float(rng.uniform(1.0, 2.0)),
                  Structure.RV_TRABECULA, Structure.RV_BLOOD, tangential=False)
    return tuple(blobs)


_BODY_ATTEMPTS = 20


def _place_body(rng: np.random.Generator,
                heart_outer_mm: np.ndarray) -> tuple[tuple[float, float], np.ndarray, np.ndarray, np.ndarray]:
    """Body outline (centre, radius per angle), subcutaneous fat and muscle thickness, with the heart in the thorax.

    Like v1, the body is moved down from the heart until the heart (plus a gap of 0-15 mm, usually lung) lies
    within the thorax; the anterior gap may vanish, where the RV touches the chest wall.
    """
    theta = np.radians(ANGLE_GRID_DEG)
    # A large heart may not fit a small body: draw another body (the first draw is kept when it fits).
    for _attempt in range(_BODY_ATTEMPTS):
        semi_u = rng.uniform(150.0, 185.0)
        semi_v = rng.uniform(100.0, 130.0)
        ellipse = 1.0 / np.sqrt((np.cos(theta) / semi_u) ** 2 + (np.sin(theta) / semi_v) ** 2)
        wobble = 1.0 + sum(rng.normal(0.0, 0.02) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
        body = ellipse * wobble
        # Subcutaneous fat: thicker at the front and sides; muscle (pectoral, intercostal, back) under it.
        subcutaneous = rng.uniform(5.0, 22.0) * (1.0 + 0.3 * np.sin(theta) + rng.normal(0.0, 0.1) * np.cos(2 * theta))
        subcutaneous = np.clip(subcutaneous, 3.0, 35.0)
        muscle = np.clip(rng.uniform(8.0, 16.0) * (1.0 - 0.3 * np.sin(theta)), 5.0, 25.0)
        thorax = body - subcutaneous - muscle
        centre_u = rng.uniform(-45.0, -15.0)
        gap = rng.uniform(0.0, 15.0)
        u = (heart_outer_mm + gap) * np.cos(theta)
        v = -(heart_outer_mm + gap) * np.sin(theta)
        for centre_v in np.linspace(0.0, 110.0, 221):
            du, dv = u - centre_u, v - centre_v
            angle = np.mod(np.degrees(np.arctan2(-dv, du)), 360.0)
            limit = np.interp(angle, ANGLE_GRID_DEG, thorax, period=360.0)
            if np.all(np.hypot(du, dv) <= limit):
                return (float(centre_u), float(centre_v)), body, subcutaneous, muscle
    raise AnatomyError("the heart does not fit in the body")


def _place_diaphragm(rng: np.random.Generator, level: SliceLevel,
                     heart_outer_mm: np.ndarray) -> tuple[float, float, float, float] | None:
    """Dome of the diaphragm below the heart (as v1): liver on the image left, spleen on the right."""
    probability = {SliceLevel.BASAL: 0.9, SliceLevel.MID: 0.7, SliceLevel.APICAL: 0.6}[level]
    if rng.random() >= probability:
        return None
    theta = np.radians(ANGLE_GRID_DEG)
    heart_bottom = float((-heart_outer_mm * np.sin(theta)).max())
    top = heart_bottom + rng.uniform(2.0, 12.0) + (0.0 if level is SliceLevel.BASAL else rng.uniform(0.0, 15.0))
    return (top, float(rng.uniform(0.004, 0.012)), float(rng.uniform(-10.0, 30.0)), float(rng.uniform(-0.3, 0.8)))


def _body_blobs(rng: np.random.Generator, heart_outer: np.ndarray, body_centre: tuple[float, float],
                body_radius: np.ndarray, subcutaneous: np.ndarray, muscle: np.ndarray) -> list[_Blob]:
    """Ribs in the chest wall, the vertebral body at the back and the descending aorta in front of it."""
    blobs: list[_Blob] = []
    bu, bv = body_centre

    def body_point(angle_deg: float, depth_mm: float) -> tuple[float, float]:
        radius = float(np.interp(np.mod(angle_deg, 360.0), ANGLE_GRID_DEG, body_radius, period=360.0)) - depth_mm
        rad = np.radians(angle_deg)
        return bu + radius * np.cos(rad), bv - radius * np.sin(rad)

    for _ in range(int(rng.integers(4, 9))):
        angle = float(rng.uniform(10.0, 170.0) if rng.random() < 0.7 else rng.uniform(190.0, 350.0))
        index = int(np.mod(angle, 360.0) / 360.0 * ANGLE_GRID_DEG.size) % ANGLE_GRID_DEG.size
        depth = float(subcutaneous[index] + muscle[index] * rng.uniform(0.4, 0.8))
        u, v = body_point(angle, depth)
        a, b = float(rng.uniform(4.0, 9.0)), float(rng.uniform(2.5, 4.5))
        axis = -np.radians(angle) + np.pi / 2
        blobs.append(_Blob(u, v, a, b, float(axis), Structure.BONE))
        blobs.append(_Blob(u, v, max(a - 1.5, 0.8), max(b - 1.5, 0.6), float(axis), Structure.MARROW))
    # Vertebral body: at the back of the thorax, below the heart.
    spine_depth = float(subcutaneous[3 * ANGLE_GRID_DEG.size // 4] + muscle[3 * ANGLE_GRID_DEG.size // 4])
    su, sv = body_point(270.0 + float(rng.normal(0.0, 5.0)), spine_depth + rng.uniform(5.0, 20.0))
    radius = float(rng.uniform(14.0, 20.0))
    blobs.append(_Blob(su, sv, radius, radius * 0.9, 0.0, Structure.BONE))
    blobs.append(_Blob(su, sv, radius - 2.0, radius * 0.9 - 2.0, 0.0, Structure.MARROW))
    # Descending aorta: in front of the spine and to the patient's left (image right), below the heart.
    radius_aorta = float(rng.uniform(9.0, 13.0))
    au = su + float(rng.uniform(10.0, 35.0))
    av = sv - radius - radius_aorta - float(rng.uniform(0.0, 8.0))
    heart_bottom = float(np.interp(np.mod(np.degrees(np.arctan2(-av, au)), 360.0), ANGLE_GRID_DEG, heart_outer,
                                   period=360.0))
    distance = float(np.hypot(au, av))
    if distance < heart_bottom + radius_aorta + 2.0:  # keep it out of the heart
        stretch = (heart_bottom + radius_aorta + 2.0) / max(distance, 1e-6)
        au, av = au * stretch, av * stretch
    blobs.append(_Blob(au, av, radius_aorta, radius_aorta, 0.0, Structure.AORTA))
    return blobs


def _with_vessels(rng: np.random.Generator, shape: _ShapeV2, blobs: list[_Blob]) -> _ShapeV2:
    """Add pulmonary vessels (in the lung) and hepatic vessels (in the liver) at random points of those organs."""
    draft = _replace_blobs(shape, tuple(blobs))
    body_u, body_v = shape.body_centre
    extent = float(shape.body_radius_mm.max())
    candidates_u = body_u + rng.uniform(-extent, extent, 600)
    candidates_v = body_v + rng.uniform(-extent, extent, 600)
    structures = _structures_at(draft, candidates_u, candidates_v)
    in_lung = np.flatnonzero(structures == Structure.LUNG)
    in_liver = np.flatnonzero(structures == Structure.LIVER)
    vessels = list(blobs)
    for index in in_lung[: int(rng.integers(15, 45))]:
        radius = float(rng.uniform(0.8, 3.5))
        vessels.append(_Blob(float(candidates_u[index]), float(candidates_v[index]), radius,
                             radius * float(rng.uniform(0.6, 1.0)), float(rng.uniform(0, np.pi)),
                             Structure.PULMONARY_VESSEL, Structure.LUNG))
    for index in in_liver[: int(rng.integers(2, 9))]:
        radius = float(rng.uniform(1.5, 5.0))
        vessels.append(_Blob(float(candidates_u[index]), float(candidates_v[index]), radius,
                             radius * float(rng.uniform(0.5, 1.0)), float(rng.uniform(0, np.pi)),
                             Structure.HEPATIC_VESSEL, Structure.LIVER))
    return _replace_blobs(shape, tuple(vessels))


def _replace_blobs(shape: _ShapeV2, blobs: tuple[_Blob, ...]) -> _ShapeV2:
    return replace(shape, blobs=blobs)


# --- rendering ------------------------------------------------------------------------------------------------


def _structures_at(shape: _ShapeV2, u: np.ndarray, v: np.ndarray, *, with_lv: bool = True) -> np.ndarray:
    """Structure at in-plane points (mm around the LV centre), drawn in order: body, organs, blobs, heart."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    out = np.full(u.shape, Structure.AIR, dtype=np.uint8)
    bu, bv = shape.body_centre
    du, dv = u - bu, v - bv
    body_angle = np.mod(np.degrees(np.arctan2(-dv, du)), 360.0)
    body_r = np.hypot(du, dv)
    around_body = _AngleSampler(body_angle)
    outline = around_body(shape.body_radius_mm)
    subcutaneous = around_body(shape.subcutaneous_mm)
    muscle = around_body(shape.muscle_mm)
    out[body_r <= outline] = Structure.SUBCUTANEOUS_FAT
    out[body_r <= outline - subcutaneous] = Structure.CHEST_MUSCLE
    thorax = body_r <= outline - subcutaneous - muscle
    out[thorax] = Structure.LUNG
    if shape.diaphragm is not None:
        top, curvature, split, tilt = shape.diaphragm
        below = thorax & (v > top + curvature * (u - split / 2.0) ** 2)
        # The liver's left edge slants and curves under the heart; the spleen lies beyond a gap.
        edge = split + tilt * (v - top) - 0.004 * (v - top) ** 2
        out[below & (u <= edge)] = Structure.LIVER
        if shape.has_spleen:
            out[below & (u > edge + 25.0)] = Structure.SPLEEN
    _draw_blobs(out, shape.blobs, u, v)

    radius = np.hypot(u, v)
    theta = np.mod(np.degrees(np.arctan2(-v, u)), 360.0)
    near = radius < float(shape.epi_mm.max()) + 70.0
    if not near.any():
        return out
    r = radius[near]
    around_lv = _AngleSampler(theta[near])
    e = around_lv(shape.epi_mm)
    rv_outer = e + around_lv(shape.rv_depth_mm)
    wall_outer = rv_outer + around_lv(shape.rv_wall_mm)
    fat_outer = wall_outer + around_lv(shape.fat_mm)
    sub = out[near]
    sub[r < fat_outer] = Structure.EPICARDIAL_FAT
    sub[(r < wall_outer) & (wall_outer > rv_outer)] = Structure.RV_WALL
    sub[(r < rv_outer) & (rv_outer > e)] = Structure.RV_BLOOD
    if with_lv:
        sub[r < e] = Structure.MYOCARDIUM
        sub[r < around_lv(shape.endo_mm)] = Structure.LV_BLOOD
    else:  # only outside the epicardium: what lies under the LV's edge
        sub[r < e] = Structure.EPICARDIAL_FAT
    _draw_blobs(sub, shape.heart_blobs, u[near], v[near])
    out[near] = sub
    return out


class _AngleSampler:
    """Linear interpolation of functions on ANGLE_GRID_DEG at fixed display angles (periodic), set up once."""

    def __init__(self, theta_deg: np.ndarray) -> None:
        position = np.asarray(theta_deg, dtype=np.float64) * (ANGLE_GRID_DEG.size / 360.0)
        floor = np.floor(position)
        self.fraction = position - floor
        self.lower = floor.astype(np.int64) % ANGLE_GRID_DEG.size
        self.upper = (self.lower + 1) % ANGLE_GRID_DEG.size

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return values[self.lower] * (1.0 - self.fraction) + values[self.upper] * self.fraction


def _draw_blobs(out: np.ndarray, blobs: tuple[_Blob, ...], u: np.ndarray, v: np.ndarray) -> None:
    """Paint ``blobs`` in order into ``out`` (same shape as ``u`` and ``v``), each within its bounding box."""
    if not blobs:
        return
    flat_u, flat_v, flat_out = u.ravel(), v.ravel(), out.reshape(-1)
    order = np.argsort(flat_u, kind="stable")
    sorted_u = flat_u[order]
    for blob in blobs:
        reach = blob.reach
        low, high = np.searchsorted(sorted_u, [blob.u - reach, blob.u + reach], side="left")
        index = order[low:high]
        index = index[np.abs(flat_v[index] - blob.v) <= reach]
        if index.size == 0:
            continue
        inside = blob.contains(flat_u[index], flat_v[index])
        if blob.inside is not None:
            inside &= flat_out[index] == blob.inside
        flat_out[index[inside]] = blob.structure


def _fractions(shape: _ShapeV2, rows: int, columns: int, x_lv: float, y_lv: float, spacing: float,
               endo_px: np.ndarray, epi_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area fraction of every structure per pixel, and the structure at each pixel centre (the truth's labels).

    Centre structures of the LV follow the rasterised contours exactly; pixels on or next to a border, and near
    structures smaller than a pixel, are averaged over SUPERSAMPLING x SUPERSAMPLING sub-pixels; the heart's
    fractions are then spread over the through-plane extent of its borders.
    """
    u_px = (np.arange(columns) - x_lv) * spacing
    v_px = (np.arange(rows) - y_lv) * spacing
    uu, vv = np.meshgrid(u_px, v_px)
    centre = _structures_at(shape, uu, vv)
    # The truth's LV: exactly the polygons that the readers rasterise.
    inside_epi = polygon2mask((rows, columns), epi_px[:, ::-1])
    inside_endo = polygon2mask((rows, columns), endo_px[:, ::-1])
    lv = np.isin(centre, [Structure.MYOCARDIUM, Structure.LV_BLOOD, Structure.PAPILLARY])
    stray = lv & ~inside_epi
    if stray.any():  # centres right on the epicardium that the polar border puts inside and the polygon outside
        centre[stray] = _structures_at(shape, uu[stray], vv[stray], with_lv=False)
    centre[inside_epi & ~inside_endo] = Structure.MYOCARDIUM
    cavity = inside_endo & (centre != Structure.PAPILLARY)
    centre[cavity] = Structure.LV_BLOOD

    n_structures = len(Structure)
    border = np.zeros((rows, columns), dtype=bool)
    horizontal = centre[:, 1:] != centre[:, :-1]
    vertical = centre[1:, :] != centre[:-1, :]
    border[:, 1:] |= horizontal
    border[:, :-1] |= horizontal
    border[1:, :] |= vertical
    border[:-1, :] |= vertical
    for blob in shape.blobs + shape.heart_blobs:  # small structures that no pixel centre may have caught
        if blob.reach < 2.0 * spacing:
            x = int(round(x_lv + blob.u / spacing))
            y = int(round(y_lv + blob.v / spacing))
            extent = int(np.ceil(blob.reach / spacing)) + 1
            border[max(y - extent, 0) : y + extent + 1, max(x - extent, 0) : x + extent + 1] = True
    border = ndimage.binary_dilation(border, iterations=1)

    fractions = np.zeros((n_structures, rows, columns), dtype=np.float32)
    plain = ~border
    rows_idx, cols_idx = np.nonzero(plain)
    fractions[centre[plain], rows_idx, cols_idx] = 1.0
    n = SUPERSAMPLING
    offsets = ((np.arange(n) + 0.5) / n - 0.5) * spacing
    sub_v, sub_u = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
    by, bx = np.nonzero(border)
    sub = _structures_at(shape, u_px[bx][:, None] + sub_u[None, :], v_px[by][:, None] + sub_v[None, :])
    flat = np.repeat(np.arange(by.size), n * n) * n_structures + sub.ravel()
    counts = np.bincount(flat, minlength=by.size * n_structures).reshape(by.size, n_structures).astype(np.float32)
    fractions[:, by, bx] = (counts / (n * n)).T

    # Through-plane partial volume: the heart's borders move along the slice thickness, so its structures blend
    # over about that distance; a Gaussian of the same spread (its FWHM) blends every structure near the heart
    # alike, which keeps the fractions summing to 1.
    sigma_px = shape.through_plane_mm / 2.355 / spacing
    if sigma_px > 0.2:
        heart = np.isin(centre, list(_HEART))
        reach = ndimage.binary_dilation(heart, iterations=max(2, int(np.ceil(3 * sigma_px)) + 1))
        weight = ndimage.gaussian_filter(reach.astype(np.float32), 1.0)
        ys, xs = np.nonzero(reach)
        y0, y1 = max(ys.min() - 4, 0), min(ys.max() + 5, rows)
        x0, x1 = max(xs.min() - 4, 0), min(xs.max() + 5, columns)
        window = fractions[:, y0:y1, x0:x1]
        blurred = ndimage.gaussian_filter(window, (0.0, sigma_px, sigma_px), mode="nearest")
        w = weight[y0:y1, x0:x1][None]
        fractions[:, y0:y1, x0:x1] = w * blurred + (1.0 - w) * window
    return fractions, centre


def _property_maps(fractions: np.ndarray, props: dict[Structure, TissueProperties], t1_factor: np.ndarray,
                   t2_factor: np.ndarray, t1_texture: np.ndarray, pd_texture: np.ndarray,
                   pd_fine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PD-weighted T1 and T2 and the mean proton density of every pixel (the truth maps)."""
    shape = fractions.shape[1:]
    weight_sum = np.full(shape, 1e-6)
    t1_sum = np.zeros(shape)
    t2_sum = np.zeros(shape)
    pd_sum = np.zeros(shape)
    for structure in Structure:
        fraction = fractions[structure]
        present = fraction > 0
        if not present.any():
            continue
        t1, t2, pd = structure_values(structure, props, t1_factor, t2_factor, t1_texture, pd_texture, pd_fine,
                                      present)
        weight = fraction[present] * pd
        pd_sum[present] += weight
        weight_sum[present] += weight
        t1_sum[present] += weight * t1
        t2_sum[present] += weight * t2
    air = props[Structure.AIR]
    t1_map = np.where(pd_sum > 0, t1_sum / weight_sum, air.t1_ms)
    t2_map = np.where(pd_sum > 0, t2_sum / weight_sum, air.t2_ms)
    return t1_map.astype(np.float32), t2_map.astype(np.float32), pd_sum.astype(np.float32)


def structure_values(structure: Structure, props: dict[Structure, TissueProperties], t1_factor: np.ndarray,
                     t2_factor: np.ndarray, t1_texture: np.ndarray, pd_texture: np.ndarray, pd_fine: np.ndarray,
                     where: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, T2 and proton density of ``structure`` at the pixels ``where`` selects (texture and pathology in)."""
    base = props[structure]
    t1 = base.t1_ms * (1.0 + _T1_TEXTURE.get(structure, 0.0) * t1_texture[where])
    t2 = np.full(t1.shape, base.t2_ms)
    if structure in (Structure.MYOCARDIUM,):
        t1 = t1 * t1_factor[where]
        t2 = t2 * t2_factor[where]
    if structure is Structure.LUNG:
        pd = base.proton_density * np.clip(1.0 + LUNG_PD_MOTTLING * pd_fine[where], 0.1, None)
    else:
        pd = base.proton_density * (1.0 + _PD_TEXTURE.get(structure, 0.0) * pd_texture[where])
    return t1, t2, pd


def _smooth_field(rng: np.random.Generator, u_mm: np.ndarray, v_mm: np.ndarray, wavelengths_mm: tuple[float, float],
                  *, components: int = 6) -> np.ndarray:
    """A smooth random field of unit RMS: a sum of plane waves with wavelengths in the given range."""
    field = np.zeros((v_mm.size, u_mm.size))
    for _ in range(components):
        wavelength = float(np.exp(rng.uniform(np.log(wavelengths_mm[0]), np.log(wavelengths_mm[1]))))
        direction = float(rng.uniform(0.0, 2 * np.pi))
        k = 2 * np.pi / wavelength
        phase = float(rng.uniform(0.0, 2 * np.pi))
        # Separable: cos(a + b) = cos a cos b - sin a sin b.
        a = k * np.cos(direction) * u_mm[None, :] + phase
        b = k * np.sin(direction) * v_mm[:, None]
        field += np.cos(a) * np.cos(b) - np.sin(a) * np.sin(b)
    return (field / np.sqrt(components / 2.0)).astype(np.float32)


def _transmit_field(rng: np.random.Generator, field: FieldStrength, u_mm: np.ndarray, v_mm: np.ndarray) -> np.ndarray:
    """Relative transmit field (1 at the image centre): a gradient and a central dielectric bump, stronger at 3 T."""
    strength = 1.0 if field is FieldStrength.T3 else 0.35
    un = u_mm[None, :] / 150.0
    vn = v_mm[:, None] / 150.0
    gradient = rng.normal(0.0, 0.08 * strength, 2)
    curvature = -abs(rng.normal(0.0, 0.12 * strength))
    b1 = 1.0 + gradient[0] * un + gradient[1] * vn + curvature * (un**2 + vn**2)
    return np.clip(b1, 0.5, 1.3).astype(np.float32)


def _as_tuple(vector: np.ndarray) -> tuple[float, float, float]:
    x, y, z = (round(float(value), 8) for value in vector)
    return (x, y, z)


__all__ = [
    "ImagingV2",
    "RealisticSlice",
    "StudyShape",
    "Structure",
    "STRUCTURE_LABEL",
    "choose_imaging",
    "make_realistic_slice",
    "make_study_shape",
    "structure_properties",
    "structure_values",
]
