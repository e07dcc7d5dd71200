"""The map job: reconstruct T1 or T2 maps from a complete raw series, analyse them, send what routing says.

For each slice of a RAW_IR or T2_PREP series the job fits the map (:func:`inference.mapping.reconstruct_map`),
writes it twice as a new series in the same study: a float Parametric Map (exact values, for analysis) and a
uint16 MR image in ms (what a scanner console shows), under ``<storage>/outputs/<study>/<series>/<sop>.dcm``.
The models then analyse every slice and the job writes the console's Secondary Captures, a TID 1500 SR and a SEG
(:mod:`dicomnode.jobs.map_outputs`). It records one :class:`db.models.Result` with a summary free of patient data,
plans the transfers (Secondary Captures first) and hands them to the queue.

A job may run twice (a crash after the maps were written, a task handed out twice): the claim on the job row
lets one run through, output UIDs are derived from the job key so a re-run rewrites the same files, and the
result, its transfers and the job's DONE state are committed in one transaction, so a (series, revision) gets
exactly one result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from config.settings import Output
from db.models import Instance, Result
from db.session import session_scope
from dicomnode.analysis.fitting import fit_slice
from dicomnode.analysis.slices import SliceInput, SliceOutcome, analyse_slices, node_models, slice_workers
from dicomnode.io.series_loader import LoadedSeries, SliceStack, TimingKind, load_series_files
from dicomnode.jobs.claims import JobOutcome, claim_job, claimed_rows, mark_done, mark_failed
from dicomnode.jobs.creation import JobKind
from dicomnode.jobs.map_outputs import analysis_summary, write_console_images, write_reports
from dicomnode.jobs.outputs import OutputSeries, OutputWriter, output_uid
from dicomnode.net import scu
from dicomnode.sop_classes import MR_IMAGE
from inference.mapping import MapKind, MappingResult
from inference.model_set import ModelSet
from inference.slice_analysis import RawImages
from reports.map_mr import build_mr_map
from reports.map_parametric import build_parametric_map
from reports.result_summary import MapResultSummary, ResultOutputs, rounded, summary_json

LOGGER = logging.getLogger(__name__)

_TIMING_FOR_KIND = {JobKind.T1_MAP: TimingKind.INVERSION, JobKind.T2_MAP: TimingKind.T2_PREP}


@dataclass(frozen=True)
class ClaimedJob:
    """What a running job needs from the database, read once when the job is claimed."""

    job_id: int
    key: str
    kind: JobKind
    series_id: int
    series_revision: int
    instance_paths: tuple[Path, ...]


@dataclass(frozen=True)
class SliceMap:
    """The reconstructed map of one slice and the files written for it."""

    stack: SliceStack
    mapping: MappingResult
    map_ms: np.ndarray  # float32, 0 where the fit is not valid
    mr_map: Dataset
    mr_map_path: Path
    parametric_map_path: Path


def run_job(
    job_id: int,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    enqueue_delivery: Callable[[int], object],
) -> JobOutcome:
    """Run map job ``job_id`` if it is queued: reconstruct, write, record the result, queue its transfers.

    Analysis errors do not raise: the job is marked FAILED with the message, and the series too.
    """
    claimed = _claim(job_id, session_factory, settings.storage_root)
    if isinstance(claimed, JobOutcome):
        return claimed
    started = time.perf_counter()
    try:
        loaded = load_series_files(claimed.instance_paths, _TIMING_FOR_KIND[claimed.kind])
        writer = OutputWriter(claimed.key, settings.storage_root, loaded.study_instance_uid,
                              loaded.series_number or 0)
        slice_maps = [_map_slice(stack, loaded, index, writer) for index, stack in enumerate(loaded.slices)]
        inputs, outcomes, versions = _analyse(loaded, slice_maps, settings)
        # First commit: the console's Secondary Captures and the maps, sent at once; the job is not done yet.
        sc_paths = write_console_images(outcomes, inputs, writer)
        outputs = {Output.SC: sc_paths, Output.MAPS: [*(m.mr_map_path for m in slice_maps),
                                                       *(m.parametric_map_path for m in slice_maps)]}
        summary = summarise(slice_maps, writer=writer, source_revision=claimed.series_revision)
        summary.analysis = analysis_summary(outcomes, versions)
        transfer_ids = _record_result(claimed, summary, outputs, done=False, settings=settings,
                                      session_factory=session_factory)
        for transfer_id in transfer_ids:
            enqueue_delivery(transfer_id)
        # Second commit: the SR and the SEG, and the job's DONE state.
        try:
            sr_paths, seg_paths = write_reports(outcomes, inputs, writer, model_versions=versions)
        except Exception as error:  # the maps and the console's images are out; the series stays usable
            LOGGER.exception("job %d: the SR and SEG could not be written", job_id)
            sr_paths, seg_paths = [], []
            summary.reports_error = f"{type(error).__name__}: {error}"[:500]
        outputs |= {Output.SR: sr_paths, Output.SEG: seg_paths}
        more_ids = _record_result(claimed, summary, outputs, done=True, settings=settings,
                                  session_factory=session_factory)
    except Exception as error:  # any failure of one series must leave the node working
        LOGGER.exception("job %d (%s) failed", job_id, claimed.kind.value)
        mark_failed(claimed, f"{type(error).__name__}: {error}", session_factory)
        return JobOutcome.FAILED
    new_ids = [transfer_id for transfer_id in more_ids if transfer_id not in set(transfer_ids)]
    LOGGER.info(
        "job %d: %s of %d slices in %.3f s, %d transfers",
        job_id, claimed.kind.value, len(slice_maps), time.perf_counter() - started, len(transfer_ids) + len(new_ids),
    )
    for transfer_id in new_ids:
        enqueue_delivery(transfer_id)
    return JobOutcome.DONE


def _claim(job_id: int, session_factory: sessionmaker[Session], storage_root: Path) -> ClaimedJob | JobOutcome:
    """Move the job from QUEUED to RUNNING (only one caller succeeds) and read what the run needs."""
    with session_scope(session_factory) as session:
        job = claim_job(session, job_id)
        if isinstance(job, JobOutcome):
            return job
        series = job.series
        paths = session.scalars(select(Instance.path).where(Instance.series_id == series.id)).all()
        return ClaimedJob(
            job_id=job.id,
            key=job.key,
            kind=JobKind(job.kind),
            series_id=series.id,
            series_revision=job.series_revision,
            instance_paths=tuple(storage_root / path for path in paths),  # stored relative to the root
        )


def _map_slice(stack: SliceStack, loaded: LoadedSeries, index: int, writer: OutputWriter) -> SliceMap:
    mapping = fit_slice(loaded, stack)
    map_ms = np.where(mapping.valid, mapping.map_ms, 0.0).astype(np.float32)
    derivation = f"{mapping.method}, {stack.times_ms.size} images"
    mr_map = build_mr_map(
        map_ms,
        stack.sources[0],
        mapping.kind,
        series_instance_uid=writer.series_uid(OutputSeries.MR_MAP),
        sop_instance_uid=writer.uid("mr", index),
        series_number=writer.series_number(OutputSeries.MR_MAP),
        instance_number=index + 1,
        derivation_description=derivation,
        further_source_images=stack.unique_sources[1:],
    )
    parametric_map = build_parametric_map(
        map_ms,
        stack.unique_sources,
        mapping.kind,
        series_instance_uid=writer.series_uid(OutputSeries.PARAMETRIC_MAP),
        sop_instance_uid=writer.uid("pm", index),
        series_number=writer.series_number(OutputSeries.PARAMETRIC_MAP),
        instance_number=index + 1,
        content_description=mapping.method,
    )
    return SliceMap(stack=stack, mapping=mapping, map_ms=map_ms, mr_map=mr_map, mr_map_path=writer.write(mr_map),
                    parametric_map_path=writer.write(parametric_map))


def _analyse(loaded: LoadedSeries, slice_maps: Sequence[SliceMap],
             settings: Settings) -> tuple[list[SliceInput], list[SliceOutcome], dict[str, str]]:
    """Run the models on every slice: the slices as analysed, what each gave, and the models' versions."""
    inputs = [
        SliceInput(
            map_ms=m.map_ms,
            map_kind=m.mapping.kind,
            pixel_spacing_mm=m.stack.pixel_spacing_mm,
            mr_map=m.mr_map,
            raw=RawImages(m.stack.images, m.stack.times_ms, np.nan_to_num(m.mapping.r2).astype(np.float32))
            if m.mapping.kind is MapKind.T1 else None,
        )
        for m in slice_maps
    ]
    versions: dict[str, str] = {}

    def models() -> ModelSet:
        model_set = node_models(settings)
        versions.update(model_set.versions)
        return model_set

    outcomes = analyse_slices(inputs, loaded.series_description, models, workers=slice_workers(settings))
    return inputs, outcomes, versions


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


def summarise(slice_maps: Sequence[SliceMap], *, writer: OutputWriter, source_revision: int) -> MapResultSummary:
    """Figures of a map result without patient data: method, slices, and global statistics of valid pixels."""
    valid_values = np.concatenate([m.mapping.map_ms[m.mapping.valid].ravel() for m in slice_maps])
    r2_values = np.concatenate([m.mapping.r2[m.mapping.valid].ravel() for m in slice_maps])
    fitted = sum(int(np.sum(m.mapping.r2 > 0)) for m in slice_maps)
    first = slice_maps[0].mapping
    has_values = bool(valid_values.size)
    return MapResultSummary(
        kind=first.kind.value,
        method=first.method,
        scheme=first.scheme.value,
        slices=len(slice_maps),
        valid_pixels=int(valid_values.size),
        valid_fraction_of_fitted=round(valid_values.size / fitted, 4) if fitted else 0.0,
        median_ms=rounded(float(np.median(valid_values))) if has_values else None,
        p25_ms=rounded(float(np.percentile(valid_values, 25))) if has_values else None,
        p75_ms=rounded(float(np.percentile(valid_values, 75))) if has_values else None,
        median_r2=rounded(float(np.median(r2_values)), 4) if r2_values.size else None,
        mr_map_series_uid=writer.series_uid(OutputSeries.MR_MAP),
        parametric_map_series_uid=writer.series_uid(OutputSeries.PARAMETRIC_MAP),
        source_revision=source_revision,
    )


def _record_result(
    claimed: ClaimedJob,
    summary: MapResultSummary,
    outputs: dict[Output, list[Path]],
    *,
    done: bool,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> list[int]:
    """Commit the job's result with the outputs written so far and plan their transfers, in one transaction;
    with ``done`` the job and the series become DONE in it too.

    The result is created by the first call and completed by later ones (a re-run after a crash between the two
    finds it); planning a transfer twice changes nothing. Returns the ids of the transfers of every output given,
    in the order of ``outputs``.
    """
    root = settings.storage_root
    relative = {output: [str(p.relative_to(root)) for p in paths] for output, paths in outputs.items()}
    with session_scope(session_factory) as session:
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
        if done:
            mark_done(job, series, claimed)
        session.flush()
        return [transfer.id for transfer in transfers]
