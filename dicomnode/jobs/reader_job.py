"""The reader-score job: score a received contour series (DICOM-SEG or RTSTRUCT) and send the comparison back.

When a reader's SEG or RTSTRUCT series is complete the job gathers what the study holds: the T1/T2 map images
the contours are drawn on (the scanner's map series, else the node's own MR maps of the study) and the other
readers' contour series, each file read once. :func:`dicomnode.analysis.study.analyze_datasets` places every contour
on the maps, chooses each reader's reference with the one rule (:func:`dicomnode.analysis.reference.
decide_reference`, fed the study's training case and the readers' roles by :mod:`dicomnode.jobs.reference_inputs`)
and scores the reader on each slice it contoured; the outputs are drawn from the masks it placed. Where the
reference is the consensus model (automatic, no gold standard or expert consensus yet; or the case's policy) the
model draws it from the reader's own contour and the map (:func:`inference.slice_analysis.reader_consensus`),
scored as the offline analysis scores.

Per scored slice the job writes, as new series of the study, a comparison SR (the figures and the reader's
contours) and a Secondary Capture with the reader's and the reference's contours over the map; a slice that
could not be scored gets a Secondary Capture saying why. It records one :class:`db.models.Result` (kind
``reader_score``) whose summary holds figures and the pseudonymous reader label, never patient data.

Contours that arrive before the map they lie on (a PACS forwards a study's series in any order) do not fail the
job: it is marked WAITING with the reason (:func:`dicomnode.jobs.claims.mark_waiting`) and queued again when a map of
the study arrives (:func:`dicomnode.jobs.creation.wake_waiting_jobs`); a job whose map never comes stays WAITING.

Durability and exactly-once follow :mod:`dicomnode.jobs.map_job`: the job row is claimed (QUEUED -> RUNNING), output
UIDs derive from the job key so a re-run rewrites the same files, and the result, its transfers and the job's
DONE state are committed in one transaction.

Each result also records the digest of the reference the study offered the reader when the job ran
(:func:`dicomnode.jobs.rescoring.study_reference`). When a gold standard or further experts arrive after a reader was
scored, :func:`dicomnode.jobs.rescoring.requeue_rescoring` queues a further job of the series revision keyed by the new
reference: it writes a new SR and overlay (new UIDs from its key) and records a new result; the earlier ones stay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from scipy import ndimage
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from config.settings import Output
from db.models import Instance, Job, JobState, ReaderRole, Result, Series, SeriesRole
from db.readers import register_reader
from db.session import session_scope
from dicomnode.analysis.reference import CONSENSUS_MODEL_REFERENCE, is_expert
from dicomnode.analysis.study import (
    AnalysisReport,
    ReaderResult,
    ReaderScore,
    ReferenceSource,
    SliceResult,
    StudyAnalysis,
    analyze_datasets,
    cavity_mask,
    reference_staple,
)
from dicomnode.errors import MyomapError
from dicomnode.io.contours import ImageGeometry, ReaderMasks, Structure, reader_name
from dicomnode.io.contours.errors import UnknownReaderError, UnresolvedReferenceError
from dicomnode.io.unit_loader import map_values_ms
from dicomnode.jobs.claims import JobOutcome, claim_job, claimed_rows, mark_done, mark_failed, mark_waiting
from dicomnode.jobs.creation import JobKind, reference_digest_of
from dicomnode.jobs.errors import JobError
from dicomnode.jobs.outputs import ALGORITHM_VERSION, OutputSeries, OutputWriter, output_uid
from dicomnode.jobs.programme_figures import peer_dice, programme_figures, write_overlay_png
from dicomnode.jobs.queue import yield_to_console
from dicomnode.jobs.reference_inputs import CONVENTION, StudyReferenceInputs, reference_inputs
from dicomnode.jobs.rescoring import (
    ContourObject,
    StudyReference,
    reader_label,
    study_contours,
    study_reference,
)
from dicomnode.jobs.storage_full import fail_for_full_storage, is_storage_full
from dicomnode.jobs.trainee_report import send_trainee_report
from dicomnode.net import scu
from inference.contour_fit import border_contour
from inference.errors import AnalysisError
from inference.mapping import MapKind
from inference.model_set import ModelSet
from inference.slice_analysis import reader_consensus
from inference.trainee_scoring import score_trainee
from reports.result_summary import (
    READER_SCORE_KIND,
    MapResultSummary,
    ReaderResultSummary,
    ReaderSliceFigures,
    ResultOutputs,
    read_summary,
    rounded,
    summary_json,
)

LOGGER = logging.getLogger(__name__)

RESULT_KIND = READER_SCORE_KIND
_MAP_ROLES = (SeriesRole.T1_MAP, SeriesRole.T2_MAP)
_CONTOUR_ROLES = (SeriesRole.SEG, SeriesRole.RTSTRUCT)
_MAP_JOB_KINDS = (JobKind.T1_MAP.value, JobKind.T2_MAP.value)
#: What the overlays' series holds, on a series list beside the reader comparison SR ("myomap reader comparison").
READER_SC_DESCRIPTION = "myomap reader comparison SC"
#: At most this many of the analysis' problems go into the result's summary.
MAX_PROBLEMS_IN_SUMMARY = 20


class ReaderJobError(JobError):
    """The reader's contours cannot be compared at all (no reader name; no map image they lie on, yet)."""


class MapNotStoredError(ReaderJobError):
    """None of the reader's contours lies on a map image the study holds yet: the job waits for the map."""


class ModelUnavailableError(ReaderJobError):
    """The consensus model cannot be loaded; slices without a reference stay unscored."""


@dataclass(frozen=True)
class ClaimedReaderJob:
    """What a running reader-score job needs from the database, read once when the job is claimed."""

    job_id: int
    key: str
    series_id: int
    series_revision: int
    series_number: int | None
    study_id: int
    study_instance_uid: str
    contour_paths: tuple[Path, ...]  # the job's own SEG or RTSTRUCT series
    contour_sop_instance_uids: tuple[str, ...]  # of the job's own series' instances, as stored
    map_paths: tuple[Path, ...]  # the study's T1/T2 map images
    other_contours: tuple[ContourObject, ...]  # the study's other SEG and RTSTRUCT series' instances
    reference_inputs: StudyReferenceInputs = CONVENTION  # the study's training case and the readers' roles

    @property
    def other_contour_paths(self) -> tuple[Path, ...]:
        return tuple(item.path for item in self.other_contours)


@dataclass(frozen=True)
class SliceComparison:
    """One map slice the reader contoured: the analysis' figures, and the images the outputs show."""

    slice: SliceResult
    reader: ReaderResult
    score: ReaderScore | None  # None when the slice could not be scored; ``notes`` say why
    reference_readers: tuple[str, ...]
    map_source: Dataset  # the map image the reader drew on: what the outputs reference
    map_ms: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    reader_myocardium: np.ndarray
    reader_cavity: np.ndarray
    reference_myocardium: np.ndarray | None
    unscored_reason: str | None  # why a slice was not scored, in words for the reader; None when scored or when
    # the reader is the gold standard (nothing to compare)
    notes: tuple[str, ...]
    peer_dice: dict[str, float] = field(default_factory=dict)  # Dice against each other reader on the slice


@dataclass(frozen=True)
class ReaderComparison:
    """Everything the job found for one reader's contour series."""

    reader: str
    gold_standard: str | None
    slices: tuple[SliceComparison, ...]
    report: AnalysisReport
    reference: StudyReference  # what the study offered the reader: the digest its result records


@dataclass
class ComparisonFiles:
    """Files written per output kind, in the order they are sent."""

    sc: list[Path]
    sr: list[Path]
    overlay_of_slice: dict[int, Path] = field(default_factory=dict)  # index in ``comparison.slices`` -> PNG


def gold_standard_reader(settings: Settings) -> str | None:
    """The reader named as gold standard in ``[scoring] gold_standard``; None (experts' STAPLE) when empty."""
    return settings.scoring.gold_standard.strip() or None


def run_reader_job(
    job_id: int,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    enqueue_delivery: Callable[[int], object],
    models: Callable[[], ModelSet] | None = None,
) -> JobOutcome:
    """Run reader-score job ``job_id`` if it is queued: score, write the SR and overlay, record, queue transfers.

    ``models`` gives the consensus model for slices without a reference (default: the node's models, loaded once
    per process). Failures do not raise: the job is marked FAILED with the message, and the contour series too.
    Contours on no map the study holds yet leave the job WAITING with the reason (the series' state unchanged);
    where a map arrived while the job ran, it runs again at once, here, under the same lease.
    """
    while (outcome := _run_once(job_id, settings=settings, session_factory=session_factory,
                                enqueue_delivery=enqueue_delivery, models=models)) is None:
        LOGGER.info("job %d: a map of its study arrived while it ran; running it again", job_id)
    return outcome


def _run_once(
    job_id: int,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    enqueue_delivery: Callable[[int], object],
    models: Callable[[], ModelSet] | None,
) -> JobOutcome | None:
    """One claim and run of the job; None when it waited for a map that arrived meanwhile (it is QUEUED again)."""
    claimed = _claim(job_id, session_factory, settings.storage_root)
    if isinstance(claimed, JobOutcome):
        return claimed
    started = time.perf_counter()
    try:
        comparison = compare_reader(claimed, settings, models)
        yield_to_console()  # a map job that started meanwhile goes on alone
        files = write_comparison(comparison, claimed, settings.storage_root,
                                 reserve_mb=settings.storage.min_free_mb)
        yield_to_console()
        transfer_ids = _record_result(claimed, comparison, files, settings=settings, session_factory=session_factory)
    except MapNotStoredError as error:
        arrived = partial(_maps_arrived, claimed=claimed, storage_root=settings.storage_root)
        if mark_waiting(claimed, str(error), session_factory, study_id=claimed.study_id, arrived=arrived):
            return None
        LOGGER.info("job %d (%s) waits for a map: %s", job_id, RESULT_KIND, error)
        return JobOutcome.WAITING
    except Exception as error:  # any failure of one series must leave the node working
        if is_storage_full(error):  # the contours are fine: they are scored again once there is room
            fail_for_full_storage(claimed, error, session_factory)
            return JobOutcome.FAILED
        LOGGER.exception("job %d (%s) failed", job_id, RESULT_KIND)
        # A failed re-score leaves the series as its first score left it (done).
        mark_failed(claimed, f"{type(error).__name__}: {error}", session_factory,
                    fails_series=reference_digest_of(claimed.key) is None)
        return JobOutcome.FAILED
    # After the result's commit, so that the trainee's report holds this attempt too.
    transfer_ids += send_trainee_report(claimed, comparison, result_kind=RESULT_KIND, settings=settings,
                                        session_factory=session_factory)
    LOGGER.info(
        "job %d: reader %s scored on %d of %d slices in %.3f s, %d transfers", job_id, comparison.reader,
        sum(s.score is not None for s in comparison.slices), len(comparison.slices), time.perf_counter() - started,
        len(transfer_ids),
    )
    for transfer_id in transfer_ids:
        enqueue_delivery(transfer_id)
    return JobOutcome.DONE


def _claim(job_id: int, session_factory: sessionmaker[Session],
           storage_root: Path) -> ClaimedReaderJob | JobOutcome:
    """Move the job from QUEUED to RUNNING (only one caller succeeds) and read the study's files it needs."""
    with session_scope(session_factory) as session:
        job = claim_job(session, job_id)
        if isinstance(job, JobOutcome):
            return job
        series = job.series
        return ClaimedReaderJob(
            job_id=job.id,
            key=job.key,
            series_id=series.id,
            series_revision=job.series_revision,
            series_number=series.series_number,
            study_id=series.study_id,
            study_instance_uid=series.study.study_instance_uid,
            contour_paths=_stored(session, series, _CONTOUR_ROLES, storage_root, this_series=True),
            contour_sop_instance_uids=tuple(session.scalars(
                select(Instance.sop_instance_uid).where(Instance.series_id == series.id).order_by(Instance.id))),
            map_paths=_study_map_paths(session, series, storage_root),
            other_contours=tuple(item for series_id, items in study_contours(session, series.study_id,
                                                                              storage_root).items()
                                 if series_id != series.id for item in items),
            reference_inputs=reference_inputs(session, series.study.study_instance_uid),
        )


def _stored(session: Session, series: Series, roles: Sequence[SeriesRole], storage_root: Path, *,
            this_series: bool) -> tuple[Path, ...]:
    """The stored instances of ``series`` (``this_series``) or of the study's other series of ``roles``."""
    same = Series.id == series.id if this_series else Series.id != series.id
    paths = session.scalars(
        select(Instance.path).join(Series)
        .where(Series.study_id == series.study_id, Series.role.in_(roles), same)
        .order_by(Series.id, Instance.instance_number, Instance.id)
    ).all()
    return tuple(storage_root / path for path in paths)  # stored relative to the root


def _study_map_paths(session: Session, series: Series, storage_root: Path) -> tuple[Path, ...]:
    """The map images the study's contours lie on: the scanner's map series, else the node's own maps."""
    return _stored(session, series, _MAP_ROLES, storage_root, this_series=False) or \
        _node_map_paths(session, series, storage_root)


def _maps_arrived(session: Session, claimed: ClaimedReaderJob, storage_root: Path) -> bool:
    """Whether the study holds map images now that the claimed job did not read (it may be scored on them)."""
    series = session.get(Series, claimed.series_id)
    return series is not None and not set(_study_map_paths(session, series, storage_root)) <= set(claimed.map_paths)


def _node_map_paths(session: Session, series: Series, storage_root: Path) -> tuple[Path, ...]:
    """The node's own MR maps of the study (from its map jobs' results), for a study the scanner sent no maps of:
    readers then contour the maps the node sent out."""
    results = session.scalars(
        select(Result).join(Job).join(Series)
        .where(Series.study_id == series.study_id, Job.kind.in_(_MAP_JOB_KINDS), Job.state == JobState.DONE)
        .order_by(Result.id)
    ).all()
    paths: list[Path] = []
    for result in results:
        try:
            summary = read_summary(result.kind, result.summary)
        except ValidationError as error:
            LOGGER.warning("result %d: summary not readable, its maps are not used: %s", result.id, error)
            continue
        mr_series_uid = summary.mr_map_series_uid if isinstance(summary, MapResultSummary) else ""
        paths.extend(storage_root / path for path in result.paths if mr_series_uid and
                     Path(path).parent.name == mr_series_uid)
    return tuple(paths)


def compare_reader(claimed: ClaimedReaderJob, settings: Settings,
                   models: Callable[[], ModelSet] | None = None) -> ReaderComparison:
    """Score the reader of the claimed series on every slice it contoured.

    ``models`` gives the consensus model for slices without a reference (default: the node's models).

    Raises
    ------
    MapNotStoredError
        If none of the reader's contours lies on a map image the study holds (yet).
    ReaderJobError
        If the series names no reader.
    """
    if not claimed.contour_paths:
        raise ReaderJobError(f"series of job {claimed.job_id} has no stored instances")
    # Every file is read once, here; the analysis places the contours once and the outputs use what it placed.
    own = _read_datasets(claimed.contour_paths)
    if not own:
        raise ReaderJobError(f"no instance of the series of job {claimed.job_id} can be read")
    reader = _reader_of(own[0][1])
    if not claimed.map_paths:
        raise MapNotStoredError(f"reader {reader!r}: the study has no T1/T2 map images yet; waiting for the map "
                                "the contours lie on")
    other_contours = _read_labelled(claimed.other_contours)
    # The same reader's other objects (an RTSTRUCT beside its SEG) are left out, so that this object is scored.
    others = [(item.path, ds) for item, ds in other_contours if ds is not None and item.reader != reader]
    rule = claimed.reference_inputs.rule(gold_standard_reader(settings))
    reference = study_reference(reader, [item for item, _ in other_contours], rule=rule)
    analysis = analyze_datasets([*_read_datasets(claimed.map_paths), *own, *others], rule=rule, models=None)
    report = analysis.report
    yield_to_console()
    drawn = [(s, r) for s in report.slices for r in s.readers if r.reader == reader]
    unreadable = _own_unreadable(report, claimed.contour_sop_instance_uids)
    if not drawn and unreadable:
        # A malformed object fails now: no map arriving later would make it readable.
        raise ReaderJobError(f"reader {reader!r}: the contour object cannot be read: {'; '.join(unreadable)}")
    if not drawn:
        problems = "; ".join(f"{p.where}: {p.message}" for p in report.problems[:3])
        raise MapNotStoredError(
            f"reader {reader!r}: no myocardium contour lies on a T1/T2 map of the study "
            f"({len(claimed.map_paths)} map images stored); waiting for the map the contours lie on"
            f"{': ' + problems if problems else ''}"
        )
    consensus_model = _ConsensusModel(models if models is not None else lambda: _node_models(settings))
    compared = []
    for slice_result, reader_result in drawn:
        yield_to_console()  # between slices, a map job that started meanwhile goes on alone
        source = _map_image(analysis, slice_result.sop_instance_uid)
        compared.append(_compare_slice(slice_result, reader_result, source, ImageGeometry.from_dataset(source),
                                       analysis.readers, consensus_model))
    gold_standard = rule.case.gold_standard_reader if rule.case is not None and rule.case.gold_standard_reader \
        else rule.gold_standard
    return ReaderComparison(reader=reader, gold_standard=gold_standard, slices=tuple(compared), report=report,
                            reference=reference)


def _own_unreadable(report: AnalysisReport, sop_instance_uids: Sequence[str]) -> list[str]:
    """The analysis' problems with the job's own objects other than contours on images not stored (yet)."""
    own = set(sop_instance_uids)
    return [f"{problem.where}: {problem.message}" for problem in report.problems
            if problem.where.rsplit(" ", 1)[-1] in own
            and not problem.message.startswith(UnresolvedReferenceError.__name__)]


class _ConsensusModel:
    """The consensus model, loaded on first need; once it failed to load, each later call says so at once."""

    def __init__(self, load: Callable[[], ModelSet]) -> None:
        self._load = load
        self._models: ModelSet | None = None
        self._failure: str | None = None

    def models(self) -> ModelSet:
        if self._models is None and self._failure is None:
            try:
                self._models = self._load()
            except (AnalysisError, MyomapError, OSError) as error:
                LOGGER.warning("consensus model unavailable; slices without a reference are not scored: %s", error)
                self._failure = str(error)
        if self._models is None:
            raise ModelUnavailableError(self._failure)
        return self._models


def _compare_slice(slice_result: SliceResult, reader_result: ReaderResult, source: Dataset, geometry: ImageGeometry,
                   readers: dict[str, ReaderMasks], consensus_model: _ConsensusModel) -> SliceComparison:
    """The reader on one slice: the analysis' score against the reader's reference, else the consensus model's
    where that is the reference, else why none."""
    uid = slice_result.sop_instance_uid
    own = readers[reader_result.reader]
    map_ms = map_values_ms(source)
    spacing = geometry.pixel_spacing_mm
    drawn = own.mask(Structure.MYOCARDIUM, uid)
    if drawn is None:  # the analysis measured it from these masks: it must be there
        raise ReaderJobError(f"reader {reader_result.reader!r}'s contour on {uid} is not among the placed masks")
    myocardium = drawn.astype(bool)
    cavity = cavity_mask(own, uid, myocardium)
    notes = [*slice_result.notes, *reader_result.notes]
    score, reference_readers, reference = reader_result.score, reader_result.reference_readers, None
    source_of_reference = reader_result.reference
    unscored: str | None = None
    if score is not None:
        reference = _reference_myocardium(reader_result, readers, uid)
    elif source_of_reference is ReferenceSource.CONSENSUS_MODEL:
        why = reader_result.reference_reason
        try:
            score, reference = _score_against_model(map_ms, myocardium, cavity, spacing, consensus_model.models())
            notes.append(f"scored against the {why}")
        except ModelUnavailableError as error:
            unscored = f"the reference is the {why}, and the consensus model is not available"
            notes.append(f"not scored: {unscored} ({error})")
        except AnalysisError as error:
            unscored = f"the reference is the {why}, and the consensus model gave none: {error}"
            notes.append(f"not scored: {unscored}")
    elif source_of_reference is ReferenceSource.NONE:
        unscored = reader_result.reference_reason or "no reference for this slice"
    elif not (source_of_reference is ReferenceSource.GOLD_STANDARD and reader_result.reader in reference_readers):
        unscored = "; ".join(reader_result.notes) or "the contour could not be compared with the reference"
    return SliceComparison(
        slice=slice_result, reader=reader_result, score=score, reference_readers=reference_readers,
        map_source=source, map_ms=map_ms, pixel_spacing_mm=spacing, reader_myocardium=myocardium,
        reader_cavity=cavity, reference_myocardium=reference, unscored_reason=unscored, notes=tuple(notes),
        peer_dice=peer_dice(myocardium, readers, reader_result.reader, uid),
    )


def _node_models(settings: Settings) -> ModelSet:
    from dicomnode.analysis.slices import node_models  # loads the models only when one is needed

    return node_models(settings)


def _reader_of(ds: Dataset) -> str:
    try:
        return reader_name(ds)
    except UnknownReaderError as error:
        raise ReaderJobError(str(error)) from error


def _read_datasets(paths: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    """The readable files of ``paths`` with their datasets; the others are logged and left out."""
    datasets: list[tuple[Path, Dataset]] = []
    for path in paths:
        try:
            datasets.append((path, pydicom.dcmread(path)))
        except (InvalidDicomError, OSError, ValueError, EOFError) as error:
            LOGGER.warning("%s cannot be read: %s", path, error)
    return datasets


def _read_labelled(objects: Sequence[ContourObject]) -> list[tuple[ContourObject, Dataset | None]]:
    """The study's other contour objects, each read once, labelled with its reader (None: unreadable or unnamed)."""
    read: list[tuple[ContourObject, Dataset | None]] = []
    for item, (_, ds) in ((item, _read_one(item.path)) for item in objects):
        read.append((replace(item, reader=reader_label(ds)) if ds is not None else item, ds))
    return read


def _read_one(path: Path) -> tuple[Path, Dataset | None]:
    found = _read_datasets([path])
    return found[0] if found else (path, None)


def _map_image(analysis: StudyAnalysis, sop_instance_uid: str) -> Dataset:
    """The single-frame map image a slice was analysed on (what the outputs reference and show)."""
    source = analysis.map_images.get(sop_instance_uid)
    if source is None or int(source.get("NumberOfFrames") or 1) != 1:
        raise ReaderJobError(f"map image {sop_instance_uid} was analysed but is no single-frame image the outputs "
                             "can reference")
    return source


def _reference_myocardium(reader_result: ReaderResult, readers: dict[str, ReaderMasks], uid: str) -> np.ndarray:
    """The reference myocardium the analysis scored the reader against: the gold standard's, or the STAPLE of the
    experts' or the team's."""
    masks = []
    for name in reader_result.reference_readers:
        mask = readers[name].mask(Structure.MYOCARDIUM, uid) if name in readers else None
        if mask is None:
            raise ReaderJobError(f"reference reader {name!r}'s contour on {uid} is not among the placed masks")
        cavity = cavity_mask(readers[name], uid, mask)
        masks.append((mask.astype(bool), cavity))
    if reader_result.reference is ReferenceSource.GOLD_STANDARD:
        return masks[0][0]
    return reference_staple(masks)[0]


def _score_against_model(map_ms: np.ndarray, myocardium: np.ndarray, cavity: np.ndarray,
                         pixel_spacing_mm: tuple[float, float], models: ModelSet) -> tuple[ReaderScore, np.ndarray]:
    """Score the reader against the myocardium the consensus model draws from the reader's own contour."""
    if not cavity.any():
        raise AnalysisError("no cavity contour")
    reference = reader_consensus(map_ms, myocardium, pixel_spacing_mm, models)
    if not reference.any():
        raise AnalysisError("the consensus model found no myocardium near the reader's contour")
    reference_cavity = ndimage.binary_fill_holes(reference) & ~reference
    result = score_trainee(myocardium, cavity, reference, reference_cavity, map_ms, pixel_spacing_mm,
                           reference_name=CONSENSUS_MODEL_REFERENCE)
    return ReaderScore.of(result, CONSENSUS_MODEL_REFERENCE), reference


def reference_label(score: ReaderScore, reference_readers: Sequence[str]) -> str:
    """The reference in words, as the SR and the overlay name it."""
    if score.reference == ReferenceSource.GOLD_STANDARD.value and reference_readers:
        return reference_readers[0]
    if score.reference == ReferenceSource.STAPLE.value:
        return "expert consensus"
    if score.reference == ReferenceSource.TEAM_AVERAGE.value:
        return "team average"
    if score.reference == CONSENSUS_MODEL_REFERENCE:
        return "consensus model"
    return score.reference


def references_in_words(comparison: ReaderComparison) -> str | None:
    """The references the reader's scored slices were compared with, in words; None when no slice was scored."""
    words: list[str] = []
    for item in comparison.slices:
        if item.score is None:
            continue
        label = reference_label(item.score, item.reference_readers)
        if item.score.reference in (ReferenceSource.STAPLE.value, ReferenceSource.TEAM_AVERAGE.value):
            label = f"{label} of {', '.join(item.reference_readers)}"
        elif item.score.reference == ReferenceSource.GOLD_STANDARD.value:
            label = f"gold standard {label}"
        if label not in words:
            words.append(label)
    return "; ".join(words) or None


def overlay_scores(score: ReaderScore, map_kind: MapKind) -> dict[str, float]:
    """The figures printed under the overlay, by the names a reader knows them by."""
    return {
        "Dice": score.dice_myocardium,
        "Hausdorff (mm)": score.hausdorff_mm,
        "mean surface distance (mm)": score.mean_surface_distance_mm,
        f"{MapKind(map_kind).value.upper()} difference (ms)": score.map_difference_ms,
        "wall thickness difference (mm)": score.wall_thickness_difference_mm,
    }


def write_comparison(comparison: ReaderComparison, claimed: ClaimedReaderJob, storage_root: Path, *,
                     reserve_mb: float = 0.0) -> ComparisonFiles:
    """Write the overlay Secondary Captures (first) and the comparison SRs under ``<storage>/outputs/<study>/``.

    Each scored slice gets an SR and an overlay; a slice that could not be scored gets a Secondary Capture saying
    why; the gold-standard reader's own slices get nothing.
    """
    from reports.console_images import render_failure_image, render_reader_overlay
    from reports.secondary_capture import build_secondary_capture
    from reports.sr_reader_comparison import build_reader_comparison_report

    files = ComparisonFiles(sc=[], sr=[])
    writer = OutputWriter(claimed.key, storage_root, claimed.study_instance_uid, claimed.series_number or 0,
                          reserve_mb=reserve_mb)
    for index, item in enumerate(comparison.slices):
        if item.score is not None and item.reference_myocardium is not None:
            reference = reference_label(item.score, item.reference_readers)
            image = render_reader_overlay(item.map_ms, item.reader_myocardium, item.reference_myocardium,
                                          overlay_scores(item.score, item.slice.map_kind), comparison.reader,
                                          reference)
        elif item.unscored_reason is not None:
            image = render_failure_image(f"{comparison.reader}'s contour not scored: {item.unscored_reason}",
                                         item.map_ms)
        else:
            continue
        yield_to_console()
        capture = build_secondary_capture(
            image, item.map_source, series_instance_uid=writer.series_uid(OutputSeries.READER_SECONDARY_CAPTURE),
            sop_instance_uid=writer.uid("reader-sc", index),
            series_number=writer.series_number(OutputSeries.READER_SECONDARY_CAPTURE),
            instance_number=len(files.sc) + 1, series_description=READER_SC_DESCRIPTION,
        )
        files.sc.append(writer.write(capture))
        files.overlay_of_slice[index] = write_overlay_png(image.rgb, files.sc[-1], storage_root)
        if item.score is None:
            continue
        yield_to_console()
        report = build_reader_comparison_report(
            item.map_source,
            reader=comparison.reader,
            reference=reference,
            dice_myocardium=item.score.dice_myocardium,
            hausdorff_mm=item.score.hausdorff_mm,
            mean_surface_distance_mm=item.score.mean_surface_distance_mm,
            map_difference_ms=item.score.map_difference_ms,
            wall_thickness_difference_mm=item.score.wall_thickness_difference_mm,
            error_mode=item.score.error_mode,
            reader_endo_px=border_contour(item.reader_cavity),
            reader_epi_px=border_contour(ndimage.binary_fill_holes(item.reader_myocardium | item.reader_cavity)),
            series_instance_uid=writer.series_uid(OutputSeries.READER_SR),
            sop_instance_uid=writer.uid("reader-sr", index),
            series_number=writer.series_number(OutputSeries.READER_SR),
            instance_number=len(files.sr) + 1,
            algorithm_version=ALGORITHM_VERSION,
        )
        files.sr.append(writer.write(report))
    return files


def summarise(comparison: ReaderComparison, *, source_revision: int) -> ReaderResultSummary:
    """Figures of a reader comparison without patient data (the reader is named by its label)."""
    slices = []
    for item in comparison.slices:
        uid, kind, level = item.slice.sop_instance_uid, item.slice.map_kind.value, item.slice.level.value
        score = item.score
        if score is None:
            # The score's fields are left unset, not None: the record leaves them out (summary_json).
            slices.append(ReaderSliceFigures(
                map_sop_instance_uid=uid, map_kind=kind, level=level, status="not scored", reference=None,
                reference_readers=list(item.reference_readers), notes=list(item.notes),
            ))
            continue
        slices.append(ReaderSliceFigures(
            map_sop_instance_uid=uid, map_kind=kind, level=level, status="scored", reference=score.reference,
            reference_readers=list(item.reference_readers), notes=list(item.notes),
            dice_myocardium=rounded(score.dice_myocardium, 3),
            iou_myocardium=rounded(score.iou_myocardium, 3),
            dice_cavity=rounded(score.dice_cavity, 3),
            hausdorff_mm=rounded(score.hausdorff_mm, 2),
            mean_surface_distance_mm=rounded(score.mean_surface_distance_mm, 2),
            map_difference_ms=rounded(score.map_difference_ms, 1),
            wall_thickness_difference_mm=rounded(score.wall_thickness_difference_mm, 2),
            error_mode=score.error_mode,
            **programme_figures(item.slice, item.reader, item.peer_dice),
        ))
    return ReaderResultSummary(
        reader=comparison.reader,
        gold_standard=comparison.gold_standard,
        reference=references_in_words(comparison),
        reference_digest=comparison.reference.digest,
        slices=slices,
        problems=[f"{p.where}: {p.message}" for p in comparison.report.problems[:MAX_PROBLEMS_IN_SUMMARY]],
        source_revision=source_revision,
    )


def _record_result(
    claimed: ClaimedReaderJob,
    comparison: ReaderComparison,
    files: ComparisonFiles,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> list[int]:
    """Commit the result, its transfers, the job's and the series' new state in one transaction."""
    root = settings.storage_root
    summary = summarise(comparison, source_revision=claimed.series_revision)
    for index, overlay in files.overlay_of_slice.items():
        summary.slices[index].overlay = str(overlay.relative_to(root))
    # The overlays are routed as reader_sc (readers' workstations, the archive), never as the console's sc; the
    # result lists them with its other images.
    by_output = {Output.READER_SC: files.sc, Output.SR: files.sr}
    summary.outputs = ResultOutputs.model_validate(
        {"sc": [str(p.relative_to(root)) for p in files.sc], "sr": [str(p.relative_to(root)) for p in files.sr]})
    with session_scope(session_factory) as session:
        job, series = claimed_rows(session, claimed)
        register_reader(session, comparison.reader, role=ReaderRole.EXPERT if is_expert(comparison.reader)
                        else ReaderRole.TRAINEE)
        result = Result(
            job_id=job.id,
            kind=RESULT_KIND,
            output_series_uid=output_uid(claimed.key, OutputSeries.READER_SR.label) if files.sr else "",
            paths=[str(p.relative_to(root)) for paths in by_output.values() for p in paths],
            summary=summary_json(summary),
        )
        session.add(result)
        try:
            session.flush()
        except IntegrityError as error:
            raise RuntimeError(f"job {claimed.job_id} already has a {RESULT_KIND} result") from error
        # The overlay goes first: it is what the reader looks at; the SR follows for the record.
        transfers = scu.plan_output_transfers(session, result=result, series=series, outputs=by_output,
                                              settings=settings)
        mark_done(job, series, claimed)
        session.flush()
        return [transfer.id for transfer in transfers]
