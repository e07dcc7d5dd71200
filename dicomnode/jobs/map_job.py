"""The map job: analyse one unit of a study's mapping series (raw images and/or the scanner's maps of the same
slices), write its outputs, send what routing says.

The job's series belongs to a unit (:mod:`dicomnode.jobs.units`); the first of the unit's jobs to claim it does the
work, the others end without a result. Per slice the reported map is the scanner's when the unit holds one, else
the node's reconstruction from the raw images (:mod:`dicomnode.analysis.map_sources`); a reconstruction is written
as a new series twice, a float Parametric Map (exact values) and a uint16 MR image in ms (what a console shows).
The models then analyse every slice and the job writes the console's Secondary Captures, a TID 1500 SR and a SEG
(:mod:`dicomnode.jobs.map_outputs`). It records one :class:`db.models.Result` with a summary free of patient data,
plans the transfers (Secondary Captures first) and hands them to the queue.

A job may run twice (a crash after the maps were written, a task handed out twice): the claim on the job row
lets one run through, output UIDs are derived from the unit's key so a re-run rewrites the same files, and the
result, its transfers and the job's DONE state are committed in one transaction, so a unit gets exactly one result.

The map job that ends last among its study's map jobs of a kind queues the study bullseye in that same
transaction and runs it at once (:mod:`dicomnode.jobs.study_job`); a job of kind ``study_bullseye`` handed to
:func:`run_job` from the queue (after a restart) runs there too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from config.settings import Output
from db.models import Job, Result, SeriesRole
from db.session import session_scope
from dicomnode.analysis.labels import UnitLabel, unit_label
from dicomnode.analysis.map_sources import (
    SCANNER_MAP,
    PreparedSlice,
    add_source_figures,
    compare_maps,
    prepare_slice,
    reference_image,
    unit_description,
)
from dicomnode.analysis.slices import SliceInput, SliceOutcome, analyse_slices, node_models, slice_workers
from dicomnode.io.acquisition import mapping_scheme
from dicomnode.io.series_loader import SliceStack
from dicomnode.io.t1_protocol import field_strength_note
from dicomnode.io.unit_loader import UnitSlice, load_unit, read_datasets
from dicomnode.jobs import study_job
from dicomnode.jobs.claims import JobOutcome, claim_job, claimed_rows, lock_study, mark_done, mark_failed
from dicomnode.jobs.creation import JobKind
from dicomnode.jobs.map_outputs import analysis_summary, write_console_images, write_reports
from dicomnode.jobs.outputs import OutputSeries, OutputWriter, output_uid
from dicomnode.jobs.storage_full import fail_for_full_storage, is_storage_full
from dicomnode.jobs.units import Superseded, UnitClaim, UnitPlan, claim_unit, plan_unit
from dicomnode.net import scu
from dicomnode.sop_classes import MR_IMAGE
from inference.mapping import MapKind
from inference.model_set import ModelSet
from reports.map_mr import build_mr_map
from reports.map_parametric import build_parametric_map
from reports.result_summary import (
    MapResultSummary,
    ResultOutputs,
    SupersededFigures,
    rounded,
    summary_json,
)

LOGGER = logging.getLogger(__name__)

_MAP_KIND = {"T1": MapKind.T1, "T2": MapKind.T2}
_RAW_ROLES = (SeriesRole.RAW_IR, SeriesRole.T2_PREP)


@dataclass(frozen=True)
class ClaimedJob:
    """What a running job needs from the database, read once when the job is claimed."""

    job_id: int
    key: str
    kind: JobKind
    series_id: int
    series_revision: int


@dataclass(frozen=True)
class WrittenSlice:
    """One prepared slice, the image its outputs reference (the scanner's map, else the node's MR map) and the
    node's map files written for it."""

    prepared: PreparedSlice
    reference_image: Dataset
    map_paths: tuple[Path, ...]


def run_job(
    job_id: int,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    enqueue_delivery: Callable[[int], object],
) -> JobOutcome:
    """Run map job ``job_id`` if it is queued: analyse its unit, write, record the result, queue its transfers.

    Analysis errors do not raise: the job is marked FAILED with the message, and the series too. When it is the
    last of its study's map jobs of its kind to end, the study bullseye follows in this worker.
    """
    claimed = _claim(job_id, session_factory)
    if isinstance(claimed, JobOutcome):
        if claimed is JobOutcome.SUPERSEDED:  # ended without work: the study may be done now
            _run_study_job(study_job.queue_after(job_id, session_factory), settings, session_factory,
                           enqueue_delivery)
        return claimed
    if claimed.kind is JobKind.STUDY_BULLSEYE:
        return study_job.run_claimed(
            study_job.ClaimedStudyJob(claimed.job_id, claimed.key, claimed.series_id, claimed.series_revision),
            settings=settings, session_factory=session_factory, enqueue_delivery=enqueue_delivery)
    outcome, study_job_id = _run_map_job(claimed, settings=settings, session_factory=session_factory,
                                         enqueue_delivery=enqueue_delivery)
    if outcome is JobOutcome.FAILED:
        study_job_id = study_job.queue_after(job_id, session_factory)
    _run_study_job(study_job_id, settings, session_factory, enqueue_delivery)
    return outcome


def _run_study_job(study_job_id: int | None, settings: Settings, session_factory: sessionmaker[Session],
                   enqueue_delivery: Callable[[int], object]) -> None:
    """Run the study bullseye a map job has just queued; a fault there never changes the map job's outcome."""
    if study_job_id is None:
        return
    try:
        study_job.run_now(study_job_id, settings=settings, session_factory=session_factory,
                          enqueue_delivery=enqueue_delivery)
    except Exception:  # the job stays queued and runs again at the next start
        LOGGER.exception("study bullseye job %d could not run", study_job_id)


def _run_map_job(claimed: ClaimedJob, *, settings: Settings, session_factory: sessionmaker[Session],
                 enqueue_delivery: Callable[[int], object]) -> tuple[JobOutcome, int | None]:
    """Analyse the claimed job's unit; its outcome and the study bullseye job its end queued, if any."""
    job_id = claimed.job_id
    started = time.perf_counter()
    try:
        plan = plan_unit(claimed.series_id, session_factory=session_factory, storage_root=settings.storage_root)
        unit = claim_unit(plan, claimed.job_id, session_factory=session_factory)
        if not isinstance(unit, UnitClaim):
            queued = _close_without_result(claimed, _analysed_elsewhere(unit, session_factory), plan,
                                           session_factory)
            LOGGER.info("job %d: its series is analysed with its unit by job %d", job_id, unit)
            return JobOutcome.DONE, queued
        datasets = [(m.role, read_datasets(m.paths)) for m in plan.members]
        slices = load_unit(datasets)
        first = datasets[0][1][0]
        numbers = [int(ds.SeriesNumber) for _, group in datasets for ds in group[:1]
                   if ds.get("SeriesNumber") not in (None, "")]
        writer = OutputWriter(plan.key, settings.storage_root, str(first.StudyInstanceUID), min(numbers, default=0),
                              reserve_mb=settings.storage.min_free_mb)
        kind = _MAP_KIND[plan.kind]
        label = _unit_label(datasets, slices, kind)
        prepared = [_prepare(item, index, kind, writer, settings, label) for index, item in enumerate(slices)]
        description = unit_description(str(group[0].get("SeriesDescription", "")) for _, group in datasets if group)
        inputs, outcomes, versions = _analyse(prepared, description, settings)
        sc_paths = write_console_images(outcomes, inputs, writer, label=label,
                                        not_for_diagnostic_use=settings.console.not_for_diagnostic_use)
        outputs = {Output.SC: sc_paths, Output.MAPS: [p for item in prepared for p in item.map_paths]}
        summary = summarise(prepared, plan=plan, unit=unit, source_revision=claimed.series_revision,
                            report_t1=settings.mapping.report_t1)
        summary.analysis = analysis_summary(outcomes, versions)
        _add_label(summary, label, prepared, settings.storage_root)
        comparisons = [None if o.analysis is None else compare_maps(w.prepared.maps, o.analysis)
                       for w, o in zip(prepared, outcomes, strict=True)]
        for figures, item, outcome, comparison in zip(summary.analysis.slices, prepared, outcomes, comparisons,
                                                      strict=True):
            add_source_figures(figures, item.prepared, outcome.analysis, comparison)
        # First commit: the console's Secondary Captures and the maps, sent at once; the job is not done yet.
        transfer_ids, _ = _record_result(claimed, summary, outputs, done=False, settings=settings,
                                         session_factory=session_factory)
        for transfer_id in transfer_ids:
            enqueue_delivery(transfer_id)
        # Second commit: the SR and the SEG, and the job's DONE state.
        try:
            sr_paths, seg_paths = write_reports(
                outcomes, inputs, writer, model_versions=versions,
                previous_reports=_previous_reports(unit.superseded, settings.storage_root), comparisons=comparisons,
                label=label,
            )
        except Exception as error:  # the maps and the console's images are out; the series stays usable
            if is_storage_full(error):
                raise  # the whole job is retried once there is room, the SR and SEG with it
            LOGGER.exception("job %d: the SR and SEG could not be written", job_id)
            sr_paths, seg_paths = [], []
            summary.reports_error = f"{type(error).__name__}: {error}"[:500]
        outputs |= {Output.SR: sr_paths, Output.SEG: seg_paths}
        more_ids, queued = _record_result(claimed, summary, outputs, done=True, settings=settings,
                                          session_factory=session_factory, study=(plan.study_id, plan.kind))
    except Exception as error:  # any failure of one series must leave the node working
        if is_storage_full(error):  # the series is fine: it is analysed again once there is room
            fail_for_full_storage(claimed, error, session_factory)
            return JobOutcome.FAILED, None
        LOGGER.exception("job %d (%s) failed", job_id, claimed.kind.value)
        mark_failed(claimed, f"{type(error).__name__}: {error}", session_factory)
        return JobOutcome.FAILED, None
    new_ids = [transfer_id for transfer_id in more_ids if transfer_id not in set(transfer_ids)]
    LOGGER.info(
        "job %d: %s of %d slices (%d series) in %.3f s, %d transfers", job_id, claimed.kind.value, len(prepared),
        len(plan.members), time.perf_counter() - started, len(transfer_ids) + len(new_ids),
    )
    for transfer_id in new_ids:
        enqueue_delivery(transfer_id)
    return JobOutcome.DONE, queued


def _claim(job_id: int, session_factory: sessionmaker[Session]) -> ClaimedJob | JobOutcome:
    """Move the job from QUEUED to RUNNING (only one caller succeeds) and read what the run needs."""
    with session_scope(session_factory) as session:
        job = claim_job(session, job_id)
        if isinstance(job, JobOutcome):
            return job
        return ClaimedJob(job_id=job.id, key=job.key, kind=JobKind(job.kind), series_id=job.series_id,
                          series_revision=job.series_revision)


def _analysed_elsewhere(job_id: int, session_factory: sessionmaker[Session]) -> str:
    """Where a series analysed in another job's unit finds its result, in words for the series page."""
    with session_factory() as session:
        job = session.get(Job, job_id)
        series = job.series if job is not None else None
        where = f"series {series.series_number} {series.description}".rstrip() if series is not None else "its unit"
    return f"analysed with the other series of its slices: the result is under {where} (job {job_id})"


def _close_without_result(claimed: ClaimedJob, note: str, plan: UnitPlan,
                          session_factory: sessionmaker[Session]) -> int | None:
    """Mark the job (and its series) DONE with a note: another job of its unit analyses the series. Returns the
    study bullseye job this end queued, if any."""
    with session_scope(session_factory) as session:
        lock_study(session, plan.study_id)
        job, series = claimed_rows(session, claimed)
        mark_done(job, series, claimed)
        job.error = note
        session.flush()
        return study_job.queue_when_study_done(session, study_id=plan.study_id, kind=plan.kind, series=series)


def _unit_label(datasets: Sequence[tuple[SeriesRole, Sequence[Dataset]]], slices: Sequence[UnitSlice],
                kind: MapKind) -> UnitLabel:
    """What the unit's outputs call it: the sequence (the raw series' scheme and protocol), its level and its
    source series (the raw series the radiographer acquired, else the scanner's map)."""
    ordered = sorted((group for group in datasets if group[1]), key=lambda group: group[0] not in _RAW_ROLES)
    first = ordered[0][1][0] if ordered else None
    number = first.get("SeriesNumber") if first is not None else None
    raw = next((item for item in slices if item.raw is not None and item.stack is not None), None)
    scheme = mapping_scheme(raw.raw, raw.stack) if raw is not None and raw.raw is not None \
        and raw.stack is not None else None
    n_images = int(raw.stack.times_ms.size) if raw is not None and raw.stack is not None else None
    return unit_label((str(group[0].get("SeriesDescription", "")) for _, group in ordered), kind=kind,
                      scheme=scheme, n_images=n_images,
                      source_series_number=int(number) if number not in (None, "") else None)


def _add_label(summary: MapResultSummary, label: UnitLabel, written: Sequence[WrittenSlice], root: Path) -> None:
    """Record what the outputs named the unit and the image each slice's outputs reference (the study
    bullseye reads both)."""
    summary.sequence, summary.sequence_family = label.sequence, label.family
    summary.level, summary.level_assumed = label.level.value, label.level_assumed
    summary.source_series_number = label.source_series_number
    images = []
    for item in written:
        path = item.map_paths[0] if item.map_paths else Path(str(getattr(item.reference_image, "filename", "") or ""))
        images.append(str(path.relative_to(root)) if path.is_absolute() and path.is_relative_to(root) else "")
    summary.slice_images = images


def _prepare(item: UnitSlice, index: int, kind: MapKind, writer: OutputWriter, settings: Settings,
             label: UnitLabel | None = None) -> WrittenSlice:
    """Prepare the slice's maps; write the node's own map when it is the one reported, its series described as
    "myomap T1 MOLLI mid T1MAP" (the MR map) and "... float T1MAP" (the Parametric Map)."""
    prepared = prepare_slice(item, kind, report_t1=settings.mapping.report_t1)
    scanner_image = reference_image(prepared)
    if scanner_image is not None:
        return WrittenSlice(prepared, scanner_image, ())
    fit, stack = prepared.fit, item.stack
    assert fit is not None and stack is not None  # no scanner map: the slice was reconstructed
    stored_ms = np.nan_to_num(prepared.maps.primary_ms).astype(np.float32)  # 0 where no value, as scanners store
    suffix = f"{fit.kind.value}MAP"  # the suffix the node's classifier reads a map series by
    derivation = f"{fit.method}, {stack.times_ms.size} images; {prepared.maps.source}"
    mr_map = build_mr_map(
        stored_ms, stack.sources[0], fit.kind,
        series_instance_uid=writer.series_uid(OutputSeries.MR_MAP), sop_instance_uid=writer.uid("mr", index),
        series_number=writer.series_number(OutputSeries.MR_MAP), instance_number=index + 1,
        derivation_description=derivation[:1024], further_source_images=stack.unique_sources[1:],
        frame_number=stack.frame_numbers[0], referenced_frame_numbers=_frames_by_source(stack),
        series_description=label.series_description(suffix) if label is not None else None,
    )
    parametric_map = build_parametric_map(
        stored_ms, stack.unique_sources, fit.kind,
        series_instance_uid=writer.series_uid(OutputSeries.PARAMETRIC_MAP), sop_instance_uid=writer.uid("pm", index),
        series_number=writer.series_number(OutputSeries.PARAMETRIC_MAP), instance_number=index + 1,
        content_description=fit.method, frame_number=stack.frame_numbers[0],
        series_description=label.series_description(f"float {suffix}") if label is not None else None,
    )
    return WrittenSlice(prepared, mr_map, (writer.write(mr_map), writer.write(parametric_map)))


def _frames_by_source(stack: SliceStack) -> dict[str, list[int]]:
    """SOP Instance UID -> the frames of it the slice's images are (an Enhanced MR series is one dataset whose
    frames hold every slice and time)."""
    frames: dict[str, list[int]] = {}
    for source, number in zip(stack.sources, stack.frame_numbers, strict=True):
        frames.setdefault(str(source.SOPInstanceUID), []).append(number)
    return frames


def _analyse(written: Sequence[WrittenSlice], description: str,
             settings: Settings) -> tuple[list[SliceInput], list[SliceOutcome], dict[str, str]]:
    """Run the models on every slice: the slices as analysed, what each gave, and the models' versions."""
    inputs = [
        SliceInput(map_ms=item.prepared.maps.primary_ms, map_kind=item.prepared.kind,
                   pixel_spacing_mm=item.prepared.pixel_spacing_mm, mr_map=item.reference_image,
                   raw=item.prepared.raw)
        for item in written
    ]
    versions: dict[str, str] = {}

    def models() -> ModelSet:
        model_set = node_models(settings)
        versions.update(model_set.versions)
        return model_set

    outcomes = analyse_slices(inputs, description, models, workers=slice_workers(settings))
    return inputs, outcomes, versions


def _previous_reports(superseded: Superseded | None, storage_root: Path) -> list[Dataset]:
    """The SRs of the analysis this one replaces, to name as its predecessors; unreadable ones are left out."""
    if superseded is None:
        return []
    reports: list[Dataset] = []
    for path in superseded.sr_paths:
        try:
            reports.append(pydicom.dcmread(storage_root / path))
        except (OSError, pydicom.errors.InvalidDicomError) as error:
            LOGGER.warning("the superseded SR %s cannot be read: %s", path, error)
    return reports


def warm_up() -> float:
    """Build and discard a tiny map once, so that the first real job does not pay for one-time loading
    (highdicom reads its IOD tables on first use, about half a second); returns the seconds it took."""
    started = time.perf_counter()
    source = Dataset()
    source.SOPClassUID = MR_IMAGE
    source.SOPInstanceUID = output_uid("warm-up", "source")
    source.StudyInstanceUID = output_uid("warm-up", "study")
    source.SeriesInstanceUID = output_uid("warm-up", "series")
    source.FrameOfReferenceUID = output_uid("warm-up", "frame-of-reference")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
                    "StudyID", "AccessionNumber", "StudyDate", "StudyTime"):
        setattr(source, keyword, None)
    source.Modality = "MR"
    source.SeriesNumber = 1
    source.InstanceNumber = 1
    source.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    source.ImagePositionPatient = [0.0, 0.0, 0.0]
    source.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    source.PixelSpacing = [1.0, 1.0]
    source.SliceThickness = 8.0
    source.SamplesPerPixel, source.PhotometricInterpretation = 1, "MONOCHROME2"
    source.Rows, source.Columns = 4, 4
    source.BitsAllocated, source.BitsStored, source.HighBit, source.PixelRepresentation = 16, 16, 15, 0
    source.PixelData = np.zeros((4, 4), dtype="<u2").tobytes()
    map_ms = np.full((4, 4), 1000.0, dtype=np.float32)
    build_mr_map(map_ms, source, MapKind.T1,
                 series_instance_uid=output_uid("warm-up", build_mr_map.__name__, "series"),
                 sop_instance_uid=output_uid("warm-up", build_mr_map.__name__), series_number=1)
    build_parametric_map(map_ms, [source], MapKind.T1,
                         series_instance_uid=output_uid("warm-up", build_parametric_map.__name__, "series"),
                         sop_instance_uid=output_uid("warm-up", build_parametric_map.__name__), series_number=1)
    return time.perf_counter() - started


def summarise(written: Sequence[WrittenSlice], *, plan: UnitPlan, unit: UnitClaim, source_revision: int,
              report_t1: str) -> MapResultSummary:
    """Figures of a unit's result without patient data: sources, slices, statistics of the reported maps."""
    prepared = [item.prepared for item in written]
    values = np.concatenate([p.maps.primary_ms[np.isfinite(p.maps.primary_ms)].ravel() for p in prepared])
    # The fit's own figures describe the map only where the node's reconstruction is the reported map; where the
    # scanner's map is, the fit is the cross-check, reported per slice.
    fits = [p.fit for p in prepared if p.fit is not None and p.maps.source != SCANNER_MAP]
    fitted = sum(int(np.sum(fit.r2 > 0)) for fit in fits)
    fitted_valid = sum(int(np.sum(fit.valid)) for fit in fits)
    r2_values = np.concatenate([fit.r2[fit.valid].ravel() for fit in fits]) if fits else np.array([])
    sources = sorted({SCANNER_MAP if p.maps.source == SCANNER_MAP else "node reconstruction" for p in prepared})
    notes = sorted({note for item in written if item.prepared.kind is MapKind.T1
                    and (note := field_strength_note(item.reference_image)) is not None})
    summary = MapResultSummary(
        kind=prepared[0].kind.value.lower(),
        method=" + ".join(sorted({fit.method for fit in fits} | ({SCANNER_MAP} & set(sources)))),
        scheme=fits[0].scheme.value if fits else "",
        slices=len(prepared),
        valid_pixels=int(values.size),
        valid_fraction_of_fitted=round(fitted_valid / fitted, 4) if fitted else None,
        median_ms=rounded(float(np.median(values))) if values.size else None,
        p25_ms=rounded(float(np.percentile(values, 25))) if values.size else None,
        p75_ms=rounded(float(np.percentile(values, 75))) if values.size else None,
        median_r2=rounded(float(np.median(r2_values)), 4) if r2_values.size else None,
        map_source=" and ".join(sources),
        report_t1=report_t1 if prepared[0].kind is MapKind.T1 and fits else None,
        unit_series=[m.series_instance_uid for m in plan.members],
        source_revision=source_revision,
        notes=notes,
    )
    node_maps = [item for item in written if item.map_paths]
    if node_maps:
        summary.mr_map_series_uid = str(node_maps[0].reference_image.SeriesInstanceUID)
        summary.parametric_map_series_uid = node_maps[0].map_paths[1].parent.name  # <study>/<series>/<sop>.dcm
    if unit.superseded is not None:
        summary.supersedes = SupersededFigures(
            job_id=unit.superseded.job_id, job_key=unit.superseded.job_key,
            sr_sop_instance_uids=[Path(p).stem for p in unit.superseded.sr_paths],
        )
    return summary


def _record_result(
    claimed: ClaimedJob,
    summary: MapResultSummary,
    outputs: dict[Output, list[Path]],
    *,
    done: bool,
    settings: Settings,
    session_factory: sessionmaker[Session],
    study: tuple[int, str] | None = None,
) -> tuple[list[int], int | None]:
    """Commit the job's result with the outputs written so far and plan their transfers, in one transaction;
    with ``done`` the job and the series become DONE in it too.

    The result is created by the first call and completed by later ones (a re-run after a crash between the two
    finds it); planning a transfer twice changes nothing. With ``study`` (its id and the unit's map kind) the
    transaction begins with the study's lock and, when this job is the study's last map job of the kind to end,
    queues the study bullseye. Returns the ids of the transfers of every output given, in the order of
    ``outputs``, and the id of the study bullseye job queued, if any.
    """
    root = settings.storage_root
    relative = {output: [str(p.relative_to(root)) for p in paths] for output, paths in outputs.items()}
    with session_scope(session_factory) as session:
        if study is not None:
            lock_study(session, study[0])  # first: on SQLite a read before it would pin an older snapshot
        job, series = claimed_rows(session, claimed)
        result = session.scalars(
            select(Result).where(Result.job_id == job.id, Result.kind == claimed.kind.value)
        ).one_or_none()
        if result is None:
            result = Result(job_id=job.id, kind=claimed.kind.value)
            session.add(result)
        result.output_series_uid = summary.mr_map_series_uid
        result.paths = [path for paths in relative.values() for path in paths]
        summary.outputs = ResultOutputs.model_validate({output.value: paths for output, paths in relative.items()})
        result.summary = summary_json(summary)
        session.flush()
        transfers = scu.plan_output_transfers(session, result=result, series=series, outputs=outputs,
                                              settings=settings)
        queued = None
        if done:
            mark_done(job, series, claimed)
            session.flush()
            if study is not None:
                queued = study_job.queue_when_study_done(session, study_id=study[0], kind=study[1], series=series)
        session.flush()
        return [transfer.id for transfer in transfers], queued
