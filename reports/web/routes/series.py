"""Series: GET /api/series/{series_uid} and the series page (instances, role, state, jobs, and each result with its
images, measurements, verdicts, transfers and downloads)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from starlette.responses import Response

from db.models import Job, Result, Series
from reports.web.deps import SessionDep, TemplatesDep, render, render_error, uid_parameter
from reports.web.routes.results import AHA_SEGMENT_NAMES, result_detail
from reports.web.schemas import SeriesDetail, series_detail

router = APIRouter(tags=["series"])

SeriesUid = Annotated[str, uid_parameter("Series Instance UID")]


def get_series(session: Session, *, series_uid: str) -> Series | None:
    """A series with its study, jobs, results and their transfers loaded."""
    return session.scalar(
        select(Series)
        .options(
            selectinload(Series.study),
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
    """One series: instance count, role, state, and its jobs with their results and transfers."""
    series = get_series(session, series_uid=series_uid)
    if series is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_not_found(series_uid))
    return series_detail(series)


@router.get("/series/{series_uid}", response_class=HTMLResponse, include_in_schema=False)
def series_page(
    series_uid: SeriesUid, request: Request, session: SessionDep, templates: TemplatesDep
) -> Response:
    """The series page."""
    series = get_series(session, series_uid=series_uid)
    if series is None:
        return render_error(templates, request, status.HTTP_404_NOT_FOUND, _not_found(series_uid))
    results = {result.id: result_detail(result, request) for job in series.jobs for result in job.results}
    return render(
        templates,
        request,
        "series.html",
        {
            "series": series,
            "detail": series_detail(series),
            "results": results,
            "segment_names": AHA_SEGMENT_NAMES,
        },
    )
