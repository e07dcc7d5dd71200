"""Series: GET /api/series/{series_uid} and the series page (instances, role, state, jobs, and each result with its
images, measurements, verdicts, transfers and downloads)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from starlette.responses import Response

from db.models import Job, Result, Series, Study
from reports.web.deps import SessionDep, TemplatesDep, render, render_error, uid_parameter
from reports.web.figures import models_named_once, result_figures
from reports.web.routes.results import AHA_SEGMENT_NAMES, result_detail
from reports.web.routes.transfers import KIND_LABELS
from reports.web.schemas import SeriesDetail, object_kind, series_detail
from reports.web.verdicts import LABELS, LEGEND, study_verdicts

router = APIRouter(tags=["series"])

SeriesUid = Annotated[str, uid_parameter("Series Instance UID")]


def get_series(session: Session, *, series_uid: str) -> Series | None:
    """A series with its study, jobs, results and their transfers loaded."""
    return session.scalar(
        select(Series)
        .options(
            selectinload(Series.study).selectinload(Study.series).selectinload(Series.jobs)
            .selectinload(Job.results),
            selectinload(Series.jobs).selectinload(Job.results).selectinload(Result.transfers),
        )
        .where(Series.series_instance_uid == series_uid)
    )


def _not_found(series_uid: str) -> str:
    return f"no series with Series Instance UID {series_uid}"


@router.get(
    "/api/series/{series_uid}", response_model=SeriesDetail, responses={404: {"description": "unknown UID"}}
)
def api_get_series(series_uid: SeriesUid, session: SessionDep) -> SeriesDetail:
    """One series: instance count, role, state, verdict, and its jobs with their results and transfers."""
    series = get_series(session, series_uid=series_uid)
    if series is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_not_found(series_uid))
    return series_detail(series, study_verdicts(series.study).series[series.series_instance_uid])


@router.get("/series/{series_uid}", response_class=HTMLResponse, include_in_schema=False)
def series_page(
    series_uid: SeriesUid, request: Request, session: SessionDep, templates: TemplatesDep
) -> Response:
    """The series page."""
    series = get_series(session, series_uid=series_uid)
    if series is None:
        return render_error(templates, request, status.HTTP_404_NOT_FOUND, _not_found(series_uid))
    results = {result.id: result_detail(result, request) for job in series.jobs for result in job.results}
    series_names = {
        other.series_instance_uid: " ".join(
            part for part in (str(other.series_number or ""), other.description or "(no description)") if part)
        for other in series.study.series
    }
    figures = {
        result.id: result_figures(result.kind, result.summary, series_names)
        for job in series.jobs for result in job.results
    }
    transfers = [transfer for job in series.jobs for result in job.results for transfer in result.transfers]
    transfer_kinds = {transfer.id: object_kind(transfer.result, transfer.path) for transfer in transfers}
    transfer_files = {transfer.id: PurePosixPath(transfer.path).name for transfer in transfers}
    return render(
        templates,
        request,
        "series.html",
        {
            "series": series,
            "detail": series_detail(series),
            "results": results,
            "figures": figures,
            "transfer_kinds": transfer_kinds,
            "transfer_files": transfer_files,
            "kind_labels": KIND_LABELS,
            "models_named_once": models_named_once,
            "verdict": study_verdicts(series.study).series[series.series_instance_uid],
            "legend": LEGEND,
            "labels": LABELS,
            "segment_names": AHA_SEGMENT_NAMES,
        },
    )
