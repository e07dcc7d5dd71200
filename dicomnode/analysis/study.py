"""Offline analysis of DICOM files or folders: maps per slice, every reader's myocardial values, trainee scores.

The files are read from disk, grouped by series and classified (:func:`dicomnode.io.classify.classify`). The
mapping series are grouped into analysis units and each slice's map is chosen as the map job chooses it
(:mod:`dicomnode.io.slice_groups`, :mod:`dicomnode.analysis.map_sources`): the scanner's map of the slice when there
is one, else the node's reconstruction from the raw images, so that both give the same slices and values.
Contour objects (DICOM-SEG, RTSTRUCT) are
placed on the map images; per slice and reader the global and AHA segment values are measured, the reader's
reference is chosen by :func:`dicomnode.analysis.reference.decide_reference` from the readers who contoured the slice
(a gold standard, the experts' or the team's STAPLE; the consensus model's contour is drawn by the reader job) and
the reader is scored against it. Problems with one file or series are collected in the report, never raised.
:func:`analyze_datasets` does the same on datasets already read and also hands back the placed masks and the map
images, so that the reader job reads each file once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
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
from dicomnode.analysis.reference import (
    CasePolicy,
    ReaderInfo,
    ReferenceChoice,
    ReferenceSource,
    decide_reference,
    role_by_convention,
)
from dicomnode.errors import MyomapError
from dicomnode.io.classify import classify
from dicomnode.io.contours import ImageGeometry, ReaderMasks, Structure, read_rtstruct, read_seg
from dicomnode.io.slice_groups import KIND_OF_ROLE, MappingSeries, mapping_units
from dicomnode.io.slice_level import ASSUMED, level_from_description
from dicomnode.io.t1_protocol import field_strength_t
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


#: Told the progress of :func:`analyze_paths` as (stage, done, total): stage "reading" after each file, "maps" after
#: each analysis unit's maps are prepared (reconstructions fitted), "slices" after each map slice is analysed.
ProgressCallback = Callable[[str, int, int], None]


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
    reference: ReferenceSource = ReferenceSource.NONE  # what this reader was (or would be) scored against
    reference_readers: tuple[str, ...] = ()
    reference_reason: str = ""


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
    reference: ReferenceSource  # the reference most of the slice's readers were scored against (each has its own)
    reference_readers: tuple[str, ...]
    readers: tuple[ReaderResult, ...]
    notes: tuple[str, ...] = ()
    model: SliceFigures | None = None  # the models' analysis and its verdict (``banner``)
    series_number: int | None = None  # of the map's series (the raw series for a reconstruction)


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
    field_strength_t: float | None = None  # the scanner's, for the plausible myocardial T1
    series_number: int | None = None
    source_image: Dataset | None = None  # the map image itself (a scanner's or stored map); None for a reconstruction


@dataclass(frozen=True)
class ReferenceRule:
    """The inputs of :func:`dicomnode.analysis.reference.decide_reference` besides the readers on a slice."""

    gold_standard: str | None = None  # the site's ([scoring] gold_standard)
    case: CasePolicy | None = None  # the training case's configured reference
    auto_consensus: bool = True
    reader_info: Callable[[str], ReaderInfo] = role_by_convention  # role and team of a reader

    def decide(self, reader: str, on_slice: Sequence[str]) -> ReferenceChoice:
        available = {name: self.reader_info(name) for name in on_slice}
        return decide_reference(reader, available, self.case, auto_consensus=self.auto_consensus,
                                gold_standard=self.gold_standard)


@dataclass(frozen=True)
class StudyAnalysis:
    """What :func:`analyze_datasets` found, with what the reader job draws its outputs from."""

    report: AnalysisReport
    readers: dict[str, ReaderMasks]  # every reader's masks as placed on the maps
    map_images: dict[str, Dataset]  # SOP Instance UID of a slice's map image -> the image


def analyze_paths(
    paths: Sequence[Path | str],
    *,
    gold_standard: str | None,
    on_file: Callable[[Path], None] | None = None,
    models: Callable[[], ModelSet] | None = None,
    report_t1: str = "scanner",
    on_progress: ProgressCallback | None = None,
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
    on_progress
        Told each stage's progress (:data:`ProgressCallback`), for a display of the whole analysis.

    Returns
    -------
    AnalysisReport
        Per-slice, per-reader figures and the problems met; nothing is raised for bad input files or series.
    """
    datasets, skipped = read_files(files_under(paths), on_file=on_file, on_progress=on_progress)
    return analyze_datasets(datasets, rule=ReferenceRule(gold_standard=gold_standard), models=models,
                            report_t1=report_t1, on_progress=on_progress, non_dicom_skipped=skipped).report


def read_files(files: Sequence[Path], *, on_file: Callable[[Path], None] | None = None,
               on_progress: ProgressCallback | None = None) -> tuple[list[tuple[Path, Dataset]], int]:
    """Every DICOM instance among ``files`` with its path, and how many files were not DICOM."""
    datasets: list[tuple[Path, Dataset]] = []
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
        if on_progress is not None:
            on_progress("reading", len(datasets) + skipped, len(files))
    if skipped:
        LOGGER.warning("%d of %d files are not DICOM and were skipped", skipped, len(files))
    return datasets, skipped


def analyze_datasets(
    datasets: Sequence[tuple[Path | str, Dataset]],
    *,
    rule: ReferenceRule,
    models: Callable[[], ModelSet] | None = None,
    report_t1: str = "scanner",
    on_progress: ProgressCallback | None = None,
    non_dicom_skipped: int = 0,
) -> StudyAnalysis:
    """:func:`analyze_paths` on instances already read: (where each came from, the dataset) pairs; the reference
    of each reader on each slice chosen by ``rule``. Also returns the placed masks and the map images."""
    problems: list[Problem] = []
    series: dict[str, list[Dataset]] = {}
    for path, ds in datasets:
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            problems.append(Problem(str(path), "no SeriesInstanceUID; expected one to group the file"))
            continue
        series.setdefault(uid, []).append(ds)
    roles = {uid: classify(instances[0]) for uid, instances in series.items()}

    map_slices = _map_slices(series, roles, problems, report_t1=report_t1, on_progress=on_progress)
    geometries = [m.geometry for m in map_slices]
    readers = _reader_masks(series, roles, geometries, problems)
    results: list[SliceResult] = []
    for done, map_slice in enumerate(map_slices, start=1):
        try:
            result = _analyse_slice(map_slice, readers, rule)
            if models is not None:
                result = replace(result, model=_model_analysis(len(results), map_slice, result.level, models, problems))
            results.append(result)
        except (AnalysisError, MyomapError) as error:
            problems.append(Problem(map_slice.geometry.sop_instance_uid, f"{type(error).__name__}: {error}"))
        if on_progress is not None:
            on_progress("slices", done, len(map_slices))
    report = AnalysisReport(
        files_read=len(datasets),
        non_dicom_skipped=non_dicom_skipped,
        gold_standard=rule.gold_standard,
        slices=tuple(results),
        problems=tuple(problems),
    )
    images = {m.geometry.sop_instance_uid: m.source_image for m in map_slices if m.source_image is not None}
    return StudyAnalysis(report, readers, images)


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
                report_t1: str, on_progress: ProgressCallback | None = None) -> list[_MapSlice]:
    """Every slice of every analysis unit, its map chosen as the map job chooses it."""
    mapping = [
        MappingSeries(index, 0, roles[uid], uid, tuple(instances))
        for index, (uid, instances) in enumerate(series.items()) if roles[uid] in KIND_OF_ROLE
    ]
    slices: list[_MapSlice] = []
    units = mapping_units(mapping)
    for done, unit in enumerate(units, start=1):
        if on_progress is not None:
            on_progress("maps", done - 1, len(units))
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
                field_t = field_strength_t(scanner)
                number = scanner.get("SeriesNumber")
            else:
                assert item.stack is not None and item.raw is not None
                geometry = ImageGeometry.from_dataset(item.stack.sources[0], item.stack.frame_numbers[0] - 1)
                series_uid = item.raw.series_instance_uid
                field_t = field_strength_t(item.stack.sources[0])
                number = item.stack.sources[0].get("SeriesNumber")
            slices.append(_MapSlice(kind, prepared.maps.source, prepared.maps.primary_ms, geometry, series_uid,
                                    description, prepared.raw, prepared, field_t,
                                    int(number) if number not in (None, "") else None, scanner))
    if on_progress is not None and units:
        on_progress("maps", len(units), len(units))
    slices.sort(key=lambda m: (m.kind.value, m.series_description, _position_along_normal(m.geometry)))
    return slices


def _model_analysis(index: int, map_slice: _MapSlice, level: AhaLevel, models: Callable[[], ModelSet],
                    problems: list[Problem]) -> SliceFigures | None:
    """The models' analysis of one map slice and its verdict in words, or None with a problem saying why."""
    try:
        analysis = analyse_slice(map_slice.map_ms, map_slice.kind, map_slice.geometry.pixel_spacing_mm, level,
                                 models(), raw=map_slice.raw, field_strength_t=map_slice.field_strength_t)
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
        # A malformed object from the network (an attribute missing, of the wrong type or length) is one problem
        # of that object, whatever the reader trips over, never a failure of the other readers' scoring.
        except (MyomapError, ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
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


def _analyse_slice(map_slice: _MapSlice, readers: dict[str, ReaderMasks], rule: ReferenceRule) -> SliceResult:
    uid = map_slice.geometry.sop_instance_uid
    level, level_from = level_from_description(map_slice.series_description)
    notes: list[str] = []
    drawn = {
        name: (myo.astype(bool), cavity_mask(masks, uid, myo), masks)
        for name, masks in sorted(readers.items())
        if (myo := masks.mask(Structure.MYOCARDIUM, uid)) is not None and myo.any()
    }
    if not drawn:
        notes.append("no reader contoured the myocardium on this map")
    choices = {name: rule.decide(name, list(drawn)) for name in drawn}
    reference_masks: dict[tuple[ReferenceSource, tuple[str, ...]], tuple[np.ndarray, np.ndarray] | None] = {}
    results = []
    for name, (myocardium, cavity, masks) in drawn.items():
        choice = choices[name]
        key = (choice.source, choice.readers)
        if key not in reference_masks:
            reference_masks[key] = _reference_masks(choice, drawn)
        results.append(_reader_result(name, myocardium, cavity, masks, map_slice, level, reference_masks[key],
                                      choice))
    reference = _slice_reference(choices, rule)
    if reference.source is ReferenceSource.NONE and drawn:
        notes.append(f"no reference: {reference.reason}; readers not scored")
    elif reference.source is ReferenceSource.CONSENSUS_MODEL:
        # Drawn from each reader's own contour by the reader job; an analysis of files alone leaves it out.
        notes.append(f"reference: the {reference.reason}")
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
        reference=reference.source,
        reference_readers=reference.readers,
        readers=tuple(results),
        notes=tuple(notes),
        series_number=map_slice.series_number,
    )


def _slice_reference(choices: dict[str, ReferenceChoice], rule: ReferenceRule) -> ReferenceChoice:
    """The reference the most readers of the slice were scored against (the first reader's on a tie); with no
    reader scored, what a reader with no standing (no team, not the gold standard) would be."""
    scored = [choice for name, choice in choices.items() if choice.scores(name)]
    if not scored:
        return rule.decide("", list(choices))
    counts: dict[tuple[ReferenceSource, tuple[str, ...]], int] = {}
    for choice in scored:
        counts[(choice.source, choice.readers)] = counts.get((choice.source, choice.readers), 0) + 1
    return max(scored, key=lambda choice: counts[(choice.source, choice.readers)])


_Drawn = dict[str, tuple[np.ndarray, np.ndarray, ReaderMasks]]  # reader -> myocardium, cavity, its masks


def _reference_masks(choice: ReferenceChoice, drawn: _Drawn) -> tuple[np.ndarray, np.ndarray] | None:
    """Myocardium and cavity of a reference made of readers' contours: the gold standard's own, or the STAPLE of
    the experts' or the team's; None for the consensus model's (drawn by the reader job) or none."""
    if choice.source is ReferenceSource.GOLD_STANDARD:
        myocardium, cavity, _ = drawn[choice.readers[0]]
        return myocardium, cavity
    if choice.source in (ReferenceSource.STAPLE, ReferenceSource.TEAM_AVERAGE):
        return reference_staple([(drawn[name][0], drawn[name][1]) for name in choice.readers])
    return None


def reference_staple(masks: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The STAPLE consensus of the myocardium and of the cavity of several readers."""
    myocardium = consensus([m for m, _ in masks], method="staple").mask
    cavity = consensus([c for _, c in masks], method="staple").mask
    return myocardium, cavity


def _reader_result(
    name: str,
    myocardium: np.ndarray,
    cavity: np.ndarray,
    masks: ReaderMasks,
    map_slice: _MapSlice,
    level: AhaLevel,
    reference_masks: tuple[np.ndarray, np.ndarray] | None,
    choice: ReferenceChoice,
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
    if reference_masks is not None and choice.scores(name):
        if not cavity.any():
            notes.append("no cavity contour; not scored")
        else:
            try:
                result = score_trainee(myocardium, cavity, *reference_masks, map_slice.map_ms, spacing,
                                       reference_name=choice.source.value)
                score = ReaderScore.of(result, choice.source.value)
            except AnalysisError as error:
                notes.append(f"not scored: {error}")
    elif choice.source is ReferenceSource.NONE:
        notes.append(f"not scored: {choice.reason}")
    return ReaderResult(name, masks.source_format, values, segments, insertion, score, tuple(notes),
                        choice.source, choice.readers, choice.reason)


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
