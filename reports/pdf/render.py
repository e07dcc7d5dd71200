"""Trainee progress and team reports as PDF: the templates filled from the programme's dataclasses, then WeasyPrint.

The reports render only what :mod:`reports.programme.model` holds (the queries fill it); they never read the
database. Every page says the node's version, the date it was made and that it is not for clinical use.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from reports.pdf.agreement import Limits, agreement_plot, agreement_point
from reports.pdf.bullseye import bias_bullseye, mean_segment_bias_ms
from reports.pdf.criteria import accreditation_blocks
from reports.pdf.figures import error_mode_words, headline_figures, latest_per_case
from reports.pdf.progress_charts import (
    dice_over_attempts,
    t1_difference_over_attempts,
    team_dice_over_attempts,
    team_t1_difference_over_attempts,
)
from reports.pdf.thumbnails import worst_thumbnails
from reports.programme.model import Attempt, TeamSummary, TraineeProgress

TEMPLATES = Path(__file__).parent / "templates"
NOT_FOR_CLINICAL_USE = "For training and accreditation only. Not for clinical use."
#: How many of the worst attempts a trainee report shows as overlays.
WORST_CASES = 4


def _number(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "\u2013"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _environment() -> Environment:
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["number"] = _number
    environment.filters["mode_words"] = error_mode_words
    return environment


def _page_context(title: str, subject: str, node_version: str, generated_at: datetime) -> dict[str, Any]:
    return {
        "title": title,
        "subject": subject,
        "node_version": node_version,
        "generated": f"{generated_at.day} {generated_at:%B %Y, %H:%M}",
        "generated_iso": generated_at.date().isoformat(),
        "not_for_clinical_use": NOT_FOR_CLINICAL_USE,
        "stylesheet": (TEMPLATES / "report.css").read_text(encoding="utf-8"),
    }


def _pdf(html: str) -> bytes:
    from weasyprint import HTML  # loads pango: only when a report is made

    document = HTML(string=html, base_url=str(TEMPLATES)).write_pdf()
    assert document is not None  # write_pdf without a target returns the bytes
    return bytes(document)


def trainee_html(progress: TraineeProgress, *, node_version: str, generated_at: datetime,
                 storage_root: Path | None = None) -> str:
    """The trainee progress report as HTML (what :func:`trainee_pdf` prints)."""
    attempts = progress.attempts
    bias = mean_segment_bias_ms([a.segment_t1_differences_ms for a in latest_per_case(attempts)])
    points = [agreement_point(a.case_label, a.t1_ms, a.t1_difference_ms) for a in attempts
              if a.t1_difference_ms is not None]
    context = _page_context("Trainee progress report", progress.reader, node_version, generated_at) | {
        "progress": progress,
        "figures": headline_figures(attempts),
        "accreditation": accreditation_blocks(progress.accreditation),
        "dice_plot": dice_over_attempts(attempts),
        "t1_plot": t1_difference_over_attempts(attempts),
        "bullseye": bias_bullseye(bias, title="T1 bias per AHA segment (latest per case)"),
        "agreement": agreement_plot(points, title="T1 agreement with the reference",
                                    groups=[a.case_label for a in attempts]),
        "limits": Limits.of([point.difference_ms for point in points]),
        "by_mean": all(point.mean_ms is not None for point in points),
        "worst": worst_thumbnails(attempts, storage_root, WORST_CASES),
        "latest_advice": _latest_advice(attempts),
    }
    return _environment().get_template("trainee.html").render(context)


def _latest_advice(attempts: Sequence[Attempt]) -> list[tuple[str, str]]:
    """(error mode in words, advice) of the latest attempts that found an error, each mode once."""
    advice: dict[str, str] = {}
    for attempt in reversed(latest_per_case(attempts)):
        if attempt.error_mode and attempt.error_mode != "good" and attempt.advice:
            advice.setdefault(error_mode_words(attempt.error_mode), attempt.advice)
    return list(advice.items())


def trainee_pdf(progress: TraineeProgress, *, node_version: str, generated_at: datetime,
                storage_root: Path | None = None) -> bytes:
    """The trainee progress report as PDF bytes.

    ``storage_root`` is where the attempts' overlays are stored (their paths are relative to it); without it the
    worst cases are listed without their images.
    """
    return _pdf(trainee_html(progress, node_version=node_version, generated_at=generated_at,
                             storage_root=storage_root))


def team_html(summary: TeamSummary, *, node_version: str, generated_at: datetime) -> str:
    """The team report as HTML (what :func:`team_pdf` prints)."""
    latest = [attempt for trainee in summary.trainees for attempt in latest_per_case(trainee.attempts)]
    arrivals = sorted((a for trainee in summary.trainees for a in trainee.attempts if a.t1_difference_ms is not None),
                      key=lambda a: a.received_at)
    points = [agreement_point(a.reader, a.t1_ms, a.t1_difference_ms) for a in arrivals
              if a.t1_difference_ms is not None]
    rows = []
    for trainee in summary.trainees:
        figures = headline_figures(trainee.attempts)
        rows.append({"trainee": trainee, "figures": figures,
                     "accreditation": accreditation_blocks(trainee.accreditation),
                     "ready": trainee.reader in summary.ready})
    context = _page_context("Team report", summary.team, node_version, generated_at) | {
        "summary": summary,
        "rows": rows,
        "dice_plot": team_dice_over_attempts(summary.trainees),
        "t1_plot": team_t1_difference_over_attempts(summary.trainees),
        "bullseye": bias_bullseye(mean_segment_bias_ms([a.segment_t1_differences_ms for a in latest]),
                                  title="Team T1 bias per AHA segment"),
        "agreement": agreement_plot(points, title="T1 agreement with the reference",
                                    groups=[trainee.reader for trainee in summary.trainees]),
        "limits": Limits.of([point.difference_ms for point in points]),
        "by_mean": all(point.mean_ms is not None for point in points),
    }
    return _environment().get_template("team.html").render(context)


def team_pdf(summary: TeamSummary, *, node_version: str, generated_at: datetime) -> bytes:
    """The team report as PDF bytes."""
    return _pdf(team_html(summary, node_version=node_version, generated_at=generated_at))
