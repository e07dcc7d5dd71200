"""Dependencies of the web routes: the database session, the settings, the templates and the delivery queue.

``create_app`` stores the settings, the session factory and the optional delivery queue on ``app.state``;
routes reach them only through the annotated dependencies here, so that tests and a later access check can
replace them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response

from config.settings import Settings
from reports.web.csrf import csrf_field, csrf_token
from reports.web.health import node_health

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")


def _format_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_person_name(value: str) -> str:
    # DICOM PN: family^given^middle^prefix^suffix; shown as "Family, Given Middle".
    parts = [part.strip() for part in value.split("=")[0].split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else family or given


def _format_da(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _short_name(name: str, keep: int = 8) -> str:
    # Output files are named by their SOP Instance UID (40-odd digits): its ends tell files apart, the whole name
    # is in the cell's title and the download.
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    if len(stem) <= 2 * keep + 3:
        return name
    return f"{stem[:keep]}…{stem[-keep:]}" + (f".{suffix}" if suffix else "")


def make_templates() -> Jinja2Templates:
    """The page templates with the node's filters (times in UTC, person names, DICOM dates)."""
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.filters["utc"] = _format_time
    templates.env.filters["person_name"] = _format_person_name
    templates.env.filters["dicom_date"] = _format_da
    templates.env.filters["short_name"] = _short_name
    # Every form writes {{ csrf_field() }} (reports.web.csrf); csrf_token() for a script's header.
    templates.env.globals["csrf_field"] = csrf_field
    templates.env.globals["csrf_token"] = csrf_token
    return templates


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; routes that change rows commit themselves."""
    session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


def get_enqueue_delivery(request: Request) -> Callable[[int], None] | None:
    return request.app.state.enqueue_delivery


def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
EnqueueDeliveryDep = Annotated[Callable[[int], None] | None, Depends(get_enqueue_delivery)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]


def render(
    templates: Jinja2Templates, request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """Render a page template, with the node's health for the header (``health``, None on the login page)."""
    if "health" not in context and name != "login.html":
        context = {**context, "health": node_health(request.app.state.settings, request.app.state.session_factory)}
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def render_error(templates: Jinja2Templates, request: Request, status_code: int, message: str) -> Response:
    """An error page with the status and what went wrong."""
    return render(
        templates, request, "error.html", {"status_code": status_code, "message": message}, status_code
    )


#: A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters.
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"


def uid_parameter(description: str) -> Any:
    """A path parameter that must be a DICOM UID (answered with 422 and a message otherwise)."""
    return PathParam(pattern=UID_PATTERN, max_length=64, description=description)
