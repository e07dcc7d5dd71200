"""The verdict of a series and of a study at a glance: what the administrator must act on first.

A series' verdict comes from its newest jobs and their results, never from its state alone: a series whose analysis
ran to the end is DONE even when every slice of it failed or shows motion. A series that another series' job
analysed with it (one analysis per slice and sequence, ``MapResultSummary.unit_series``) takes that result's
verdict. A study's verdict is the most urgent of its series'.

Kinds, most urgent first, with the colour the pages give them: failed (red, with the reason), motion (red, with
the segments), doubtful contours (amber), pending (grey: receiving, queued, running or waiting), motion none and
no motion check (green: analysed, nothing to act on), stored (grey outline: not analysed by design).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from pydantic import ValidationError

from db.models import Job, JobState, Result, Series, SeriesState, Study
from reports.result_summary import MapResultSummary, ReaderResultSummary, ResultSummary, read_summary


class VerdictKind(str, Enum):
    """What a series or a study needs; the value is the CSS class suffix and the filter's name."""

    FAILED = "failed"
    MOTION = "motion"
    DOUBTFUL = "doubtful"
    PENDING = "pending"
    OK = "ok"
    NO_CHECK = "no_check"
    STORED = "stored"


#: Most urgent first: a study shows the first of these that any of its series has.
URGENCY = (VerdictKind.FAILED, VerdictKind.MOTION, VerdictKind.DOUBTFUL, VerdictKind.PENDING, VerdictKind.OK,
           VerdictKind.NO_CHECK, VerdictKind.STORED)

#: The legend of the pages: kind, colour in words, meaning.
LEGEND: tuple[tuple[VerdictKind, str, str], ...] = (
    (VerdictKind.FAILED, "red", "analysis failed (the reason follows)"),
    (VerdictKind.MOTION, "red", "motion artefact found: consider repeating the breath-hold"),
    (VerdictKind.DOUBTFUL, "amber", "contours the quality check doubts: check them"),
    (VerdictKind.PENDING, "grey", "receiving, queued, running or waiting"),
    (VerdictKind.OK, "green", "analysed, no motion found, contours acceptable"),
    (VerdictKind.NO_CHECK, "green", "analysed, motion not assessed (no raw images)"),
    (VerdictKind.STORED, "outline", "stored, nothing to analyse"),
)

LABELS = {
    VerdictKind.FAILED: "failed",
    VerdictKind.MOTION: "motion",
    VerdictKind.DOUBTFUL: "doubtful contours",
    VerdictKind.PENDING: "pending",
    VerdictKind.OK: "no motion",
    VerdictKind.NO_CHECK: "no motion check",
    VerdictKind.STORED: "stored",
}


@dataclass(frozen=True)
class Verdict:
    """One verdict: its kind, a short label for the badge, and the detail in words (the reason, the segments)."""

    kind: VerdictKind
    detail: str = ""

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def urgency(self) -> int:
        """0 for the most urgent kind."""
        return URGENCY.index(self.kind)


def most_urgent(verdicts: Iterable[Verdict]) -> Verdict:
    """The most urgent verdict (the first of equals); stored when there is none."""
    return min(verdicts, key=lambda verdict: verdict.urgency, default=Verdict(VerdictKind.STORED))


def _summary(result: Result) -> ResultSummary | None:
    try:
        return read_summary(result.kind, result.summary)
    except ValidationError:
        return None


def _slice_name(index: int, level: str | None) -> str:
    return f"slice {index + 1}" + (f" ({level})" if level else "")


def _map_verdict(summary: MapResultSummary) -> Verdict:
    analysis = summary.analysis
    if analysis is None or not analysis.slices:
        if summary.reports_error:
            return Verdict(VerdictKind.FAILED, f"no report: {summary.reports_error}")
        return Verdict(VerdictKind.NO_CHECK, "maps only, no slice analysed")
    verdicts: list[Verdict] = []
    n_slices = len(analysis.slices)
    for figures in analysis.slices:
        where = _slice_name(figures.index, figures.level) if n_slices > 1 else ""
        prefix = f"{where}: " if where else ""
        if figures.status == "failed":
            verdicts.append(Verdict(VerdictKind.FAILED, prefix + (figures.reason or "not analysed")))
            continue
        motion, quality = figures.motion, figures.quality
        if motion is not None and motion.has_motion:
            segments = motion.segments_with_motion
            where_motion = (f"segment{'s' if len(segments) > 1 else ''} {', '.join(map(str, segments))}"
                            if segments else "whole image")
            verdicts.append(Verdict(VerdictKind.MOTION, f"{prefix}{where_motion}"))
        if quality is not None and quality.doubtful:
            doubts = "; ".join(quality.doubts)
            dice = "" if quality.predicted_dice is None else f"predicted Dice {quality.predicted_dice:.2f}"
            verdicts.append(Verdict(VerdictKind.DOUBTFUL, prefix + (", ".join(p for p in (dice, doubts) if p))))
        if motion is None:
            verdicts.append(Verdict(VerdictKind.NO_CHECK, prefix + "motion not assessed"))
        else:
            verdicts.append(Verdict(VerdictKind.OK))
    if summary.reports_error:
        verdicts.append(Verdict(VerdictKind.FAILED, f"no report: {summary.reports_error}"))
    worst = most_urgent(verdicts)
    same = [v.detail for v in verdicts if v.kind is worst.kind and v.detail]
    return Verdict(worst.kind, "; ".join(same))


def _reader_verdict(summary: ReaderResultSummary) -> Verdict:
    not_scored = [s for s in summary.slices if s.status != "scored"]
    if summary.slices and len(not_scored) == len(summary.slices):
        reasons = "; ".join(dict.fromkeys(note for s in not_scored for note in s.notes)) or "no slice scored"
        return Verdict(VerdictKind.FAILED, f"not scored: {reasons}")
    if not_scored or summary.problems:
        parts = [f"{len(not_scored)} of {len(summary.slices)} slices not scored"] if not_scored else []
        parts.extend(summary.problems[:2])
        return Verdict(VerdictKind.DOUBTFUL, "; ".join(parts))
    return Verdict(VerdictKind.OK, f"scored against {summary.reference}" if summary.reference else "scored")


def result_verdict(result: Result) -> Verdict:
    """The verdict of one result: its slices' motion, quality and failures (a reader score's scoring)."""
    summary = _summary(result)
    if isinstance(summary, MapResultSummary):
        return _map_verdict(summary)
    if isinstance(summary, ReaderResultSummary):
        return _reader_verdict(summary)
    return Verdict(VerdictKind.NO_CHECK, "result without a readable analysis")


#: Jobs that work on the whole study (its bullseye and SR over every map analysis): their results repeat the
#: slices of the study's analyses, so only their own failure counts for the series they are filed under.
STUDY_LEVEL_JOB_KINDS = frozenset({"study_bullseye"})


def current_jobs(series: Series) -> list[Job]:
    """The jobs of the series' newest revision that has jobs (older revisions' results are superseded)."""
    if not series.jobs:
        return []
    revision = max(job.series_revision for job in series.jobs)
    return sorted((job for job in series.jobs if job.series_revision == revision), key=lambda job: job.id)


def unit_results(study: Study) -> dict[str, Result]:
    """Series Instance UID -> the newest result that analysed it (its own or another series' job of its unit)."""
    found: dict[str, Result] = {}
    results = sorted(
        (result for series in study.series for job in current_jobs(series) if job.kind not in STUDY_LEVEL_JOB_KINDS
         for result in job.results),
        key=lambda result: result.id,
    )
    for result in results:
        summary = result.summary or {}
        listed = summary.get("unit_series")
        members: list[object] = list(listed) if isinstance(listed, list) else []
        for uid in [result.job.series.series_instance_uid, *members]:
            if isinstance(uid, str):
                found[uid] = result
    return found


def series_verdict(series: Series, analysed_by: Result | None = None) -> Verdict:
    """The verdict of one series (its study, jobs and results loaded); ``analysed_by``: the result that analysed
    it when another series' job did (:func:`unit_results`)."""
    if series.state in (SeriesState.RECEIVING, SeriesState.COMPLETE):
        waiting = next((job.error for job in current_jobs(series) if job.state is JobState.WAITING), "")
        detail = "receiving images" if series.state is SeriesState.RECEIVING else "queued"
        return Verdict(VerdictKind.PENDING, waiting or detail)
    jobs = current_jobs(series)
    verdicts: list[Verdict] = []
    for job in jobs:
        if job.state is JobState.FAILED:
            what = f"{job.kind.replace('_', ' ')}: " if job.kind in STUDY_LEVEL_JOB_KINDS else ""
            verdicts.append(Verdict(VerdictKind.FAILED, what + (job.error or "the analysis stopped")))
        elif job.state in (JobState.QUEUED, JobState.RUNNING):
            verdicts.append(Verdict(VerdictKind.PENDING, job.state.value))
        elif job.state is JobState.WAITING:
            verdicts.append(Verdict(VerdictKind.PENDING, job.error or "waiting"))
        if job.kind not in STUDY_LEVEL_JOB_KINDS:
            verdicts.extend(result_verdict(result) for result in job.results)
    own_results = [result for job in jobs if job.kind not in STUDY_LEVEL_JOB_KINDS for result in job.results]
    if analysed_by is not None and not own_results:
        verdicts.append(result_verdict(analysed_by))
    if series.state is SeriesState.FAILED and not any(v.kind is VerdictKind.FAILED for v in verdicts):
        verdicts.append(Verdict(VerdictKind.FAILED, "the analysis failed"))
    if not verdicts:
        return Verdict(VerdictKind.STORED)
    worst = most_urgent(verdicts)
    return Verdict(worst.kind, "; ".join(dict.fromkeys(v.detail for v in verdicts if v.kind is worst.kind
                                                       and v.detail)))


@dataclass(frozen=True)
class StudyVerdicts:
    """A study's verdict and each of its series' (by Series Instance UID)."""

    study: Verdict
    series: dict[str, Verdict]


def study_verdicts(study: Study) -> StudyVerdicts:
    """The verdicts of a study and its series (series, jobs and results loaded)."""
    analysed = unit_results(study)
    by_series = {
        series.series_instance_uid: series_verdict(series, analysed.get(series.series_instance_uid))
        for series in study.series
    }
    worst = most_urgent(by_series.values())
    n_worst = sum(1 for verdict in by_series.values() if verdict.kind is worst.kind)
    detail = f"{n_worst} series" if n_worst > 1 and worst.kind not in (VerdictKind.OK, VerdictKind.STORED) else \
        worst.detail
    return StudyVerdicts(Verdict(worst.kind, detail), by_series)

