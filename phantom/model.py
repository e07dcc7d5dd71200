"""Data classes that pass between the phantom's simulation and its DICOM writers.

Pixel coordinates follow the DICOM convention: ``x`` is the column index, ``y`` the row index, and the centre of the
top-left pixel is (0, 0). Contours are closed polygons of sub-pixel (x, y) points, first point not repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

import numpy as np


class Tissue(IntEnum):
    """Labels of the phantom's label map."""

    BACKGROUND = 0
    LV_BLOOD = 1
    MYOCARDIUM = 2
    PAPILLARY = 3
    RV_BLOOD = 4
    RV_WALL = 5
    EPICARDIAL_FAT = 6
    LIVER = 7
    SPLEEN = 8
    LUNG = 9
    CHEST_WALL = 10


class FieldStrength(str, Enum):
    T1_5 = "1.5"
    T3 = "3"

    @property
    def tesla(self) -> float:
        return float(self.value)


class Vendor(str, Enum):
    SIEMENS = "siemens"
    PHILIPS = "philips"
    GE = "ge"
    ENHANCED = "enhanced"  # Enhanced MR multi-frame, one instance per series


class SequenceKind(str, Enum):
    MOLLI_533 = "molli_5(3)3"  # three heartbeats of recovery between the sets
    MOLLI_5S3S3S = "molli_5s(3s)3s"  # acquisition windows and recovery in seconds
    SHMOLLI = "shmolli"  # 5(1)1(1)1
    T2PREP = "t2prep"  # T2-prepared bSSFP, TE 0/25/55 ms


class AnatomyVersion(str, Enum):
    """Which phantom draws the slices: v1 (textbook shapes, the default) or v2 (closer to real images)."""

    V1 = "v1"
    V2 = "v2"


class SliceLevel(str, Enum):
    BASAL = "basal"
    MID = "mid"
    APICAL = "apical"


@dataclass(frozen=True)
class SliceGeometry:
    """Where a slice lies in the patient coordinate system (LPS, mm)."""

    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns), as DICOM PixelSpacing
    slice_thickness_mm: float
    image_orientation_patient: tuple[float, float, float, float, float, float]
    image_position_patient_mm: tuple[float, float, float]
    slice_location_mm: float
    level: SliceLevel


@dataclass(frozen=True)
class HeartGeometry:
    """Short-axis geometry shared by the slices of one study, so that they stack along one long axis.

    Directions are unit vectors in the patient coordinate system (LPS). ``row_direction`` points along increasing
    column index (towards the patient's left, the LV lateral wall), ``column_direction`` along increasing row index
    (towards the diaphragm); anterior is at the top of the image and the RV on the viewer's left.
    """

    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    long_axis_direction: tuple[float, float, float]  # unit vector from base to apex
    base_centre_mm: tuple[float, float, float]  # LV centre where the basal slice crosses the long axis (LPS)
    level_offsets_mm: tuple[float, float, float]  # basal, mid, apical distance from base_centre_mm along the axis
    slice_thickness_mm: float
    basal_endo_radius_mm: float  # mean endocardial radius of the basal slice (end-diastole)
    basal_wall_thickness_mm: float  # mean wall thickness of the basal slice
    rv_depth_mm: float  # largest depth of the RV cavity at the base
    anterior_insertion_deg: float  # display angle of the anterior RV insertion (counter-clockwise from +x, y up)
    septal_span_deg: float  # angle from the anterior to the inferior RV insertion through the septum
    shape_seed: int  # seeds the Fourier harmonics that every slice of the study shares

    def slice_centre_mm(self, level: SliceLevel) -> tuple[float, float, float]:
        """LV centre of ``level`` in patient coordinates (mm)."""
        index = (SliceLevel.BASAL, SliceLevel.MID, SliceLevel.APICAL).index(level)
        offset = self.level_offsets_mm[index]
        x, y, z = (float(c + offset * d) for c, d in zip(self.base_centre_mm, self.long_axis_direction, strict=True))
        return (x, y, z)


@dataclass(frozen=True)
class SliceAnatomy:
    """Ground truth of one short-axis slice."""

    geometry: SliceGeometry
    label_map: np.ndarray  # (rows, columns) uint8 of Tissue
    endo_contour_px: np.ndarray  # (N, 2) float (x, y), endocardial border, papillary muscles excluded
    epi_contour_px: np.ndarray  # (N, 2) float (x, y), epicardial border
    lv_centre_px: tuple[float, float]  # (x, y)
    rv_insertion_px: tuple[tuple[float, float], tuple[float, float]]  # (anterior, inferior), (x, y) each
    aha_segment_map: np.ndarray  # (rows, columns) uint8: 0 outside myocardium, AHA number 1-16 inside
    t1_ms: np.ndarray  # (rows, columns) float32, native T1 of each pixel
    t2_ms: np.ndarray  # (rows, columns) float32
    proton_density: np.ndarray  # (rows, columns) float32, relative (blood = 1)
    wall_thickness_mm: dict[int, float]  # mean wall thickness per AHA segment

    @property
    def myocardium_mask(self) -> np.ndarray:
        return self.label_map == Tissue.MYOCARDIUM

    @property
    def cavity_mask(self) -> np.ndarray:
        """LV cavity as readers draw it: blood pool plus papillary muscles."""
        return (self.label_map == Tissue.LV_BLOOD) | (self.label_map == Tissue.PAPILLARY)


@dataclass(frozen=True)
class FrameMotion:
    """Rigid-plus-deformation displacement of one acquired frame (breathing)."""

    translation_mm: tuple[float, float]  # (x, y) in the image plane
    rotation_deg: float
    deformation_mm: float  # amplitude of the smooth non-rigid part
    deformation_phase_rad: tuple[float, float] = (0.0, 0.0)  # phases of the smooth field along x and y
    deformation_wavelength_mm: float = 120.0  # spatial period of the smooth non-rigid part

    @property
    def is_still(self) -> bool:
        return self.translation_mm == (0.0, 0.0) and self.rotation_deg == 0.0 and self.deformation_mm == 0.0


@dataclass(frozen=True)
class AcquiredSeries:
    """The images one sequence produced for one slice, in acquisition order."""

    sequence: SequenceKind
    magnitude: np.ndarray  # (n, rows, columns) float32, arbitrary units, after noise and coil field
    phase_rad: np.ndarray  # (n, rows, columns) float32 in [-pi, pi)
    inversion_times_ms: np.ndarray | None  # (n,) effective TI of each image (IR sequences)
    t2_prep_ms: np.ndarray | None  # (n,) T2-preparation duration (T2-prep), 0 for the reference image
    trigger_times_ms: np.ndarray  # (n,) delay after the R wave
    acquisition_times_s: np.ndarray  # (n,) seconds since the start of the breath-hold
    rr_ms: float
    flip_angle_deg: float
    echo_time_ms: float
    repetition_time_ms: float
    frame_motion: tuple[FrameMotion, ...]  # one per image
    motion_labels: dict[int, bool]  # AHA segment -> motion artefact by the rule in docs/phantom.md
    noise_sigma: float


@dataclass(frozen=True)
class ReaderContour:
    """One reader's myocardium as drawn on a map."""

    reader: str  # e.g. "expert1", "trainee3", "truth"
    role: str  # "expert", "trainee" or "truth"
    endo_contour_px: np.ndarray
    epi_contour_px: np.ndarray
    myocardium_mask: np.ndarray  # (rows, columns) bool
    error_mode: str | None = None  # trainees: ErrorMode value; None for experts and truth
    parameters: dict[str, float] = field(default_factory=dict)  # what drove the variability
