"""Studies: GET /api/studies, GET /api/studies/{study_uid}, and the start page (studies and their series, each
with its verdict; search by patient, accession number, date and condition; keyset pages)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from starlette.responses import Response

from db.models import Job, Series, Study
from db.repository import StudyAttention, StudySearch, count_studies, search_studies, study_search_conditions
from reports.web.deps import SessionDep, TemplatesDep, render, uid_parameter
from reports.web.schemas import StudyDetail, StudySummary, study_detail, study_summary
from reports.web.verdicts import LABELS, LEGEND, StudyVerdicts, VerdictKind, study_verdicts

router = APIRouter(tags=["studies"])

PAGE_SIZE = 50

StudyUid = Annotated[str, uid_parameter("Study Instance UID")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many studies")]
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def _dicom_date(value: str | None, name: str) -> str:
    """YYYY-MM-DD (a date input's value) or YYYYMMDD as a DICOM date; empty when not given."""
    if not value:
        return ""
    match = _DATE.match(value.strip())
    if match is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=f"{name} must be a date, YYYY-MM-DD")
    return "".join(match.groups())


def study_search(
    name: Annotated[str, Query(max_length=128, description="words of the patient's name, any case")] = "",
    patient_id: Annotated[str, Query(max_length=64, description="patient ID; a trailing * for a prefix")] = "",
    accession: Annotated[str, Query(max_length=64, description="accession number; trailing * for a prefix")] = "",
    date_from: Annotated[str | None, Query(description="study date from (YYYY-MM-DD)")] = None,
    date_to: Annotated[str | None, Query(description="study date to, included (YYYY-MM-DD)")] = None,
    state: Annotated[StudyAttention | None, Query(description="only studies with a series in this condition")]
    = None,
) -> StudySearch:
    """The search of the studies list and GET /api/studies, from the query string."""
    return StudySearch(
        patient_name=name.strip(), patient_id=patient_id.strip(), accession_number=accession.strip(),
        date_from=_dicom_date(date_from, "date_from"), date_to=_dicom_date(date_to, "date_to"), attention=state,
    )


SearchDep = Annotated[StudySearch, Depends(study_search)]


@dataclass(frozen=True)
class StudyRow:
    study: Study
    verdicts: StudyVerdicts


def _matches(search: StudySearch, verdicts: StudyVerdicts) -> bool:
    # The SQL condition of a state filter selects candidates from the summaries' text; the verdicts decide.
    if search.attention is None:
        return True
    wanted = VerdictKind(search.attention.value)
    return any(verdict.kind is wanted for verdict in verdicts.series.values())


def page_rows(
    session: Session, search: StudySearch, *, before_id: int | None, after_id: int | None, limit: int = PAGE_SIZE,
    offset: int = 0,
) -> tuple[list[StudyRow], int | None, int | None]:
    """One page of studies with their verdicts, and the keyset cursors of the older and the newer page (None when
    there is no such page)."""
    studies = search_studies(session, search=search, limit=limit, before_id=before_id, after_id=after_id,
                             offset=offset)
    rows = [StudyRow(study, study_verdicts(study)) for study in studies]
    rows = [row for row in rows if _matches(search, row.verdicts)]
    if not studies:
        return [], None, None
    oldest, newest = studies[-1].id, studies[0].id
    conditions = study_search_conditions(search)
    has_older = session.scalar(select(Study.id).where(*conditions, Study.id < oldest).limit(1)) is not None
    has_newer = session.scalar(select(Study.id).where(*conditions, Study.id > newest).limit(1)) is not None
    return rows, oldest if has_older else None, newest if has_newer else None


def get_study(session: Session, *, study_uid: str) -> Study | None:
    return session.scalar(
        select(Study)
        .options(selectinload(Study.series).selectinload(Series.jobs).selectinload(Job.results))
        .where(Study.study_instance_uid == study_uid)
    )


@router.get("/api/studies", response_model=list[StudySummary])
def api_list_studies(
    session: SessionDep,
    search: SearchDep,
    limit: Limit = 100,
    before: Annotated[int | None, Query(ge=1, description="studies older than this study id (next page)")] = None,
    offset: Annotated[int, Query(ge=0, description="skip this many studies (newest first)")] = 0,
) -> list[StudySummary]:
    """Received studies matching the search, newest first, each with its verdict and ``id``; page on with
    ``before`` set to the last study's ``id`` (keyset: fast at any depth)."""
    rows, _, _ = page_rows(session, search, before_id=before, after_id=None, limit=limit, offset=offset)
    return [study_summary(row.study, row.verdicts) for row in rows]


@router.get(
    "/api/studies/{study_uid}", response_model=StudyDetail, responses={404: {"description": "unknown UID"}}
)
def api_get_study(study_uid: StudyUid, session: SessionDep) -> StudyDetail:
    """One study with its series and their verdicts."""
    study = get_study(session, study_uid=study_uid)
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no study with Study Instance UID {study_uid}")
    return study_detail(study)


def _query_string(search: StudySearch, **cursor: int) -> str:
    def as_input(date: str) -> str:
        return f"{date[:4]}-{date[4:6]}-{date[6:]}" if date else ""

    fields = {
        "name": search.patient_name, "patient_id": search.patient_id, "accession": search.accession_number,
        "date_from": as_input(search.date_from), "date_to": as_input(search.date_to),
        "state": search.attention.value if search.attention is not None else "", **cursor,
    }
    return urlencode({key: value for key, value in fields.items() if value not in ("", None)})


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def studies_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    search: SearchDep,
    before: Annotated[int | None, Query(ge=1, description="studies older than this study id")] = None,
    after: Annotated[int | None, Query(ge=1, description="studies newer than this study id")] = None,
) -> Response:
    """The start page: studies newest first, each with its series and their verdicts; search and pages."""
    rows, older, newer = page_rows(session, search, before_id=before, after_id=after)
    searching = search != StudySearch()
    total = count_studies(session, search=search if searching and search.attention is None else None)
    return render(
        templates,
        request,
        "studies.html",
        {
            "rows": rows,
            "search": search,
            "searching": searching,
            "total": total,
            "total_is_matches": searching and search.attention is None,
            "older_query": _query_string(search, before=older) if older is not None else None,
            "newer_query": _query_string(search, after=newer) if newer is not None else None,
            "first_query": _query_string(search) if (before or after) else None,
            "states": list(StudyAttention),
            "state_labels": {kind.value: LABELS[kind] for kind in VerdictKind},
            "legend": LEGEND,
            "labels": LABELS,
        },
    )
