"""Studies: GET /api/studies, GET /api/studies/{study_uid}, and the start page (studies and their series)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload
from starlette.responses import Response

from db.models import Study
from reports.web.deps import SessionDep, TemplatesDep, render, uid_parameter
from reports.web.schemas import StudyDetail, StudySummary, study_detail, study_summary

router = APIRouter(tags=["studies"])

PAGE_SIZE = 50

StudyUid = Annotated[str, uid_parameter("Study Instance UID")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many studies")]
Offset = Annotated[int, Query(ge=0, description="skip this many studies (newest first)")]


def list_studies(session: Session, *, limit: int, offset: int) -> list[Study]:
    """Studies newest first, with their series loaded."""
    return list(
        session.scalars(
            select(Study)
            .options(selectinload(Study.series))
            .order_by(Study.created_at.desc(), Study.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )


def count_studies(session: Session) -> int:
    return session.scalar(select(func.count(Study.id))) or 0


def get_study(session: Session, *, study_uid: str) -> Study | None:
    return session.scalar(
        select(Study).options(selectinload(Study.series)).where(Study.study_instance_uid == study_uid)
    )


@router.get("/api/studies", response_model=list[StudySummary])
def api_list_studies(session: SessionDep, limit: Limit = 100, offset: Offset = 0) -> list[StudySummary]:
    """Received studies, newest first."""
    return [study_summary(study) for study in list_studies(session, limit=limit, offset=offset)]


@router.get(
    "/api/studies/{study_uid}", response_model=StudyDetail, responses={404: {"description": "unknown UID"}}
)
def api_get_study(study_uid: StudyUid, session: SessionDep) -> StudyDetail:
    """One study with its series."""
    study = get_study(session, study_uid=study_uid)
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no study with Study Instance UID {study_uid}")
    return study_detail(study)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def studies_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    page: Annotated[int, Query(ge=1, description="page number, from 1")] = 1,
) -> Response:
    """The start page: studies, newest first, each with its series and their states."""
    total = count_studies(session)
    studies = list_studies(session, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    n_pages = max(1, -(-total // PAGE_SIZE))
    return render(
        templates,
        request,
        "studies.html",
        {"studies": studies, "page": page, "n_pages": n_pages, "total": total},
    )
