"""Offline analysis of DICOM files or folders: maps per slice, every reader's myocardial values, trainee scores.

The files are read from disk, grouped by series and classified (:func:`dicomnode.io.classify.classify`). The
mapping series are grouped into analysis units and each slice's map is chosen as the map job chooses it
(:mod:`dicomnode.io.slice_groups`, :mod:`dicomnode.analysis.map_sources`): the scanner's map of the slice when there
is one, else the node's reconstruction from the raw images, so that both give the same slices and values.
Contour objects (DICOM-SEG, RTSTRUCT) are
placed on the map images; per slice and reader the global and AHA segment values are measured, a reference is
chosen (the named gold-standard reader, else the STAPLE consensus of the experts) and every other reader is scored
against it. Problems with one file or series are collected in the report, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from scipy import ndimage

from db.models import SeriesRole
from dicomnode.analysis.map_sources import (
    PreparedSlice,
    add_source_figures,
    compare_maps,
    prepare_slice,
    reference_image,
    unit_description,
)
from dicomnode.analysis.reference import MIN_EXPERTS_FOR_CONSENSUS, ReferenceSource, is_expert
from dicomnode.errors import MyomapError
from dicomnode.io.classify import classify
from dicomnode.io.contours import ImageGeometry, ReaderMasks, Structure, read_rtstruct, read_seg
from dicomnode.io.slice_groups import KIND_OF_ROLE, MappingSeries, mapping_units
from dicomnode.io.slice_level import ASSUMED, level_from_description
from dicomnode.io.unit_loader import load_unit
from inference.aha import AhaLevel, aha_segments, rv_insertion_points
from inference.consensus import consensus
from inference.errors import AnalysisError
from inference.mapping import MapKind
from inference.model_set import ModelSet
from inference.myocardium_values import RegionValues, region_values, segment_values
from inference.slice_analysis import RawImages, analyse_slice
from inference.trainee_scoring import TraineeScore, score_trainee
from inference.verdict import banner_text
from reports.result_summary import SliceFigures

LOGGER = logging.getLogger(__name__)

#: Contour labels taken as the right ventricle (normalised: lower case, punctuation as spaces).
RV_LABELS = frozenset({"rv", "right ventricle", "rv cavity", "rv blood pool", "right ventricular cavity"})


class AnalyzeError(MyomapError):
    """A file, series or slice cannot be analysed; recorded in the report as a :class:`Problem`."""


class InsertionSource(str, Enum):
    """Where the RV insertion points that orient the AHA segments came from."""

    RV_CONTOUR = "rv_contour"
    DEFAULT_ANGLES = "default_angles"  # no RV contour: the standard insertion angles are assumed


@dataclass(frozen=True)
class Problem:
    """One thing that could not be read or analysed: where (a path, series or slice UID) and why."""

    where: str
    message: str


@dataclass(frozen=True)
class ValueSummary:
    """Map values inside one region (ms)."""

    mean_ms: float
    median_ms: float
    sd_ms: float
    n_pixels: int
    area_mm2: float

    @classmethod
    def of(cls, values: RegionValues) -> ValueSummary:
        return cls(float(values.mean), float(values.median), float(values.sd), int(values.n_pixels),
                   float(values.area_mm2))


@dataclass(frozen=True)
class ReaderScore:
    """One reader's myocardium against the slice's reference."""

    reference: str
    dice_myocardium: float
    iou_myocardium: float
    dice_cavity: float
    hausdorff_mm: float
    mean_surface_distance_mm: float
    map_difference_ms: float  # reader's mean minus the reference's, each over its own myocardium (T1 or T2)
    wall_thickness_difference_mm: float
    error_mode: str

    @classmethod
    def of(cls, result: TraineeScore, reference: str) -> ReaderScore:
        """The score of :func:`inference.trainee_scoring.score_trainee` against ``reference``."""
        return cls(
            reference=reference,
            dice_myocardium=result.dice_myocardium,
            iou_myocardium=result.iou_myocardium,
            dice_cavity=result.dice_cavity,
            hausdorff_mm=result.hausdorff_mm,
            mean_surface_distance_mm=result.mean_surface_distance_mm,
            map_difference_ms=result.t1_difference_ms,
            wall_thickness_difference_mm=result.wall_thickness_difference_mm,
            error_mode=result.error_mode.value,
        )


@dataclass(frozen=True)
class ReaderResult:
    """One reader's contours on one map slice: values, AHA segment values and score."""

    reader: str
    source_format: str
    myocardium: ValueSummary | None
    segments: dict[int, ValueSummary]
    insertion: InsertionSource | None
    score: ReaderScore | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SliceResult:
    """One map slice and every reader's result on it."""

    map_kind: MapKind
    map_source: str  # "scanner" or the reconstruction method
    series_instance_uid: str
    sop_instance_uid: str
    series_description: str
    level: AhaLevel
    level_from: str  # "series description" or "assumed"
    slice_position_mm: float
    reference: ReferenceSource
    reference_readers: tuple[str, ...]
    readers: tuple[ReaderResult, ...]
    notes: tuple[str, ...] = ()
    model: SliceFigures | None = None  # the models' analysis and its verdict (``banner``)


@dataclass(frozen=True)
class AnalysisReport:
    """Everything :func:`analyze_paths` found, in slice order."""

    files_read: int
    non_dicom_skipped: int
    gold_standard: str | None
    slices: tuple[SliceResult, ...]
    problems: tuple[Problem, ...] = field(default=())

    @property
    def readers(self) -> tuple[str, ...]:
        """Every reader seen on any slice, sorted."""
        return tuple(sorted({r.reader for s in self.slices for r in s.readers}))

    def to_json_dict(self) -> dict[str, object]:
        """The report as JSON-ready nested dicts and lists (enums by value)."""
        return _jsonable(self)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)  # identity: a slice is one image; its arrays have no truth value
class _MapSlice:
    """A map image and where it lies."""

    kind: MapKind
    source: str
    map_ms: np.ndarray
    geometry: ImageGeometry
    series_instance_uid: str
    series_description: str
    raw: RawImages | None = None  # the raw IR images of the slice and the fit's R2, for motion detection
    prepared: PreparedSlice | None = None  # the slice's maps as the map job prepares them


def analyze_paths(
    paths: Sequence[Path | str],
    *,
    gold_standard: str | None,
    on_file: Callable[[Path], None] | None = None,
    models: Callable[[], ModelSet] | None = None,
    report_t1: str = "scanner",
) -> AnalysisReport:
    """Analyse the DICOM files under ``paths`` without the network.

    Parameters
    ----------
    paths
        Files and folders; folders are searched recursively.
    gold_standard
        The reader whose contours are the reference; None for the STAPLE consensus of the expert readers.
    on_file
        Called after each file is read (for progress display).
    models
        Gives the models that analyse every map slice (segmentation, contours, AHA values, motion, QC); None
        leaves the models out.
    report_t1
        ``"scanner"`` or ``"corrected"``: the T1 estimate a reconstructed map reports (``[mapping] report_t1``).

    Returns
    -------
    AnalysisReport
        Per-slice, per-reader figures and the problems met; nothing is raised for bad input files or series.
    """
    files = files_under(paths)
    problems: list[Problem] = []
    datasets: list[tuple[Path, FileDataset]] = []
    skipped = 0
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            if "SOPClassUID" not in ds:  # a preamble and a few bytes parse, but hold no instance
                raise InvalidDicomError("no SOP Class UID")
            datasets.append((path, ds))
        except (InvalidDicomError, OSError, ValueError, EOFError) as error:
            skipped += 1
            LOGGER.debug("%s is not DICOM: %s", path, error)
        if on_file is not None:
            on_file(path)
    if skipped:
        LOGGER.warning("%d of %d files are not DICOM and were skipped", skipped, len(files))

    series: dict[str, list[Dataset]] = {}
    for path, ds in datasets:
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            problems.append(Problem(str(path), "no SeriesInstanceUID; expected one to group the file"))
            continue
        series.setdefault(uid, []).append(ds)
    roles = {uid: classify(instances[0]) for uid, instances in series.items()}

    map_slices = _map_slices(series, roles, problems, report_t1=report_t1)
    geometries = [m.geometry for m in map_slices]
    readers = _reader_masks(series, roles, geometries, problems)
    results: list[SliceResult] = []
    for map_slice in map_slices:
        try:
            result = _analyse_slice(map_slice, readers, gold_standard)
            if models is not None:
                result = replace(result, model=_model_analysis(len(results), map_slice, result.level, models, problems))
            results.append(result)
        except (AnalysisError, MyomapError) as error:
            problems.append(Problem(map_slice.geometry.sop_instance_uid, f"{type(error).__name__}: {error}"))
    return AnalysisReport(
        files_read=len(datasets),
        non_dicom_skipped=skipped,
        gold_standard=gold_standard,
        slices=tuple(results),
        problems=tuple(problems),
    )


def files_under(paths: Iterable[Path | str]) -> list[Path]:
    """The files :func:`analyze_paths` reads: given files, and every file under given folders (hidden ones left out)."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            LOGGER.warning("%s is neither a file nor a folder; ignored", path)
    return files


def _map_slices(series: dict[str, list[Dataset]], roles: dict[str, SeriesRole], problems: list[Problem], *,
                report_t1: str) -> list[_MapSlice]:
    """Every slice of every analysis unit, its map chosen as the map job chooses it."""
    mapping = [
        MappingSeries(index, 0, roles[uid], uid, tuple(instances))
        for index, (uid, instances) in enumerate(series.items()) if roles[uid] in KIND_OF_ROLE
    ]
    slices: list[_MapSlice] = []
    for unit in mapping_units(mapping):
        where = f"series {', '.join(m.series_instance_uid for m in unit)}"
        kind = MapKind(unit[0].kind)
        description = unit_description(str(m.headers[0].get("SeriesDescription", "")) for m in unit)
        try:
            unit_slices = load_unit([(m.role, m.headers) for m in unit])
        except (MyomapError, ValueError) as error:
            problems.append(Problem(where, f"cannot load: {type(error).__name__}: {error}"))
            continue
        for item in unit_slices:
            try:
                prepared = prepare_slice(item, kind, report_t1=report_t1)
            except (AnalysisError, MyomapError, ValueError) as error:
                problems.append(Problem(where, f"cannot reconstruct a map: {type(error).__name__}: {error}"))
                continue
            scanner = reference_image(prepared)
            if scanner is not None:
                geometry = ImageGeometry.from_dataset(scanner)
                series_uid = str(scanner.SeriesInstanceUID)
            else:
                assert item.stack is not None and item.raw is not None
                geometry = ImageGeometry.from_dataset(item.stack.sources[0], item.stack.frame_numbers[0] - 1)
                series_uid = item.raw.series_instance_uid
            slices.append(_MapSlice(kind, prepared.maps.source, prepared.maps.primary_ms, geometry, series_uid,
                                    description, prepared.raw, prepared))
    slices.sort(key=lambda m: (m.kind.value, m.series_description, _position_along_normal(m.geometry)))
    return slices


def _model_analysis(index: int, map_slice: _MapSlice, level: AhaLevel, models: Callable[[], ModelSet],
                    problems: list[Problem]) -> SliceFigures | None:
    """The models' analysis of one map slice and its verdict in words, or None with a problem saying why."""
    try:
        analysis = analyse_slice(map_slice.map_ms, map_slice.kind, map_slice.geometry.pixel_spacing_mm, level,
                                 models(), raw=map_slice.raw)
    except (AnalysisError, MyomapError) as error:
        problems.append(Problem(map_slice.geometry.sop_instance_uid, f"models: {type(error).__name__}: {error}"))
        return None
    figures = SliceFigures.of(index, analysis, banner_text(analysis))
    if map_slice.prepared is not None:
        add_source_figures(figures, map_slice.prepared, analysis, compare_maps(map_slice.prepared.maps, analysis))
    return figures


def _reader_masks(series: dict[str, list[Dataset]], roles: dict[str, SeriesRole],
                  geometries: list[ImageGeometry], problems: list[Problem]) -> dict[str, ReaderMasks]:
    """Every reader's masks on the map images; a reader's SEG is preferred over its RTSTRUCT of the same image."""
    contour_objects = [
        (role, ds) for uid, instances in series.items() for ds in instances
        if (role := roles[uid]) in (SeriesRole.SEG, SeriesRole.RTSTRUCT)
    ]
    if contour_objects and not geometries:
        problems.append(Problem("contours", f"{len(contour_objects)} contour objects but no map image to place "
                                            "them on; expected a T1/T2 map or raw mapping series"))
        return {}
    return place_contours(contour_objects, geometries, problems)


def place_contours(contour_objects: Iterable[tuple[SeriesRole, Dataset]], geometries: Sequence[ImageGeometry],
                   problems: list[Problem]) -> dict[str, ReaderMasks]:
    """Every reader's masks on the map images from its SEG and RTSTRUCT objects (``role``, dataset); a reader's
    SEG is preferred over its RTSTRUCT of the same image. Objects that cannot be placed are added to ``problems``."""
    readers: dict[str, ReaderMasks] = {}
    for role, ds in sorted(contour_objects, key=lambda item: item[0] is not SeriesRole.SEG):
        try:
            masks = read_seg(ds, geometries) if role is SeriesRole.SEG else read_rtstruct(ds, geometries)
        except (MyomapError, ValueError) as error:
            where = f"{role.value} {ds.get('SOPInstanceUID', '?')}"
            problems.append(Problem(where, f"{type(error).__name__}: {error}"))
            continue
        known = readers.get(masks.reader)
        if known is None:
            readers[masks.reader] = masks
            continue
        # Only images the reader has not contoured yet are taken from a further object (SEG and RTSTRUCT of
        # the same drawing are common); the first object read wins where they overlap.
        drawn_on = set(known.sop_instance_uids)
        added = {
            label: {uid: mask for uid, mask in by_image.items() if uid not in drawn_on}
            for label, by_image in masks.masks.items()
        }
        if not any(added.values()):
            continue
        merged = {label: dict(by_image) for label, by_image in known.masks.items()}
        for label, by_image in added.items():
            merged.setdefault(label, {}).update(by_image)
        formats = known.source_format if masks.source_format in known.source_format else \
            f"{known.source_format} + {masks.source_format}"
        readers[masks.reader] = ReaderMasks(masks.reader, merged, formats)
    return readers


def _analyse_slice(map_slice: _MapSlice, readers: dict[str, ReaderMasks], gold_standard: str | None) -> SliceResult:
    uid = map_slice.geometry.sop_instance_uid
    level, level_from = level_from_description(map_slice.series_description)
    notes: list[str] = []
    drawn = {
        name: (myo.astype(bool), cavity_mask(masks, uid, myo), masks)
        for name, masks in sorted(readers.items())
        if (myo := masks.mask(Structure.MYOCARDIUM, uid)) is not None and myo.any()
    }
    reference, reference_readers, reference_masks = _reference(drawn, gold_standard, notes)
    results = []
    for name, (myocardium, cavity, masks) in drawn.items():
        results.append(_reader_result(name, myocardium, cavity, masks, map_slice, level, reference_masks,
                                      reference, gold_standard))
    defaults = [r.reader for r in results if r.insertion is InsertionSource.DEFAULT_ANGLES]
    if defaults:
        notes.append(f"no RV contour from {', '.join(defaults)}: AHA segments use the default RV insertion angles")
    if level_from == ASSUMED:
        notes.append(f"slice level not in the series description; AHA segments assume {level.value}")
    return SliceResult(
        map_kind=map_slice.kind,
        map_source=map_slice.source,
        series_instance_uid=map_slice.series_instance_uid,
        sop_instance_uid=uid,
        series_description=map_slice.series_description,
        level=level,
        level_from=level_from,
        slice_position_mm=_position_along_normal(map_slice.geometry),
        reference=reference,
        reference_readers=reference_readers,
        readers=tuple(results),
        notes=tuple(notes),
    )


def _reference(
    drawn: dict[str, tuple[np.ndarray, np.ndarray, ReaderMasks]], gold_standard: str | None, notes: list[str]
) -> tuple[ReferenceSource, tuple[str, ...], tuple[np.ndarray, np.ndarray] | None]:
    """The gold-standard reader's masks, else the STAPLE consensus of myocardium and cavity of the experts."""
    if not drawn:
        notes.append("no reader contoured the myocardium on this map")
        return ReferenceSource.NONE, (), None
    if gold_standard is not None:
        if gold_standard in drawn:
            myocardium, cavity, _ = drawn[gold_standard]
            return ReferenceSource.GOLD_STANDARD, (gold_standard,), (myocardium, cavity)
        notes.append(f"gold-standard reader {gold_standard!r} drew no myocardium here; readers not scored")
        return ReferenceSource.NONE, (), None
    experts = [name for name in drawn if is_expert(name)]
    if len(experts) < MIN_EXPERTS_FOR_CONSENSUS:
        notes.append(f"{len(experts)} expert reader(s) here, at least {MIN_EXPERTS_FOR_CONSENSUS} needed for a "
                     "consensus; readers not scored")
        return ReferenceSource.NONE, (), None
    myocardium = consensus([drawn[name][0] for name in experts], method="staple").mask
    cavity = consensus([drawn[name][1] for name in experts], method="staple").mask
    return ReferenceSource.STAPLE, tuple(experts), (myocardium, cavity)


def _reader_result(
    name: str,
    myocardium: np.ndarray,
    cavity: np.ndarray,
    masks: ReaderMasks,
    map_slice: _MapSlice,
    level: AhaLevel,
    reference_masks: tuple[np.ndarray, np.ndarray] | None,
    reference: ReferenceSource,
    gold_standard: str | None,
) -> ReaderResult:
    uid = map_slice.geometry.sop_instance_uid
    spacing = map_slice.geometry.pixel_spacing_mm
    notes: list[str] = []
    values = ValueSummary.of(region_values(map_slice.map_ms, myocardium, pixel_spacing_mm=spacing))
    segments: dict[int, ValueSummary] = {}
    insertion: InsertionSource | None = None
    rv = _rv_mask(masks, uid)
    try:
        centre = _centre_px(myocardium, cavity)
        anterior, inferior = rv_insertion_points(myocardium, rv, centre, pixel_spacing_mm=spacing)
        insertion = InsertionSource.RV_CONTOUR if rv is not None and rv.any() else InsertionSource.DEFAULT_ANGLES
        segment_map = aha_segments(myocardium, centre, anterior, level, inferior_insertion_px=inferior,
                                   pixel_spacing_mm=spacing)
        segments = {
            label: ValueSummary.of(v)
            for label, v in segment_values(map_slice.map_ms, segment_map, pixel_spacing_mm=spacing).items()
        }
    except AnalysisError as error:
        notes.append(f"no AHA segments: {error}")
    score = None
    if reference_masks is not None and name != gold_standard:
        if not cavity.any():
            notes.append("no cavity contour; not scored")
        else:
            try:
                result = score_trainee(myocardium, cavity, *reference_masks, map_slice.map_ms, spacing,
                                       reference_name=reference.value)
                score = ReaderScore.of(result, reference.value)
            except AnalysisError as error:
                notes.append(f"not scored: {error}")
    return ReaderResult(name, masks.source_format, values, segments, insertion, score, tuple(notes))


def cavity_mask(masks: ReaderMasks, sop_instance_uid: str, myocardium: np.ndarray) -> np.ndarray:
    """The reader's cavity on one image, else the hole its myocardial ring encloses."""
    cavity = masks.mask(Structure.CAVITY, sop_instance_uid)
    if cavity is not None:
        return cavity.astype(bool) & ~myocardium.astype(bool)
    return ndimage.binary_fill_holes(myocardium) & ~myocardium.astype(bool)


def _rv_mask(masks: ReaderMasks, uid: str) -> np.ndarray | None:
    for label, by_image in masks.masks.items():
        if " ".join("".join(c if c.isalnum() else " " for c in label.lower()).split()) in RV_LABELS:
            mask = by_image.get(uid)
            if mask is not None:
                return mask.astype(bool)
    return None


def _centre_px(myocardium: np.ndarray, cavity: np.ndarray) -> tuple[float, float]:
    """(x, y) centroid of the cavity, or of the filled epicardium when the cavity is empty."""
    region = cavity if cavity.any() else ndimage.binary_fill_holes(myocardium)
    rows, columns = np.nonzero(region)
    return float(columns.mean()), float(rows.mean())


def _position_along_normal(geometry: ImageGeometry) -> float:
    return float(np.dot(geometry.normal, geometry.image_position_patient_mm))


def _jsonable(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, SliceFigures):
        return value.model_dump(mode="json")
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if hasattr(value, "__dataclass_fields__"):
        out: dict[str, object] = {name: _jsonable(getattr(value, name)) for name in value.__dataclass_fields__}
        if isinstance(value, AnalysisReport):
            out["readers"] = list(value.readers)
        return out
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value
