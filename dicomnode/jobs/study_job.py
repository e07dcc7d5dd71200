"""The study bullseye: once every map job of a study's map kind has finished, one more Secondary Capture for the
console with the 16-segment AHA bullseye over all its slices (basal 1-6, mid 7-12, apical 13-16, each from its
level's slice) and the same values in a study-level TID 1500 SR.

It is a job of its own (kind ``study_bullseye``), created by the map job that finishes last, in the transaction
that marks that job DONE and under the study's lock (:func:`dicomnode.jobs.claims.lock_study`), so that of two
map jobs finishing together exactly one sees the study done. Its key names the study's state: the map kind and a
digest of the analysis units it draws on (those no later unit supersedes). A study therefore gets one bullseye per
state; a late slice makes a new unit, a new state and a new bullseye whose SR names the earlier one as its
predecessor. Output UIDs derive from the job key, so a re-run after a crash rewrites the same files; a job left
queued by a crash is queued again at start-up like any other.

One bullseye per sequence family ("MOLLI", "ShMOLLI"): values of different sequences have different normal ranges
and are never mixed on one bullseye. Per level the slice shown is one whose level its series names (over an
assumed one), whose contours the quality model trusts (over doubted ones), from the newest unit. A family needs
slices of at least two levels: one slice's own bullseye already shows all the study has of it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from config.settings import Output
from db.models import AnalysisUnit, Job, JobState, Result, Series, SeriesRole, SeriesState, Study
from db.session import session_scope
from dicomnode.analysis.labels import MAX_DESCRIPTION_CHARS
from dicomnode.jobs.claims import JobOutcome, claim_job, claimed_rows, lock_study, mark_done, mark_failed
from dicomnode.jobs.creation import JobKind, job_lease
from dicomnode.jobs.outputs import ALGORITHM_VERSION, OutputWriter
from dicomnode.jobs.storage_full import fail_for_full_storage, is_storage_full
from dicomnode.net import scu
from inference.aha import AhaLevel
from inference.mapping import MapKind
from reports.console_images import StudyBullseye, StudyLevel, render_study_bullseye, study_verdict
from reports.result_summary import (
    AlgorithmInfo,
    AnalysisFigures,
    MapResultSummary,
    SliceFigures,
    read_summary,
    summary_json,
)
from reports.secondary_capture import build_secondary_capture
from reports.sr_study import StudySlice, build_study_report

LOGGER = logging.getLogger(__name__)

STUDY_JOB_KIND = JobKind.STUDY_BULLSEYE.value
#: The map jobs of each map kind, by the kind a unit records ("T1", "T2").
MAP_JOB_KIND = {"T1": "t1_map", "T2": "t2_map"}
_UNIT_KIND = {value: key for key, value in MAP_JOB_KIND.items()}
_ROLES = {"T1": (SeriesRole.RAW_IR, SeriesRole.T1_MAP), "T2": (SeriesRole.T2_PREP, SeriesRole.T2_MAP)}
_TERMINAL = (JobState.DONE, JobState.FAILED)
#: Series numbers of the study's outputs: after every per-unit output (9000-9700); T2's after T1's.
_SC_NUMBER, _SR_NUMBER, _T2_OFFSET = 9800, 9900, 50
#: Levels a sequence family needs before it gets a study bullseye.
MIN_LEVELS = 2


@dataclass(frozen=True)
class ClaimedStudyJob:
    """What a running study job needs from its row (a :class:`dicomnode.jobs.claims.Claim`)."""

    job_id: int
    key: str
    series_id: int
    series_revision: int


@dataclass(frozen=True)
class _Candidate:
    """One analysed slice of a unit's result, as the study bullseye may show it."""

    unit_id: int
    job_id: int
    family: str
    sequence: str
    level: AhaLevel
    level_assumed: bool
    source_series_number: int | None
    image_path: str
    figures: SliceFigures

    @property
    def doubtful(self) -> bool:
        return self.figures.quality is not None and self.figures.quality.doubtful

    def rank(self) -> tuple[bool, bool, int]:
        return (not self.level_assumed, not self.doubtful, self.unit_id)


def study_job_key(study_instance_uid: str, kind: str, unit_keys: Sequence[str]) -> str:
    """The key of the study bullseye of one state: the map kind's units (``unit_keys``) that no later unit
    supersedes."""
    digest = hashlib.sha256("\n".join(sorted(unit_keys)).encode()).hexdigest()[:20]
    return f"{study_instance_uid}/{kind}-{digest}/{STUDY_JOB_KIND}"


def _kind_of_key(key: str) -> str:
    return key.split("/")[1].split("-")[0]


def current_units(session: Session, study_id: int, kind: str) -> list[AnalysisUnit]:
    """The study's units of ``kind`` that no other unit supersedes, oldest first."""
    units = list(session.scalars(select(AnalysisUnit).where(AnalysisUnit.study_id == study_id,
                                                          AnalysisUnit.kind == kind).order_by(AnalysisUnit.id)))
    superseded = {u.supersedes_unit_id for u in units if u.supersedes_unit_id is not None}
    return [u for u in units if u.id not in superseded]


def queue_when_study_done(session: Session, *, study_id: int, kind: str, series: Series) -> int | None:
    """Create the study bullseye job when every map job of ``kind`` in the study has finished; its id when it
    is new, else None.

    Call it in the transaction that ends a map job, after :func:`dicomnode.jobs.claims.lock_study` began it (so
    that of two map jobs ending together the second sees the first's end). A study whose series of this kind are
    still arriving waits for their jobs.
    """
    job_kind = MAP_JOB_KIND[kind]
    states = session.scalars(
        select(Job.state).join(Series, Job.series_id == Series.id)
        .where(Series.study_id == study_id, Job.kind == job_kind)
    ).all()
    if not states or any(state not in _TERMINAL for state in states):
        return None
    receiving = session.scalar(select(Series.id).where(Series.study_id == study_id, Series.role.in_(_ROLES[kind]),
                                                       Series.state == SeriesState.RECEIVING).limit(1))
    if receiving is not None:
        return None
    units = current_units(session, study_id, kind)
    if not _choose([c for unit in units for c in _candidates(session, unit)]):
        return None  # no sequence with analysed slices of two levels
    study = session.get(Study, study_id)
    assert study is not None  # the series' study
    key = study_job_key(study.study_instance_uid, kind, [u.key for u in units])
    if session.scalar(select(Job.id).where(Job.key == key)) is not None:
        return None  # this state's bullseye exists (the study lock makes the check and the insert one step)
    job = Job(key=key, kind=STUDY_JOB_KIND, series_id=series.id, series_revision=series.revision)
    session.add(job)
    session.flush()
    LOGGER.info("study %d: every %s job has finished; study bullseye job %d queued", study_id, kind, job.id)
    return job.id


def queue_after(job_id: int, session_factory: sessionmaker[Session]) -> int | None:
    """:func:`queue_when_study_done` after map job ``job_id`` ended without a result of its own (failed,
    superseded, or analysed with another job's unit), in a transaction of its own."""
    with session_factory() as session:
        row = session.execute(select(Job.kind, Series.study_id).join(Series, Job.series_id == Series.id)
                              .where(Job.id == job_id)).first()
    if row is None or row.kind not in _UNIT_KIND:
        return None
    with session_scope(session_factory) as session:
        lock_study(session, row.study_id)
        job = session.get(Job, job_id)
        assert job is not None
        return queue_when_study_done(session, study_id=row.study_id, kind=_UNIT_KIND[row.kind], series=job.series)


def _analysed(session: Session, unit: AnalysisUnit) -> Result | None:
    """The unit's result when it holds an analysed slice."""
    result = session.scalars(select(Result).where(Result.job_id == unit.job_id)).first()
    summary = read_summary(result.kind, result.summary) if result is not None else None
    if not isinstance(summary, MapResultSummary) or summary.analysis is None:
        return None
    return result if any(s.status == "analysed" for s in summary.analysis.slices) else None


def run_now(job_id: int, *, settings: Settings, session_factory: sessionmaker[Session],
            enqueue_delivery: Callable[[int], object]) -> JobOutcome:
    """Run study job ``job_id`` in this worker under its lease (the map job that queued it has just ended)."""
    with job_lease(job_id, session_factory=session_factory) as held:
        if not held:
            return JobOutcome.SKIPPED
        with session_scope(session_factory) as session:
            job = claim_job(session, job_id)
            if isinstance(job, JobOutcome):
                return job
            claimed = ClaimedStudyJob(job.id, job.key, job.series_id, job.series_revision)
        return run_claimed(claimed, settings=settings, session_factory=session_factory,
                           enqueue_delivery=enqueue_delivery)


def run_claimed(claimed: ClaimedStudyJob, *, settings: Settings, session_factory: sessionmaker[Session],
                enqueue_delivery: Callable[[int], object]) -> JobOutcome:
    """Draw the study bullseye of the claimed job's state, write its Secondary Captures and SRs, record the result
    and queue its transfers. Errors mark the job FAILED (the slices' own outputs are unaffected)."""
    started = time.perf_counter()
    try:
        kind = _kind_of_key(claimed.key)
        with session_factory() as session:
            series = session.get(Series, claimed.series_id)
            assert series is not None
            study_id, study_uid = series.study_id, series.study.study_instance_uid
            units = current_units(session, study_id, kind)
            candidates = [c for unit in units for c in _candidates(session, unit)]
            previous = _previous_reports(session, study_uid, kind, claimed.job_id)
        writer = OutputWriter(claimed.key, settings.storage_root, study_uid, 0,
                              reserve_mb=settings.storage.min_free_mb)
        outputs, summary, reports = _write(candidates, kind, writer, settings, previous)
        transfer_ids = _record(claimed, summary, outputs, reports, settings=settings,
                               session_factory=session_factory)
    except Exception as error:  # the study's own outputs must never take the node down
        if is_storage_full(error):
            fail_for_full_storage(claimed, error, session_factory)
            return JobOutcome.FAILED
        LOGGER.exception("study job %d failed", claimed.job_id)
        mark_failed(claimed, f"{type(error).__name__}: {error}", session_factory, fails_series=False)
        return JobOutcome.FAILED
    for transfer_id in transfer_ids:
        enqueue_delivery(transfer_id)
    LOGGER.info("study job %d: study bullseye and study SR of %d sequence(s) in %.3f s, %d transfers",
                claimed.job_id, len(outputs[Output.SC]), time.perf_counter() - started, len(transfer_ids))
    return JobOutcome.DONE


def _candidates(session: Session, unit: AnalysisUnit) -> list[_Candidate]:
    result = _analysed(session, unit)
    if result is None:
        return []
    summary = read_summary(result.kind, result.summary)
    assert isinstance(summary, MapResultSummary) and summary.analysis is not None
    found = []
    for figures in summary.analysis.slices:
        image = summary.slice_images[figures.index] if figures.index < len(summary.slice_images) else ""
        if figures.status != "analysed" or figures.level is None or not image:
            continue  # a slice without analysis, or recorded before the node kept its image, is left out
        fallback = f"{unit.kind} map"
        found.append(_Candidate(
            unit_id=unit.id, job_id=result.job_id, family=summary.sequence_family or fallback,
            sequence=summary.sequence or fallback, level=AhaLevel(figures.level), level_assumed=summary.level_assumed,
            source_series_number=summary.source_series_number, image_path=image, figures=figures,
        ))
    return found


def _previous_reports(session: Session, study_uid: str, kind: str, job_id: int) -> dict[str, list[Path]]:
    """The study SRs of the newest earlier study bullseye of this kind, by family: what this one replaces."""
    earlier = session.scalars(
        select(Job).where(Job.kind == STUDY_JOB_KIND, Job.key.startswith(f"{study_uid}/{kind}-"), Job.id < job_id,
                          Job.state == JobState.DONE).order_by(Job.id.desc())
    )
    for job in earlier:
        result = session.scalars(select(Result).where(Result.job_id == job.id)).first()
        if result is None:
            continue
        return {family: [Path(p) for p in paths]
                for family, paths in (result.summary or {}).get("study_reports", {}).items()}
    return {}


def _choose(candidates: Sequence[_Candidate]) -> dict[str, dict[AhaLevel, _Candidate]]:
    """Per sequence family with slices of at least :data:`MIN_LEVELS` levels, the slice each level shows."""
    chosen: dict[str, dict[AhaLevel, _Candidate]] = {}
    for candidate in candidates:
        levels = chosen.setdefault(candidate.family, {})
        held = levels.get(candidate.level)
        if held is None or candidate.rank() > held.rank():
            levels[candidate.level] = candidate
    return {family: levels for family, levels in chosen.items() if len(levels) >= MIN_LEVELS}


def _study_level(candidate: _Candidate) -> StudyLevel:
    figures = candidate.figures
    motion = figures.motion
    series = "" if candidate.source_series_number is None else f"series {candidate.source_series_number}"
    return StudyLevel(
        level=candidate.level,
        segment_means_ms={segment: region.mean_ms for segment, region in figures.segments.items()
                          if region.mean_ms is not None},
        motion_checked=motion is not None,
        motion_segments=tuple(motion.segments_with_motion) if motion is not None else (),
        whole_image_motion=motion is not None and motion.has_motion,
        doubtful=candidate.doubtful,
        level_assumed=candidate.level_assumed,
        source=series,
    )


def _description(kind: str, family: str, what: str) -> str:
    sequence = "" if family.endswith(" map") else f" {family}"
    return f"myomap {kind}{sequence} study {what}"[:MAX_DESCRIPTION_CHARS]


def _write(candidates: Sequence[_Candidate], kind: str, writer: OutputWriter, settings: Settings,
           previous: dict[str, list[Path]]
           ) -> tuple[dict[Output, list[Path]], MapResultSummary, dict[str, list[str]]]:
    """Render and write each sequence family's bullseye and study SR; the files, the result's summary and the
    SRs by family (which a later bullseye of the study names as its predecessors)."""
    chosen = _choose(candidates)
    if not chosen:
        raise LookupError(f"no sequence with analysed slices of {MIN_LEVELS} levels in the study's current units")
    offset = 0 if kind == "T1" else _T2_OFFSET
    sc_paths: list[Path] = []
    sr_paths: list[Path] = []
    reports: dict[str, list[str]] = {}
    slices: list[SliceFigures] = []
    verdicts = []
    for number, (family, by_level) in enumerate(sorted(chosen.items())):
        ordered = [by_level[level] for level in AhaLevel if level in by_level]
        sequences = {c.sequence for c in ordered}
        study = StudyBullseye(
            quantity=kind, sequence=sequences.pop() if len(sequences) == 1 else family,
            levels=tuple(_study_level(c) for c in ordered),
            not_for_diagnostic_use=settings.console.not_for_diagnostic_use,
        )
        sources = {c.level: _read(settings.storage_root / c.image_path) for c in ordered}
        image = render_study_bullseye(study)
        verdicts.append(study_verdict(study)[0])
        capture = build_secondary_capture(
            image, sources[ordered[0].level], series_instance_uid=writer.uid("study-sc-series", family),
            sop_instance_uid=writer.uid("study-sc", family), series_number=_SC_NUMBER + offset + number,
            instance_number=1, series_description=_description(kind, family, "bullseye SC"),
        )
        sc_paths.append(writer.write(capture))
        predecessors = [_read(settings.storage_root / p) for p in previous.get(family, [])
                        if (settings.storage_root / p).is_file()]
        report = build_study_report(
            [StudySlice(c.level, sources[c.level], c.figures) for c in ordered], MapKind(kind),
            series_description=_description(kind, family, "SR"), series_instance_uid=writer.uid("study-sr-series",
                                                                                                family),
            sop_instance_uid=writer.uid("study-sr", family), series_number=_SR_NUMBER + offset + number,
            algorithm_version=ALGORITHM_VERSION, previous_versions=predecessors,
        )
        sr_path = writer.write(report)
        sr_paths.append(sr_path)
        reports[family] = [str(sr_path.relative_to(settings.storage_root))]
        slices += [figures.model_copy(update={"index": len(slices) + i})
                   for i, figures in enumerate(c.figures for c in ordered)]
    summary = MapResultSummary(
        kind=kind.lower(), method=STUDY_JOB_KIND.replace("_", " "), slices=len(slices), valid_pixels=0,
        analysis=AnalysisFigures(algorithm=AlgorithmInfo(name="myomap", version=ALGORITHM_VERSION),
                                 banner="; ".join(verdicts), slices=slices),
        study_of_jobs=sorted({c.job_id for by_level in chosen.values() for c in by_level.values()}),
    )
    return {Output.SC: sc_paths, Output.SR: sr_paths}, summary, reports


def _read(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def _record(claimed: ClaimedStudyJob, summary: MapResultSummary, outputs: dict[Output, list[Path]],
            reports: dict[str, list[str]], *, settings: Settings, session_factory: sessionmaker[Session]) -> list[int]:
    """Commit the result, plan its transfers and mark the job DONE, in one transaction; the transfers' ids.

    The study SRs by family are kept beside the typed summary (``study_reports``), for the next bullseye's
    predecessors."""
    root = settings.storage_root
    relative = {output: [str(p.relative_to(root)) for p in paths] for output, paths in outputs.items()}
    with session_scope(session_factory) as session:
        job, series = claimed_rows(session, claimed)
        result = session.scalars(select(Result).where(Result.job_id == job.id,
                                                      Result.kind == STUDY_JOB_KIND)).one_or_none()
        if result is None:
            result = Result(job_id=job.id, kind=STUDY_JOB_KIND)
            session.add(result)
        result.paths = [path for paths in relative.values() for path in paths]
        summary.outputs = summary.outputs.model_validate({output.value: paths for output, paths in relative.items()})
        result.summary = {**summary_json(summary), "study_reports": reports}
        session.flush()
        transfers = scu.plan_output_transfers(session, result=result, series=series, outputs=outputs,
                                              settings=settings)
        mark_done(job, series, claimed)
        session.flush()
        return [transfer.id for transfer in transfers]


__all__ = [
    "STUDY_JOB_KIND", "ClaimedStudyJob", "current_units", "queue_after", "queue_when_study_done", "run_claimed",
    "run_now", "study_job_key",
]
