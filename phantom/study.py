"""One phantom study end to end: anatomy, acquisitions, the scanner's maps, readers, DICOM files and sidecars.

Every random choice of a study comes from generators seeded by (seed, study index, purpose), so a study's bytes
depend only on the seed and its index, never on the number of worker processes or the order they finish in.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from inference.mapping import MappingScheme, reconstruct_map
from phantom.acquisition import CoilField, acquire, make_coil_field
from phantom.acquisition_v2 import acquire_v2, scanner_map
from phantom.anatomy import choose_matrix, make_heart_geometry, make_slice_anatomy
from phantom.anatomy_v2 import (
    ImagingV2,
    RealisticSlice,
    StudyShape,
    choose_imaging,
    make_realistic_slice,
    make_study_shape,
)
from phantom.dicom_contours import build_reader_rtstruct, build_reader_seg
from phantom.dicom_images import (
    GE_COMPONENTS,
    GeComponent,
    ImagePart,
    SeriesInfo,
    build_classic_series,
    build_enhanced_series,
    build_ge_mixed_series,
    encode_magnitude,
)
from phantom.dicom_maps import (
    MapQuantity,
    build_classic_map,
    build_display_copy,
    build_parametric_map,
    rigid_correct,
)
from phantom.identity import StudyContext, UidFactory, make_patient
from phantom.model import (
    AcquiredSeries,
    AnatomyVersion,
    FieldStrength,
    HeartGeometry,
    ReaderContour,
    SequenceKind,
    SliceAnatomy,
    SliceLevel,
    Tissue,
    Vendor,
)
from phantom.motion import sample_breathing
from phantom.readers import expert_contours, trainee_contours, truth_contour
from phantom.schemes import Scheme, make_scheme
from phantom.sidecar import (
    MANIFEST_NAME,
    PHANTOM_VERSION,
    SIDECAR_NAME,
    SeriesRecord,
    frame_motion_json,
    motion_labels_json,
    reader_json,
    true_values,
    wall_thickness,
    write_json,
)
from phantom.tissue import Pathology, TissueProperties, sample_pathology, sample_tissue_properties
from phantom.training_attempts import TrainingAttempt, attempt_contours
from phantom.vendors import QUIRK_VENDORS, MapEncoding, VendorQuirk, flavour_for, quirks_for
from phantom.vials import BATH_PROTON_DENSITY, BATH_T1_MS, BATH_T2_MS, ROI_RADIUS_FRACTION, make_vial_phantom

LOGGER = logging.getLogger(__name__)

LEVEL_ORDER = (SliceLevel.BASAL, SliceLevel.MID, SliceLevel.APICAL)
HEART_RATE_RANGE_BPM = (50.0, 95.0)
SNR_RANGE = (25.0, 70.0)
N_EXPERTS = 3
N_TRAINEES = 4
TRAINEE_SKILL_RANGE = (0.1, 0.7)
BREATH_HOLD_SPACING_S = 45.0  # from the start of one mapping breath-hold to the next
READER_OFFSET_S = 3 * 3600.0  # readers contour the study some hours after the scan
_SEQUENCE_SLUG = {
    SequenceKind.MOLLI_533: "molli533",
    SequenceKind.MOLLI_5S3S3S: "molli5s3s3s",
    SequenceKind.SHMOLLI: "shmolli",
    SequenceKind.T2PREP: "t2prep",
}
_MAPPING_SCHEME = {
    SequenceKind.MOLLI_533: MappingScheme.MOLLI,
    SequenceKind.MOLLI_5S3S3S: MappingScheme.MOLLI,
    SequenceKind.SHMOLLI: MappingScheme.SHMOLLI,
    SequenceKind.T2PREP: MappingScheme.T2PREP,
}


class SequenceChoice(str, Enum):
    """The ``--sequence`` choices: one family, or all of them."""

    MOLLI = "molli"
    SHMOLLI = "shmolli"
    T2PREP = "t2prep"
    ALL = "all"


class _Purpose(int, Enum):
    """Independent random streams of a study."""

    PLAN = 1
    PATIENT = 2
    HEART = 3
    SLICE = 4
    ACQUISITION = 5
    READERS = 6
    IMAGING = 7  # phantom v2: display and acquired matrix
    SHAPE = 8  # phantom v2: template patient and deformation of the study


@dataclass(frozen=True)
class StudyRequest:
    """What the caller asks for; a None field is drawn per study from the seed."""

    seed: int
    field: FieldStrength | None = None
    vendor: Vendor | None = None
    sequence: SequenceChoice = SequenceChoice.ALL
    motion_rate: float = 0.3
    with_experts: bool = True
    with_trainees: bool = True
    snr: float | None = None
    n_slices: int = 3
    matrix: tuple[int, int] | None = None  # (rows, columns); drawn per study when None
    pixel_spacing_mm: float | None = None
    rr_ms: float | None = None
    # Vendor conventions to imitate (docs/phantom.md); each applies to the studies whose vendor has it.
    vendor_quirks: Iterable[VendorQuirk | str] = frozenset()
    vials: bool = False  # a T1 phantom of vials in a water bath instead of a heart (MOLLI and ShMOLLI)
    # v1: textbook anatomy (the default, what the shipped models were trained on); v2: closer to real images.
    anatomy: AnatomyVersion | str = AnatomyVersion.V1
    # A training set's trainees: each attempt is one more contour series of the same reader on every slice.
    training_attempts: tuple[TrainingAttempt, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.n_slices <= len(LEVEL_ORDER):
            raise ValueError(f"n_slices must be 1-{len(LEVEL_ORDER)}, got {self.n_slices}")
        if not 0.0 <= self.motion_rate <= 1.0:
            raise ValueError(f"motion_rate must be in [0, 1], got {self.motion_rate}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        quirks = frozenset(VendorQuirk(quirk) for quirk in self.vendor_quirks)
        object.__setattr__(self, "vendor_quirks", quirks)  # frozen: normalised once, here
        if self.vendor is not None:
            for quirk in sorted(quirks, key=lambda q: q.value):
                vendors = QUIRK_VENDORS[quirk]
                if Vendor(self.vendor) not in vendors:
                    raise ValueError(
                        f"vendor quirk {quirk.value} belongs to {sorted(v.value for v in vendors)}, got vendor "
                        f"{Vendor(self.vendor).value}"
                    )
        if self.vials and SequenceChoice(self.sequence) is SequenceChoice.T2PREP:
            raise ValueError("the vial phantom is a T1 phantom: sequence must be molli, shmolli or all, got t2prep")
        try:
            anatomy = AnatomyVersion(self.anatomy)
        except ValueError:
            choices = ", ".join(version.value for version in AnatomyVersion)
            raise ValueError(f"anatomy must be one of {choices}, got {self.anatomy!r}") from None
        object.__setattr__(self, "anatomy", anatomy)
        if self.vials and anatomy is not AnatomyVersion.V1:
            raise ValueError(f"the vial phantom has no heart: anatomy must be v1 with vials, got {anatomy.value}")


@dataclass(frozen=True)
class StudyPlan:
    """Every choice of one study, resolved from a request and the seed."""

    seed: int
    study_index: int
    field: FieldStrength
    vendor: Vendor
    sequences: tuple[SequenceKind, ...]
    levels: tuple[SliceLevel, ...]
    rr_ms: float
    snr: float
    motion_rate: float
    with_experts: bool
    with_trainees: bool
    matrix: tuple[int, int] | None
    pixel_spacing_mm: float | None
    trainee_skill: float  # 0 novice .. 1 expert level, shared by the study's trainees
    vendor_quirks: frozenset[VendorQuirk] = frozenset()  # those of the request that the vendor has
    vials: bool = False
    anatomy: AnatomyVersion = AnatomyVersion.V1
    training_attempts: tuple[TrainingAttempt, ...] = ()

    @property
    def folder_name(self) -> str:
        return f"study_{self.study_index:04d}"


@dataclass(frozen=True)
class StudyOutcome:
    """What one generated study left on disk."""

    study_index: int
    folder: Path
    n_dicom_files: int
    study_instance_uid: str


def _rng(seed: int, study_index: int, purpose: _Purpose, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(study_index, int(purpose), *keys)))


def plan_study(request: StudyRequest, study_index: int) -> StudyPlan:
    """Resolve the choices of study ``study_index``: those the request leaves open vary with the seed."""
    rng = _rng(request.seed, study_index, _Purpose.PLAN)
    field = request.field or (FieldStrength.T1_5 if rng.random() < 0.5 else FieldStrength.T3)
    vendors = tuple(Vendor)
    vendor = request.vendor or vendors[int(rng.integers(len(vendors)))]
    heart_rate_bpm = float(rng.uniform(*HEART_RATE_RANGE_BPM))
    rr_ms = request.rr_ms if request.rr_ms is not None else round(60000.0 / heart_rate_bpm, 1)
    molli = SequenceKind.MOLLI_533 if rng.random() < 0.5 else SequenceKind.MOLLI_5S3S3S
    sequences = {
        SequenceChoice.MOLLI: (molli,),
        SequenceChoice.SHMOLLI: (SequenceKind.SHMOLLI,),
        SequenceChoice.T2PREP: (SequenceKind.T2PREP,),
        SequenceChoice.ALL: (molli, SequenceKind.SHMOLLI, SequenceKind.T2PREP),
    }[SequenceChoice(request.sequence)]
    snr = request.snr if request.snr is not None else round(float(rng.uniform(*SNR_RANGE)), 2)
    # One slice is mid; two are mid and basal; three cover base to apex.
    levels = {1: (SliceLevel.MID,), 2: (SliceLevel.BASAL, SliceLevel.MID), 3: LEVEL_ORDER}[request.n_slices]
    if request.vials:  # one transverse slice through the vials, T1 sequences only
        levels = (SliceLevel.MID,)
        sequences = tuple(kind for kind in sequences if kind is not SequenceKind.T2PREP)
    return StudyPlan(
        seed=request.seed,
        study_index=study_index,
        field=FieldStrength(field),
        vendor=Vendor(vendor),
        sequences=sequences,
        levels=levels,
        rr_ms=rr_ms,
        snr=snr,
        motion_rate=request.motion_rate,
        with_experts=request.with_experts,
        with_trainees=request.with_trainees,
        matrix=request.matrix,
        pixel_spacing_mm=request.pixel_spacing_mm,
        trainee_skill=round(float(rng.uniform(*TRAINEE_SKILL_RANGE)), 3),
        vendor_quirks=quirks_for(vendor, frozenset(VendorQuirk(quirk) for quirk in request.vendor_quirks)),
        vials=request.vials,
        anatomy=AnatomyVersion(request.anatomy),
        training_attempts=tuple(request.training_attempts),
    )


class _Writer:
    """Writes the DICOM files of one study and keeps series numbers and counts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.next_series_number = 1
        self.n_files = 0

    def series_number(self) -> int:
        number = self.next_series_number
        self.next_series_number += 1
        return number

    def save(self, role: str, datasets: Sequence[Dataset], relative_dir: str, description: str, *,
             image_components: Sequence[str] | None = None,
             times_ms: Sequence[float] | None = None) -> SeriesRecord:
        directory = self.folder / relative_dir
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, ds in enumerate(datasets, start=1):
            relative = f"{relative_dir}/{index:03d}.dcm"
            ds.save_as(self.folder / relative, enforce_file_format=True)
            paths.append(relative)
        self.n_files += len(datasets)
        first = datasets[0]
        sop_classes = tuple(str(ds.SOPClassUID) for ds in datasets)
        return SeriesRecord(
            role=role,
            sop_class_uid=str(first.SOPClassUID),
            series_instance_uid=str(first.SeriesInstanceUID),
            series_number=int(first.SeriesNumber),
            series_description=description,
            sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in datasets),
            paths=tuple(paths),
            image_components=tuple(image_components) if image_components is not None else None,
            sop_class_uids=sop_classes if len(set(sop_classes)) > 1 else None,
            times_ms=tuple(float(t) for t in times_ms) if times_ms is not None else None,
        )


def _series_info(context: StudyContext, writer: _Writer, key: tuple[Any, ...], description: str,
                 protocol: str, start_offset_s: float) -> SeriesInfo:
    return SeriesInfo(
        series_instance_uid=context.uids.uid("series", *key),
        series_number=writer.series_number(),
        series_description=description[:64],
        protocol_name=protocol[:64],
        start_offset_s=start_offset_s,
    )


def _raw_datasets(acquired: AcquiredSeries, anatomy: SliceAnatomy, context: StudyContext, info: SeriesInfo,
                  part: ImagePart, key: tuple[Any, ...]) -> list[Dataset]:
    if context.flavour.enhanced:
        uid = context.uids.uid("sop", *key, part.value)
        return [build_enhanced_series(acquired, anatomy.geometry, context, info, part, uid)]
    uids = [context.uids.uid("sop", *key, part.value, index) for index in range(acquired.magnitude.shape[0])]
    return build_classic_series(acquired, anatomy.geometry, context, info, part, uids)


def _fit_times(acquired: AcquiredSeries) -> np.ndarray:
    if acquired.inversion_times_ms is not None:
        return np.asarray(acquired.inversion_times_ms, dtype=np.float64)
    if acquired.t2_prep_ms is None:
        raise ValueError(f"{acquired.sequence.value} series has neither inversion nor preparation times")
    return np.asarray(acquired.t2_prep_ms, dtype=np.float64)


@dataclass(frozen=True)
class _SequenceProducts:
    kind: SequenceKind
    records: dict[str, SeriesRecord]
    map_dataset: Dataset
    scanner_map_ms: np.ndarray
    acquired: AcquiredSeries
    scheme: Scheme
    end_offset_s: float
    per_ti: tuple[SeriesRecord, ...] = ()  # vendor quirk per-ti: one magnitude series per time, in series order


def _acquire_and_write(
    plan: StudyPlan,
    context: StudyContext,
    writer: _Writer,
    anatomy: SliceAnatomy,
    level_index: int,
    sequence_index: int,
    kind: SequenceKind,
    coil: CoilField,
    b1_scale: float,
    *,
    label: str | None = None,
    still: bool = False,
    snr_reference_mask: np.ndarray | None = None,
    realistic: RealisticSlice | None = None,
) -> _SequenceProducts:
    """Acquire one sequence of one slice and write its raw series, MOCO, map and fit quality.

    ``label`` names the slice's folder and series (the level when None); ``still`` skips the breathing motion;
    ``snr_reference_mask`` is handed to :func:`acquire` (the vial phantom has no myocardium); ``realistic`` (phantom
    v2) forms the images with :func:`phantom.acquisition_v2.acquire_v2` and the scanner's map of every pixel.
    """
    rng = _rng(plan.seed, plan.study_index, _Purpose.ACQUISITION, level_index, sequence_index)
    scheme = make_scheme(kind, plan.rr_ms, rng)
    motion = None if still else sample_breathing(rng, scheme.n_images, motion_probability=plan.motion_rate)
    if realistic is None:
        acquired = acquire(anatomy, scheme, rng, snr=plan.snr, motion=motion, b1_scale=b1_scale, coil=coil,
                           snr_reference_mask=snr_reference_mask)
    else:
        acquired = acquire_v2(realistic, scheme, rng, snr=plan.snr, motion=motion, b1_scale=b1_scale)
    flavour = context.flavour
    level = anatomy.geometry.level
    folder = label if label is not None else level.value
    slug = _SEQUENCE_SLUG[kind]
    base = flavour.series_base(kind, folder)
    key = (folder, slug)
    start_s = 60.0 + (level_index * len(plan.sequences) + sequence_index) * BREATH_HOLD_SPACING_S
    records: dict[str, SeriesRecord] = {}
    per_ti: list[SeriesRecord] = []
    magnitude_sources: list[Dataset] = []
    quirks = plan.vendor_quirks
    if VendorQuirk.PER_TI in quirks:
        times = _fit_times(acquired)
        for index in range(acquired.magnitude.shape[0]):  # acquisition order, consecutive series numbers
            name = "TI" if acquired.inversion_times_ms is not None else "T2prep"
            description = f"{base} {name}={float(times[index]):.0f}"
            info = _series_info(context, writer, (*key, "per-ti", index), description, base, start_s)
            datasets, components = _classic_raw(acquired, anatomy, context, info, key, [index], quirks)
            magnitude_sources += _magnitude_only(datasets, components)
            per_ti.append(writer.save("magnitude", datasets, f"{folder}/{info.series_number:03d}_{slug}_magnitude",
                                      info.series_description, image_components=components,
                                      times_ms=[float(times[index])]))
    elif VendorQuirk.GE_MIXED in quirks:
        info = _series_info(context, writer, (*key, ImagePart.MAGNITUDE.value), base, base, start_s)
        datasets, components = _classic_raw(acquired, anatomy, context, info, key, None, quirks)
        magnitude_sources = _magnitude_only(datasets, components)
        records["magnitude"] = writer.save("magnitude", datasets,
                                           f"{folder}/{info.series_number:03d}_{slug}_magnitude", base,
                                           image_components=components)
    else:
        for part in ImagePart:
            info = _series_info(context, writer, (*key, part.value), base, base, start_s)
            datasets = _raw_datasets(acquired, anatomy, context, info, part, key)
            if part is ImagePart.MAGNITUDE:
                magnitude_sources = datasets
            role = "magnitude" if part is ImagePart.MAGNITUDE else "phase"
            records[role] = writer.save(role, datasets, f"{folder}/{info.series_number:03d}_{slug}_{role}", base)
    end_s = start_s + float(acquired.acquisition_times_s[-1]) + 2.0

    if flavour.writes_moco:
        corrected = replace(
            acquired,
            magnitude=rigid_correct(
                acquired.magnitude, acquired.frame_motion, anatomy.geometry.pixel_spacing_mm, anatomy.lv_centre_px
            ).astype(np.float32),
        )
        description = f"{base}_MOCO"
        info = _series_info(context, writer, (*key, "moco"), description, base, end_s)
        uids = [context.uids.uid("sop", *key, "moco", index) for index in range(acquired.magnitude.shape[0])]
        moco = build_classic_series(corrected, anatomy.geometry, context, info, ImagePart.MAGNITUDE, uids)
        for ds in moco:
            ds.ImageType = ["DERIVED", "PRIMARY", "M", "ND", "MOCO"]
            ds.DerivationDescription = "rigid motion correction (translation and rotation) of the raw images"
        records["moco"] = writer.save("moco", moco, f"{folder}/{info.series_number:03d}_{slug}_moco", description)

    # The scanner fits its own stored (quantised) magnitude images, so misregistration carries into the map.
    stored = encode_magnitude(acquired.magnitude).astype(np.float64)
    inversion_index = np.asarray(scheme.image_set_index) if kind is SequenceKind.SHMOLLI else None
    if realistic is None:
        result = reconstruct_map(
            stored,
            _fit_times(acquired),
            _MAPPING_SCHEME[kind],
            rr_ms=plan.rr_ms,
            inversion_index=inversion_index,
            correction="none",  # a scanner's MOLLI/ShMOLLI map is the plain fit
        )
        map_ms, r2 = result.map_ms, result.r2
    else:  # v2: the scanner fits every pixel, noise included
        fitted = scanner_map(stored, _fit_times(acquired), kind, rr_ms=plan.rr_ms, inversion_index=inversion_index)
        map_ms, r2 = fitted.map_ms, fitted.r2
    quantity = MapQuantity.T2 if kind is SequenceKind.T2PREP else MapQuantity.T1
    sources = magnitude_sources

    def write_map(role: str, values: np.ndarray, map_quantity: MapQuantity, suffix: str) -> Dataset:
        description = f"{base}{suffix}"
        info = _series_info(context, writer, (*key, role), description, base, end_s + 1.0)
        uid = context.uids.uid("sop", *key, role)
        ds: Dataset  # a highdicom ParametricMap or a classic MR image
        if flavour.map_encoding is MapEncoding.PARAMETRIC_MAP:
            ds = build_parametric_map(values, map_quantity, sources, anatomy.geometry, context, info, uid)
        else:
            ds = build_classic_map(values, map_quantity, sources, context, info, uid)
        series = [ds]
        if (role == "map" and VendorQuirk.DISPLAY_COPY in quirks
                and flavour.map_encoding is not MapEncoding.PARAMETRIC_MAP):
            colour_uid = context.uids.uid("sop", *key, role, "display-copy")
            series.append(build_display_copy(ds, values, map_quantity, context, info, colour_uid))
        records[role] = writer.save(role, series, f"{folder}/{info.series_number:03d}_{slug}_{role}", description)
        return ds

    map_dataset = write_map("map", map_ms, quantity, flavour.map_suffix(kind))
    write_map("fit_quality", r2, MapQuantity.R2, flavour.fit_quality_suffix())
    return _SequenceProducts(
        kind=kind,
        records=records,
        map_dataset=map_dataset,
        scanner_map_ms=np.asarray(map_ms),
        acquired=acquired,
        scheme=scheme,
        end_offset_s=end_s,
        per_ti=tuple(per_ti),
    )


def _classic_raw(acquired: AcquiredSeries, anatomy: SliceAnatomy, context: StudyContext, info: SeriesInfo,
                 key: tuple[Any, ...], image_indices: Sequence[int] | None,
                 quirks: frozenset[VendorQuirk]) -> tuple[list[Dataset], list[str] | None]:
    """The instances of a quirky raw series (GE mixed components and/or one series per time) and the component of
    each instance (None without ge-mixed, where every instance is a magnitude image)."""
    indices = list(range(acquired.magnitude.shape[0])) if image_indices is None else list(image_indices)
    if VendorQuirk.GE_MIXED in quirks:
        uids = [
            context.uids.uid("sop", *key, ImagePart.MAGNITUDE.value, index) if component is GeComponent.MAGNITUDE
            else context.uids.uid("sop", *key, component.name.lower(), index)
            for index in indices
            for component in GE_COMPONENTS
        ]
        datasets = build_ge_mixed_series(acquired, anatomy.geometry, context, info, uids, image_indices=indices)
        return datasets, [component.name for _ in indices for component in GE_COMPONENTS]
    uids = [context.uids.uid("sop", *key, ImagePart.MAGNITUDE.value, index) for index in indices]
    datasets = build_classic_series(acquired, anatomy.geometry, context, info, ImagePart.MAGNITUDE, uids,
                                    image_indices=indices)
    return datasets, None


def _magnitude_only(datasets: list[Dataset], components: list[str] | None) -> list[Dataset]:
    if components is None:
        return list(datasets)
    return [ds for ds, component in zip(datasets, components, strict=True) if component == GeComponent.MAGNITUDE.name]


def draw_readers(anatomy: SliceAnatomy, rng: np.random.Generator, *, with_experts: bool, with_trainees: bool,
                 trainee_skill: float) -> list[ReaderContour]:
    """Truth first, then the experts and the trainees of one slice."""
    readers = [truth_contour(anatomy)]
    if with_experts:
        readers.extend(expert_contours(anatomy, rng, n_experts=N_EXPERTS))
    if with_trainees:
        readers.extend(trainee_contours(anatomy, rng, n_trainees=N_TRAINEES, skill=trainee_skill))
    return readers


def _scheme_json(products: _SequenceProducts, plan: StudyPlan) -> dict[str, Any]:
    acquired = products.acquired
    scheme = products.scheme
    return {
        "sequence": products.kind.value,
        "rr_ms": scheme.rr_ms,
        "inversion_times_ms": acquired.inversion_times_ms,
        "t2_prep_ms": acquired.t2_prep_ms,
        "trigger_times_ms": acquired.trigger_times_ms,
        "acquisition_times_s": acquired.acquisition_times_s,
        "inversion_set_of_image": list(scheme.image_set_index),
        "flip_angle_deg": acquired.flip_angle_deg,
        "echo_time_ms": acquired.echo_time_ms,
        "repetition_time_ms": acquired.repetition_time_ms,
        "snr": plan.snr,
        "noise_sigma": acquired.noise_sigma,
    }


def _series_json(products: _SequenceProducts) -> dict[str, Any]:
    series: dict[str, Any] = {role: record.to_json() for role, record in sorted(products.records.items())}
    if products.per_ti:
        series["magnitude_per_ti"] = [record.to_json() for record in products.per_ti]
    return series


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    selected = values[mask & np.isfinite(values)]
    return float(selected.mean()) if selected.size else None


@dataclass(frozen=True)
class StudyV2:
    """The study-wide draws of phantom v2: what the scanner acquires and the LV shape template with its deformation."""

    imaging: ImagingV2
    shape: StudyShape


def draw_study_v2(plan: StudyPlan, heart: HeartGeometry) -> StudyV2:
    """Phantom v2's study-wide choices, from their own random streams (v1's streams are left as they are)."""
    imaging = choose_imaging(_rng(plan.seed, plan.study_index, _Purpose.IMAGING), matrix=plan.matrix,
                             pixel_spacing_mm=plan.pixel_spacing_mm)
    shape = make_study_shape(_rng(plan.seed, plan.study_index, _Purpose.SHAPE), heart, plan.field)
    return StudyV2(imaging, shape)


@dataclass(frozen=True)
class SliceTruth:
    """One slice before acquisition: its truth, receive and transmit fields, and (phantom v2) its realistic form."""

    anatomy: SliceAnatomy
    pathology: Pathology | None
    coil: CoilField
    b1_scale: float
    realistic: RealisticSlice | None = None


def make_slice(plan: StudyPlan, level: SliceLevel, heart: HeartGeometry, properties: dict[Tissue, TissueProperties],
               matrix: tuple[int, int], spacing_mm: float, study_v2: StudyV2 | None = None) -> SliceTruth:
    """The slice at ``level`` of the study, as :func:`generate_study` writes it (v2 when ``study_v2`` is given).

    Training draws its slices through this function, so that they equal the files' slices.
    """
    rng = _rng(plan.seed, plan.study_index, _Purpose.SLICE, LEVEL_ORDER.index(level))
    pathology = sample_pathology(rng, level)
    if study_v2 is None:
        anatomy = make_slice_anatomy(
            rng, level, plan.field, matrix=matrix, pixel_spacing_mm=spacing_mm, pathology=pathology,
            geometry=heart, properties=properties,
        )
        coil = make_coil_field(anatomy, rng)
        realistic = None
    else:
        realistic = make_realistic_slice(rng, level, plan.field, imaging=study_v2.imaging, geometry=heart,
                                         study_shape=study_v2.shape, properties=properties, pathology=pathology)
        anatomy, coil = realistic.anatomy, realistic.coil
    b1_scale = float(rng.uniform(0.8, 1.0) if plan.field is FieldStrength.T3 else rng.uniform(0.95, 1.02))
    return SliceTruth(anatomy, pathology, coil, b1_scale, realistic)


def _write_slice(plan: StudyPlan, context: StudyContext, writer: _Writer, level_index: int, heart: HeartGeometry,
                 properties: dict[Tissue, TissueProperties], matrix: tuple[int, int],
                 spacing_mm: float, study_v2: StudyV2 | None = None) -> dict[str, Any]:
    level = plan.levels[level_index]
    truth = make_slice(plan, level, heart, properties, matrix, spacing_mm, study_v2)
    anatomy, pathology, realistic = truth.anatomy, truth.pathology, truth.realistic
    products = [
        _acquire_and_write(plan, context, writer, anatomy, level_index, index, kind, truth.coil, truth.b1_scale,
                           realistic=realistic)
        for index, kind in enumerate(plan.sequences)
    ]
    # Readers contour the first map of the slice: the T1 map when an IR sequence ran, else the T2 map.
    drawn_on = products[0]
    readers = draw_readers(
        anatomy, _rng(plan.seed, plan.study_index, _Purpose.READERS, LEVEL_ORDER.index(level)),
        with_experts=plan.with_experts, with_trainees=plan.with_trainees, trainee_skill=plan.trainee_skill,
    )
    if plan.training_attempts:  # a stream of their own, so that the other readers keep their contours
        readers.extend(attempt_contours(
            anatomy, _rng(plan.seed, plan.study_index, _Purpose.READERS, LEVEL_ORDER.index(level), 1),
            plan.training_attempts))
    reader_entries: list[dict[str, Any]] = []
    for reader in readers:
        offset_s = READER_OFFSET_S + 60.0 * len(reader_entries)
        attempt = reader.parameters.get("attempt")
        series_name = reader.reader if attempt is None else f"{reader.reader}_attempt{int(attempt)}"
        key = (level.value, "reader", series_name)
        seg_info = _series_info(context, writer, (*key, "seg"), f"SEG {series_name} {level.value}",
                                "contours", offset_s)
        seg = build_reader_seg(reader, drawn_on.map_dataset, context, seg_info, context.uids.uid("sop", *key, "seg"))
        seg_record = writer.save(
            "seg", [seg], f"{level.value}/readers/{series_name}_seg", seg_info.series_description
        )
        rt_info = _series_info(context, writer, (*key, "rtstruct"), f"RTSTRUCT {series_name} {level.value}",
                               "contours", offset_s)
        rtstruct = build_reader_rtstruct(reader, drawn_on.map_dataset, anatomy.geometry, context, rt_info,
                                         context.uids.uid("sop", *key, "rtstruct"))
        rt_record = writer.save("rtstruct", [rtstruct], f"{level.value}/readers/{series_name}_rtstruct",
                                rt_info.series_description)
        reader_entries.append(reader_json(reader, seg_record, rt_record, drawn_on.records["map"]))

    any_motion: dict[int, bool] = {}
    for item in products:
        for segment, flag in item.acquired.motion_labels.items():
            any_motion[segment] = any_motion.get(segment, False) or bool(flag)
    geometry = anatomy.geometry
    sidecar = {
        "phantom_version": PHANTOM_VERSION,
        "study": {
            "seed": plan.seed,
            "study_index": plan.study_index,
            "study_instance_uid": context.study_instance_uid,
            "frame_of_reference_uid": context.frame_of_reference_uid,
        },
        "slice": {
            "level": level.value,
            "rows": geometry.rows,
            "columns": geometry.columns,
            "pixel_spacing_mm": geometry.pixel_spacing_mm,
            "slice_thickness_mm": geometry.slice_thickness_mm,
            "image_orientation_patient": geometry.image_orientation_patient,
            "image_position_patient_mm": geometry.image_position_patient_mm,
            "slice_location_mm": geometry.slice_location_mm,
            "lv_centre_px": anatomy.lv_centre_px,
            "rv_insertion_px": anatomy.rv_insertion_px,
        },
        "field_t": plan.field.value,
        "vendor": plan.vendor.value,
        "manufacturer": context.flavour.manufacturer,
        "rr_ms": plan.rr_ms,
        "heart_rate_bpm": 60000.0 / plan.rr_ms,
        "pathology": None if pathology is None else {
            "kind": pathology.kind.value,
            "segments": list(pathology.segments),
            "t1_factor": pathology.t1_factor,
            "t2_factor": pathology.t2_factor,
        },
        "truth": {
            "t1_ms": true_values(anatomy, anatomy.t1_ms),
            "t2_ms": true_values(anatomy, anatomy.t2_ms),
            "wall_thickness_mm": wall_thickness(anatomy),
            "myocardium_pixels": int(np.count_nonzero(anatomy.myocardium_mask)),
        },
        "motion_labels": motion_labels_json(any_motion),
        "sequences": [
            {
                "scheme": _scheme_json(item, plan),
                "series": _series_json(item),
                "motion": {
                    "labels": motion_labels_json(item.acquired.motion_labels),
                    "frames": frame_motion_json(item.acquired.frame_motion),
                },
                "scanner_map_mean_in_true_myocardium_ms": _masked_mean(item.scanner_map_ms, anatomy.myocardium_mask),
            }
            for item in products
        ],
        "readers_drawn_on": drawn_on.kind.value,
        "readers": reader_entries,
    }
    if plan.vendor_quirks:
        sidecar["vendor_quirks"] = sorted(quirk.value for quirk in plan.vendor_quirks)
    if realistic is not None:  # keys only for v2, so that v1 sidecars keep their bytes
        sidecar["anatomy"] = AnatomyVersion.V2.value
        sidecar["imaging"] = realistic.imaging.to_json()
        sidecar["shape_template"] = {"source": "Sunnybrook Cardiac Data (CC0)", "patient": realistic.template[0],
                                     "instance_number": realistic.template[1]}
        truth_record = sidecar["truth"]
        assert isinstance(truth_record, dict)
        truth_record["cavity_pixels"] = int(np.count_nonzero(anatomy.cavity_mask))
        truth_record["rv_pixels"] = int(np.count_nonzero(realistic.rv_mask))
        truth_record["through_plane_spread_mm"] = realistic.extras["through_plane_mm"]
        truth_record["lv_offset_from_image_centre_mm"] = realistic.extras["lv_offset_from_image_centre_mm"]
    relative = f"{level.value}/{SIDECAR_NAME}"
    write_json(writer.folder / relative, sidecar)
    return {"level": level.value, "sidecar": relative, "sequences": [item.kind.value for item in products]}


VIALS_LABEL = "vials"
_VIALS_SLICE_KEY = 99  # random stream of the vial slice, apart from the heart's levels


def _write_vials(plan: StudyPlan, context: StudyContext, writer: _Writer, matrix: tuple[int, int],
                 spacing_mm: float) -> dict[str, Any]:
    """The vial phantom's slice: raw series and the scanner's maps of each T1 sequence, and its sidecar."""
    rng = _rng(plan.seed, plan.study_index, _Purpose.SLICE, _VIALS_SLICE_KEY)
    phantom = make_vial_phantom(rng, matrix=matrix, pixel_spacing_mm=spacing_mm)
    anatomy = phantom.anatomy
    coil = make_coil_field(anatomy, rng)
    b1_scale = float(rng.uniform(0.8, 1.0) if plan.field is FieldStrength.T3 else rng.uniform(0.95, 1.02))
    products = [
        _acquire_and_write(plan, context, writer, anatomy, 0, index, kind, coil, b1_scale, label=VIALS_LABEL,
                           still=True, snr_reference_mask=phantom.roi_mask)
        for index, kind in enumerate(plan.sequences)
    ]
    geometry = anatomy.geometry
    spacing = geometry.pixel_spacing_mm[0]

    def per_vial(values: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for vial in phantom.vials:
            selected = values[(phantom.roi_labels == vial.number) & np.isfinite(values)]
            out.append({
                "vial": vial.number,
                "mean_ms": float(selected.mean()) if selected.size else None,
                "sd_ms": float(selected.std()) if selected.size else None,
                "fitted_pixels": int(selected.size),  # of the ROI's roi_pixels; the others' fit failed
            })
        return out

    sidecar = {
        "phantom_version": PHANTOM_VERSION,
        "study_kind": "t1_vials",
        "lv_present": False,
        "study": {
            "seed": plan.seed,
            "study_index": plan.study_index,
            "study_instance_uid": context.study_instance_uid,
            "frame_of_reference_uid": context.frame_of_reference_uid,
        },
        "slice": {
            "label": VIALS_LABEL,
            "rows": geometry.rows,
            "columns": geometry.columns,
            "pixel_spacing_mm": geometry.pixel_spacing_mm,
            "slice_thickness_mm": geometry.slice_thickness_mm,
            "image_orientation_patient": geometry.image_orientation_patient,
            "image_position_patient_mm": geometry.image_position_patient_mm,
            "slice_location_mm": geometry.slice_location_mm,
            "grid_rotation_deg": phantom.rotation_deg,
        },
        "field_t": plan.field.value,
        "vendor": plan.vendor.value,
        "manufacturer": context.flavour.manufacturer,
        "rr_ms": plan.rr_ms,
        "heart_rate_bpm": 60000.0 / plan.rr_ms,
        "bath": {"t1_ms": BATH_T1_MS, "t2_ms": BATH_T2_MS, "proton_density": BATH_PROTON_DENSITY},
        "vials": [
            {
                "vial": vial.number,
                "centre_px": vial.centre_px,
                "radius_mm": vial.radius_mm,
                "radius_px": vial.radius_mm / spacing,
                "roi_radius_px": ROI_RADIUS_FRACTION * vial.radius_mm / spacing,
                "roi_pixels": int(np.count_nonzero(phantom.roi_labels == vial.number)),
                "t1_ms": vial.t1_ms,
                "t2_ms": vial.t2_ms,
            }
            for vial in phantom.vials
        ],
        "sequences": [
            {
                "scheme": _scheme_json(item, plan),
                "series": _series_json(item),
                "scanner_map_in_vial_roi": per_vial(item.scanner_map_ms),
            }
            for item in products
        ],
    }
    if plan.vendor_quirks:
        sidecar["vendor_quirks"] = sorted(quirk.value for quirk in plan.vendor_quirks)
    relative = f"{VIALS_LABEL}/{SIDECAR_NAME}"
    write_json(writer.folder / relative, sidecar)
    return {"level": VIALS_LABEL, "sidecar": relative, "sequences": [item.kind.value for item in products]}


def generate_study(plan: StudyPlan, out_dir: Path) -> StudyOutcome:
    """Generate one study into ``out_dir / plan.folder_name`` (replacing what is there).

    Returns
    -------
    StudyOutcome
        The folder, the number of DICOM files and the Study Instance UID.
    """
    folder = Path(out_dir) / plan.folder_name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    uids = UidFactory(plan.seed, plan.study_index)
    flavour = flavour_for(plan.vendor)
    patient_rng = _rng(plan.seed, plan.study_index, _Purpose.PATIENT)
    patient = make_patient(patient_rng, plan.study_index)
    context = StudyContext(
        patient=patient,
        study_instance_uid=uids.uid("study"),
        frame_of_reference_uid=uids.uid("frame-of-reference"),
        flavour=flavour,
        field=plan.field,
        device_serial_number=f"{int(patient_rng.integers(10**4, 10**5))}",
        uids=uids,
        writes_field_strength=VendorQuirk.NO_FIELD_STRENGTH not in plan.vendor_quirks,
        body_part="" if plan.vials else "HEART",
        study_description="T1 phantom^Vials" if plan.vials else "Cardiac^Mapping",
    )
    heart_rng = _rng(plan.seed, plan.study_index, _Purpose.HEART)
    heart = make_heart_geometry(heart_rng)
    properties = sample_tissue_properties(heart_rng, plan.field)
    matrix, spacing_mm = choose_matrix(heart_rng)
    matrix = plan.matrix or matrix
    spacing_mm = plan.pixel_spacing_mm or spacing_mm
    study_v2 = draw_study_v2(plan, heart) if plan.anatomy is AnatomyVersion.V2 else None
    if study_v2 is not None:
        matrix, spacing_mm = study_v2.imaging.display_matrix, study_v2.imaging.pixel_spacing_mm
    writer = _Writer(folder)
    if plan.vials:
        slices = [_write_vials(plan, context, writer, matrix, spacing_mm)]
    else:
        slices = [
            _write_slice(plan, context, writer, index, heart, properties, matrix, spacing_mm, study_v2)
            for index in range(len(plan.levels))
        ]
    manifest = {
        "phantom_version": PHANTOM_VERSION,
        "seed": plan.seed,
        "study_index": plan.study_index,
        "study_instance_uid": context.study_instance_uid,
        "vendor": plan.vendor.value,
        "manufacturer": flavour.manufacturer,
        "manufacturer_model_name": flavour.model_name(plan.field),
        "field_t": plan.field.value,
        "rr_ms": plan.rr_ms,
        "snr": plan.snr,
        "motion_rate": plan.motion_rate,
        "trainee_skill": plan.trainee_skill,
        "sequences": [kind.value for kind in plan.sequences],
        "slices": slices,
        "n_dicom_files": writer.n_files,
    }
    if plan.vendor_quirks:  # keys only when asked for, so that outputs without them keep their bytes
        manifest["vendor_quirks"] = sorted(quirk.value for quirk in plan.vendor_quirks)
    if plan.vials:
        manifest["study_kind"] = "t1_vials"
    if study_v2 is not None:
        manifest["anatomy"] = AnatomyVersion.V2.value
        manifest["imaging"] = study_v2.imaging.to_json()
        manifest["shape_template_patient"] = study_v2.shape.patient
    write_json(folder / MANIFEST_NAME, manifest)
    LOGGER.info("study %d written: %d DICOM files", plan.study_index, writer.n_files)
    return StudyOutcome(plan.study_index, folder, writer.n_files, context.study_instance_uid)


def _generate_one(request: StudyRequest, study_index: int, out_dir: str) -> StudyOutcome:
    return generate_study(plan_study(request, study_index), Path(out_dir))


def generate_studies(request: StudyRequest, out_dir: Path, *, n_studies: int, workers: int | None = None,
                     progress: bool = False) -> list[StudyOutcome]:
    """Generate studies 0 .. n_studies-1 of ``request`` into ``out_dir``, in a process pool when workers > 1.

    Parameters
    ----------
    request
        The choices; open ones vary per study from the seed.
    out_dir
        Folder that receives one sub-folder per study.
    n_studies
        Number of studies.
    workers
        Worker processes; the CPU count when None. One worker runs in this process.
    progress
        Show a progress bar (rich) on the terminal.

    Raises
    ------
    ValueError
        If ``n_studies`` or ``workers`` is below 1.
    """
    if n_studies < 1:
        raise ValueError(f"n_studies must be at least 1, got {n_studies}")
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise ValueError(f"workers must be at least 1, got {n_workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[StudyOutcome] = []
    with Progress(
        TextColumn("phantom"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress
    ) as bar:
        task = bar.add_task("studies", total=n_studies)
        if n_workers == 1:
            for index in range(n_studies):
                outcomes.append(_generate_one(request, index, str(out)))
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=min(n_workers, n_studies)) as pool:
                futures = [pool.submit(_generate_one, request, index, str(out)) for index in range(n_studies)]
                for future in as_completed(futures):
                    outcomes.append(future.result())
                    bar.advance(task)
    return sorted(outcomes, key=lambda outcome: outcome.study_index)
