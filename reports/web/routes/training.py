"""The training programme's dashboards: /training (who the user may see), /training/trainee/{name} (each attempt
against its reference, progress plots, accreditation) and /training/team/{name} (trainees side by side, the
team's spread per case, who is ready).

Pages render :mod:`reports.programme.model` values that :mod:`reports.programme.queries` fills; the access rule
(:mod:`reports.web.access`) is checked before anything is queried.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy import select
from starlette.responses import Response

from db.models import Reader, ReaderRole
from db.readers import ReaderNames
from inference.trainee_scoring import ErrorMode
from reports.programme.attempts import case_labels, recorded_attempts, to_attempts
from reports.programme.error_modes import error_mode_words
from reports.programme.model import AccreditationStatus, Attempt, TeamSummary, TraineeProgress
from reports.programme.people import list_readers, teams_of
from reports.web.access import ViewerDep
from reports.web.deps import SessionDep, SettingsDep, TemplatesDep, render, render_error
from reports.web.routes.results import AHA_SEGMENT_NAMES
from reports.web.svg_plots import LineSeries, bullseye, line_chart
from reports.web.training_pdf import pdf_reports_available

LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["training"])

ReaderName = Annotated[str, PathParam(min_length=1, max_length=64, description="reader name")]
TeamName = Annotated[str, PathParam(min_length=1, max_length=64, description="team name")]
AttemptIndex = Annotated[int, PathParam(ge=0, description="position of the attempt on the trainee page, from 0")]

#: The Dice axis: below 0.5 a contour is hardly of the myocardium, and the range above it is where progress shows.
DICE_RANGE = (0.5, 1.0)
#: Colour limit of the per-segment T1 difference bullseyes (ms): full colour at this difference.
SEGMENT_T1_LIMIT_MS = 60.0


@dataclass(frozen=True)
class AttemptView:
    """One attempt as the page shows it: the attempt, its position (for the overlay URL) and its bullseye."""

    index: int
    attempt: Attempt
    bullseye: Markup | None
    error_words: str  # the error mode in words ("" when none or a good contour)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _dice_threshold(progress: TraineeProgress) -> float | None:
    """The Dice threshold of the first criterion on Dice (its threshold text starts with the comparison, e.g.
    ">= 0.85 over the last 5 cases"), for the plots' dashed line; None when no training set sets one."""
    for status_ in progress.accreditation:
        for outcome in status_.outcomes:
            if "dice" in outcome.name.lower():
                number = _NUMBER.search(outcome.threshold)
                if number is not None:
                    return float(number.group())
    return None


def trainee_plots(progress: TraineeProgress) -> dict[str, Markup]:
    """Dice per attempt on each case, Dice and T1 difference across cases in order, as inline SVG."""
    attempts = progress.attempts
    by_case: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_case.setdefault(attempt.case_label, []).append(attempt)
    threshold = _dice_threshold(progress)
    per_case = line_chart(
        [LineSeries(case, [(float(a.attempt_number), a.dice) for a in case_attempts])
         for case, case_attempts in by_case.items()],
        title="Dice on each case over repeated attempts", x_label="attempt on the case",
        y_label="Dice", y_range=DICE_RANGE, threshold=threshold,
        threshold_label=f"criterion {threshold:.2f}" if threshold is not None else "",
    )
    ticks = [(float(n), str(n)) for n in range(1, len(attempts) + 1)]
    across = line_chart(
        [LineSeries("Dice", [(float(n), a.dice) for n, a in enumerate(attempts, start=1)])],
        title="Dice across cases, in the order received", x_label="attempt (all cases, oldest first)",
        y_label="Dice", y_range=DICE_RANGE, threshold=threshold, x_ticks=ticks,
        threshold_label=f"criterion {threshold:.2f}" if threshold is not None else "",
    )
    t1 = line_chart(
        [LineSeries("T1 difference", [(float(n), a.t1_difference_ms) for n, a in enumerate(attempts, start=1)])],
        title="Myocardial T1 difference to the reference", x_label="attempt (all cases, oldest first)",
        y_label="reader minus reference (ms)", threshold=0.0, threshold_label="reference", x_ticks=ticks,
    )
    distance = line_chart(
        [LineSeries("mean surface distance",
                    [(float(n), a.mean_surface_distance_mm) for n, a in enumerate(attempts, start=1)])],
        title="Mean surface distance to the reference", x_label="attempt (all cases, oldest first)",
        y_label="mm", x_ticks=ticks,
    )
    return {"per_case": per_case, "across": across, "t1": t1, "distance": distance}


def _attempt_views(progress: TraineeProgress) -> list[AttemptView]:
    return [
        AttemptView(index, attempt, bullseye(attempt.segment_t1_differences_ms, title="T1 by segment",
                                             unit="ms", limit=SEGMENT_T1_LIMIT_MS, size=180)
                    if attempt.segment_t1_differences_ms else None,
                    "" if attempt.error_mode == ErrorMode.GOOD.value else error_mode_words(attempt.error_mode))
        for index, attempt in enumerate(progress.attempts)
    ]


def _latest_mean_segments(progress: TraineeProgress) -> dict[int, float]:
    """Mean per-segment T1 difference over each case's latest attempt (the trainee's current bias)."""
    latest: dict[tuple[str, int | None], Attempt] = {}
    for attempt in progress.attempts:
        latest[(attempt.case_label, attempt.slice_index)] = attempt
    collected: dict[int, list[float]] = {}
    for attempt in latest.values():
        for segment, value in attempt.segment_t1_differences_ms.items():
            collected.setdefault(int(segment), []).append(value)
    return {segment: statistics.fmean(values) for segment, values in collected.items()}


@dataclass(frozen=True)
class TraineeRow:
    """A trainee's line on the team page."""

    progress: TraineeProgress
    cases: int
    latest_dice: float | None
    mean_abs_t1_ms: float | None
    common_error: str
    ready: bool


def _trainee_row(progress: TraineeProgress, ready: set[str]) -> TraineeRow:
    latest: dict[tuple[str, int | None], Attempt] = {}
    for attempt in progress.attempts:
        latest[(attempt.case_label, attempt.slice_index)] = attempt
    dices = [a.dice for a in latest.values() if a.dice is not None]
    t1s = [abs(a.t1_difference_ms) for a in latest.values() if a.t1_difference_ms is not None]
    errors = Counter(a.error_mode for a in progress.attempts if a.error_mode and a.error_mode != ErrorMode.GOOD.value)
    return TraineeRow(progress, len({a.case_label for a in progress.attempts}), _mean(dices), _mean(t1s),
                      error_mode_words(errors.most_common(1)[0][0]) if errors else "", progress.reader in ready)


def team_plots(summary: TeamSummary) -> list[Markup]:
    """Each trainee's Dice and |T1 difference| over their attempts, a line per trainee."""
    dice = line_chart(
        [LineSeries(trainee.reader, [(float(n), a.dice) for n, a in enumerate(trainee.attempts, start=1)])
         for trainee in summary.trainees],
        title="Each trainee's Dice over their attempts", x_label="attempt (oldest first)", y_label="Dice",
        y_range=DICE_RANGE,
    )
    t1 = line_chart(
        [LineSeries(trainee.reader, [(float(n), None if a.t1_difference_ms is None else abs(a.t1_difference_ms))
                                     for n, a in enumerate(trainee.attempts, start=1)])
         for trainee in summary.trainees],
        title="Each trainee's |T1 difference| over their attempts", x_label="attempt (oldest first)",
        y_label="|reader minus reference| (ms)", threshold=0.0,
    )
    return [dice, t1]


@router.get("/training", response_class=HTMLResponse, name="training_page", include_in_schema=False)
def training_page(request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep) -> Response:
    """The trainees and teams the user may see; a trainee goes straight to their own dashboard."""
    if viewer.reader is not None and viewer.readers is not None and viewer.readers <= {viewer.reader}:
        return RedirectResponse(request.app.url_path_for("trainee_page", name=viewer.reader),
                                status_code=status.HTTP_303_SEE_OTHER)
    query = select(Reader).order_by(Reader.team, Reader.name)
    readers = [reader for reader in session.scalars(query) if viewer.may_see_reader(reader.name)]
    teams = sorted({team for reader in readers for team in teams_of(reader) if viewer.may_see_team(team)})
    return render(templates, request, "training_index.html", {
        "viewer": viewer, "readers": readers, "teams": teams, "trainee_role": ReaderRole.TRAINEE.value,
    })


def _accreditation_rows(statuses: list[AccreditationStatus]) -> list[AccreditationStatus]:
    return sorted(statuses, key=lambda s: s.training_set)


@router.get("/training/trainee/{name}", response_class=HTMLResponse, name="trainee_page", include_in_schema=False)
def trainee_page(
    name: ReaderName, request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep
) -> Response:
    """One trainee's attempts, progress plots and accreditation."""
    from reports.programme.queries import trainee_progress

    viewer.require_reader(name)
    if session.scalar(select(Reader.id).where(Reader.name == name)) is None:
        return render_error(templates, request, status.HTTP_404_NOT_FOUND, f"no reader named {name}")
    progress = trainee_progress(session, name)
    return render(templates, request, "training_trainee.html", {
        "viewer": viewer, "progress": progress, "attempts": _attempt_views(progress),
        "plots": trainee_plots(progress),
        "bias": bullseye(_latest_mean_segments(progress), title="T1 bias per AHA segment",
                         unit="ms", limit=SEGMENT_T1_LIMIT_MS),
        "accreditation": _accreditation_rows(progress.accreditation),
        "segment_names": AHA_SEGMENT_NAMES, "pdf": pdf_reports_available(),
    })


def _attempts_of(session: SessionDep, name: str) -> list[Attempt]:
    """The reader's attempts in the order of their dashboard, without evaluating their accreditation (an image
    request needs only its attempt's overlay)."""
    names = ReaderNames.load(session)
    reader = names.named(name)
    if reader is None:
        return []
    recorded = [item for item in recorded_attempts(session, names) if item.person == reader.name]
    return to_attempts(recorded, case_labels(session))


@router.get("/training/trainee/{name}/attempts/{index}/overlay.png", name="attempt_overlay", include_in_schema=False)
def attempt_overlay(
    name: ReaderName, index: AttemptIndex, session: SessionDep, settings: SettingsDep, viewer: ViewerDep
) -> Response:
    """The overlay of one attempt (reader's and reference contours over the map), for those who may see it."""
    viewer.require_reader(name)
    attempts = _attempts_of(session, name)
    if index >= len(attempts) or attempts[index].overlay_png is None:
        return Response(f"attempt {index} of {name} has no overlay", status_code=404, media_type="text/plain")
    root = settings.storage_root.resolve()
    path = (root / str(attempts[index].overlay_png)).resolve()
    # The path comes from the database, never from the request; it must still lie under the storage root.
    if not path.is_relative_to(root) or not path.is_file():
        LOGGER.warning("overlay of attempt %d of a reader is missing on disk", index)
        return Response(f"the overlay of attempt {index} is not on disk", status_code=404, media_type="text/plain")
    return FileResponse(Path(path), media_type="image/png")


@router.get("/training/team/{name}", response_class=HTMLResponse, name="team_page", include_in_schema=False)
def team_page(
    name: TeamName, request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep
) -> Response:
    """A team's trainees side by side, the spread per case and who is ready for accreditation."""
    from reports.programme.queries import team_summary

    viewer.require_team(name)
    if not list_readers(session, team=name):
        return render_error(templates, request, status.HTTP_404_NOT_FOUND, f"no team named {name}")
    summary = team_summary(session, name)
    ready = set(summary.ready)
    return render(templates, request, "training_team.html", {
        "viewer": viewer, "summary": summary,
        "rows": [_trainee_row(trainee, ready) for trainee in summary.trainees],
        "plots": team_plots(summary), "pdf": pdf_reports_available(),
    })


def _pdf_response(data: bytes, filename: str) -> Response:
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _file_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64] or "report"


@router.get("/training/trainee/{name}/report.pdf", name="trainee_pdf", include_in_schema=False)
def trainee_report_pdf(name: ReaderName, request: Request, session: SessionDep, settings: SettingsDep,
                       viewer: ViewerDep) -> Response:
    """The trainee's progress report as PDF (the same renderer as ``myomap report trainee``)."""
    from reports.programme.queries import trainee_progress

    viewer.require_reader(name)
    if not pdf_reports_available():
        return Response("the PDF renderer is not installed on this node", status_code=404, media_type="text/plain")
    from reports.pdf.render import trainee_pdf

    if session.scalar(select(Reader.id).where(Reader.name == name)) is None:
        return Response(f"no reader named {name}", status_code=404, media_type="text/plain")
    data = trainee_pdf(trainee_progress(session, name), node_version=request.app.version,
                       generated_at=datetime.now(UTC), storage_root=settings.storage_root)
    return _pdf_response(data, f"trainee-{_file_part(name)}.pdf")


@router.get("/training/team/{name}/report.pdf", name="team_pdf", include_in_schema=False)
def team_report_pdf(name: TeamName, request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """The team report as PDF (the same renderer as ``myomap report team``)."""
    from reports.programme.queries import team_summary

    viewer.require_team(name)
    if not pdf_reports_available():
        return Response("the PDF renderer is not installed on this node", status_code=404, media_type="text/plain")
    from reports.pdf.render import team_pdf

    if not list_readers(session, team=name):
        return Response(f"no team named {name}", status_code=404, media_type="text/plain")
    data = team_pdf(team_summary(session, name), node_version=request.app.version, generated_at=datetime.now(UTC))
    return _pdf_response(data, f"team-{_file_part(name)}.pdf")


@router.get("/api/training/trainee/{name}", name="api_trainee",
            responses={403: {"description": "not a reader the user may see"}, 404: {"description": "unknown"}})
def api_trainee(name: ReaderName, session: SessionDep, viewer: ViewerDep) -> TraineeProgress:
    """A reader's attempts and accreditation, as the trainee dashboard shows them."""
    from reports.programme.queries import trainee_progress

    viewer.require_reader(name)
    if session.scalar(select(Reader.id).where(Reader.name == name)) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no reader named {name}")
    return trainee_progress(session, name)


@router.get("/api/training/team/{name}", name="api_team",
            responses={403: {"description": "not a team the user may see"}, 404: {"description": "unknown"}})
def api_team(name: TeamName, session: SessionDep, viewer: ViewerDep) -> TeamSummary:
    """A team's trainees, spread per case and who is ready, as the team dashboard shows them."""
    from reports.programme.queries import team_summary

    viewer.require_team(name)
    if not list_readers(session, team=name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no team named {name}")
    return team_summary(session, name)
