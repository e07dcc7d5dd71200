"""Supervisor pages: readers, their aliases (the mapping of DICOM names to readers), teams and linked web users
(/training/readers), and training sets (/training/sets, /training/sets/{name}: cases and their reference policy,
automatic consensus, accreditation criteria).

Every change goes through :mod:`reports.programme.people` and :mod:`reports.programme.training_sets`, the same
functions as ``myomap reader ...``. Only supervisors and admins reach these pages; a supervisor changes only the
readers they supervise. A change answers 303 back to its page (so a reload does not repeat it); a refused change
answers the page again with 4xx and the reason.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from starlette.responses import Response

from db.models import ReaderRole, ReferencePolicy, Study, WebRole, WebUser
from reports.programme import people, training_sets
from reports.programme.error_modes import ERROR_MODES, error_mode_words
from reports.programme.training_sets import Criteria, TrainingSetError
from reports.web.access import Viewer, ViewerDep
from reports.web.deps import SessionDep, TemplatesDep, render, render_error

LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["training"], include_in_schema=False)

MAX_FORM_BYTES = 16 * 1024
POLICY_LABELS = {
    "": "automatic",
    ReferencePolicy.GOLD_STANDARD.value: "expert gold standard",
    ReferencePolicy.EXPERT_STAPLE.value: "STAPLE of the experts",
    ReferencePolicy.CONSENSUS_MODEL.value: "consensus model",
    ReferencePolicy.TEAM_AVERAGE.value: "team average",
}


class FormError(ValueError):
    """A form field that cannot be read; answered 400 with the message."""


async def _form(request: Request) -> dict[str, str]:
    """The form's text fields (the CSRF check has parsed it already; Starlette keeps the parsed form)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise FormError(f"the form is larger than {MAX_FORM_BYTES // 1024} kB")
    form = await request.form(max_fields=40, max_files=0)
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _redirect(request: Request, route: str, message: str, **params: str) -> Response:
    url = request.app.url_path_for(route, **params)
    return RedirectResponse(f"{url}?{urlencode({'done': message})}", status_code=status.HTTP_303_SEE_OTHER)


def _check_reader_for(viewer: Viewer, name: str) -> None:
    viewer.require_manager("change readers")
    viewer.require_reader(name)


# --- readers, aliases, teams ------------------------------------------------------------------------------------


def _readers_page(request: Request, session: SessionDep, templates: TemplatesDep, viewer: Viewer, *,
                  error: str | None = None, status_code: int = 200) -> Response:
    readers = [view for view in people.list_readers(session) if viewer.may_see_reader(view.name)]
    users = list(session.scalars(select(WebUser).order_by(WebUser.username))) if viewer.role is WebRole.ADMIN else []
    teams = sorted({team for view in readers for team in view.team.split(",") if team.strip()})
    return render(templates, request, "training_readers.html", {
        "viewer": viewer, "readers": readers, "teams": [t.strip() for t in teams], "users": users,
        "reader_roles": [role.value for role in ReaderRole], "web_roles": [role.value for role in WebRole],
        "done": request.query_params.get("done"), "error": error,
    }, status_code)


@router.get("/training/readers", response_class=HTMLResponse, name="readers_page")
def readers_page(request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep) -> Response:
    """Readers with their role, team, aliases and linked web users."""
    viewer.require_manager("manage readers")
    return _readers_page(request, session, templates, viewer)


@router.post("/training/readers", name="readers_change")
async def readers_change(
    request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep
) -> Response:
    """One change: ``action`` add_reader, set_team, set_role, add_alias, remove_alias or link_user."""
    viewer.require_manager("change readers")
    try:
        form = await _form(request)
        action = form.get("action", "")
        name = form.get("reader", "").strip()
        if action == "add_reader":
            if viewer.role is WebRole.SUPERVISOR and form.get("team", "").strip() not in (viewer.teams or ()):
                raise FormError("a supervisor adds readers to a team they supervise")
            people.add_reader(session, name, role=form.get("role", ReaderRole.TRAINEE.value),
                              team=form.get("team", ""))
            message = f"added reader {name}"
        elif action == "set_team":
            _check_reader_for(viewer, name)
            if viewer.role is WebRole.SUPERVISOR and any(
                    t.strip() not in (viewer.teams or ()) for t in form.get("team", "").split(",") if t.strip()):
                raise FormError("a supervisor moves readers only between teams they supervise")
            people.set_team(session, name, form.get("team", ""))
            message = f"{name} is in team {form.get('team', '').strip() or '(none)'}"
        elif action == "set_role":
            _check_reader_for(viewer, name)
            people.set_role(session, name, form.get("role", ""))
            message = f"{name} is now {form.get('role', '')}"
        elif action == "add_alias":
            _check_reader_for(viewer, name)
            people.add_alias(session, form.get("pattern", ""), name)
            message = f"DICOM name {form.get('pattern', '').strip()} now maps to {name}"
        elif action == "remove_alias":
            _check_reader_for(viewer, name)
            people.remove_alias(session, form.get("pattern", ""))
            message = f"removed the alias {form.get('pattern', '').strip()}"
        elif action == "link_user":
            if viewer.role is not WebRole.ADMIN:
                raise FormError("only an admin links web users to readers and sets their role")
            people.link_user(session, form.get("username", ""), name or None, role=form.get("web_role") or None)
            message = f"web user {form.get('username', '')} linked to {name or 'no reader'}"
        else:
            raise FormError(f"unknown action {action[:32]!r}")
        session.commit()
    except (FormError, people.PeopleError) as error:
        session.rollback()
        return _readers_page(request, session, templates, viewer, error=str(error),
                             status_code=status.HTTP_400_BAD_REQUEST if isinstance(error, FormError) else 422)
    LOGGER.info("training: %s changed readers (%s)", viewer.username, action)
    return _redirect(request, "readers_page", message)


# --- training sets ------------------------------------------------------------------------------------------------


#: At most this many of the newest studies are offered as cases.
MAX_STUDY_CHOICES = 200


def _recent_studies(session: SessionDep) -> list[tuple[str, str, str]]:
    """(Study Instance UID, description, date) of the newest studies: what a supervisor picks cases from. The
    patient's name is left out: a training set is about the images, and the page is shown to a room."""
    rows = session.execute(
        select(Study.study_instance_uid, Study.study_description, Study.study_date)
        .order_by(Study.id.desc()).limit(MAX_STUDY_CHOICES)
    ).all()
    return [(uid, description, date) for uid, description, date in rows]


def _sets_page(request: Request, session: SessionDep, templates: TemplatesDep, viewer: Viewer, *,
               error: str | None = None, status_code: int = 200) -> Response:
    studies = _recent_studies(session)
    return render(templates, request, "training_sets.html", {
        "viewer": viewer, "sets": training_sets.list_training_sets(session), "studies": studies,
        "criteria_in_words": training_sets.criteria_in_words, "done": request.query_params.get("done"),
        "error": error,
    }, status_code)


@router.get("/training/sets", response_class=HTMLResponse, name="training_sets_page")
def training_sets_page(
    request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep
) -> Response:
    """The training sets, and the form that makes one from studies."""
    viewer.require_manager("manage training sets")
    return _sets_page(request, session, templates, viewer)


@router.post("/training/sets", name="training_sets_create")
async def training_sets_create(
    request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep
) -> Response:
    """Make a training set from the studies ticked and those listed (one Study Instance UID a line)."""
    viewer.require_manager("make training sets")
    try:
        form = await _form(request)
        name = form.get("name", "").strip()
        ticked = [value for value in (await request.form()).getlist("study") if isinstance(value, str)]
        typed = [line.strip() for line in form.get("studies", "").replace(",", "\n").splitlines() if line.strip()]
        uids = list(dict.fromkeys([*ticked, *typed]))  # ticked first, each study once
        if not uids:
            raise FormError("tick or list at least one study")
        training_sets.create_training_set(session, name, uids, description=form.get("description", "").strip(),
                                          auto_consensus=form.get("auto_consensus") == "on")
        session.commit()
    except (FormError, TrainingSetError) as error:
        session.rollback()
        return _sets_page(request, session, templates, viewer, error=str(error),
                          status_code=status.HTTP_400_BAD_REQUEST if isinstance(error, FormError) else 422)
    return _redirect(request, "training_set_page", f"made training set {name}", name=name)


def _set_page(request: Request, session: SessionDep, templates: TemplatesDep, viewer: Viewer, name: str, *,
              error: str | None = None, status_code: int = 200) -> Response:
    shown = training_sets.show_training_set(session, name)
    taken = {case.study_instance_uid for case in shown.cases}
    studies = [row for row in _recent_studies(session) if row[0] not in taken]
    experts = [view.name for view in people.list_readers(session) if view.role == ReaderRole.EXPERT.value]
    return render(templates, request, "training_set.html", {
        "viewer": viewer, "set": shown, "policies": POLICY_LABELS, "experts": experts, "studies": studies,
        "criteria_words": training_sets.criteria_in_words(shown.criteria), "error_modes": ERROR_MODES,
        "error_mode_words": error_mode_words, "done": request.query_params.get("done"), "error": error,
    }, status_code)


@router.get("/training/sets/{name}", response_class=HTMLResponse, name="training_set_page")
def training_set_page(
    name: str, request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep
) -> Response:
    """One training set: its cases and their reference, the automatic consensus, the criteria."""
    viewer.require_manager("manage training sets")
    try:
        return _set_page(request, session, templates, viewer, name)
    except TrainingSetError as error:
        return render_error(templates, request, status.HTTP_404_NOT_FOUND, str(error))


def _optional_float(form: dict[str, str], key: str, what: str) -> float | None:
    text = form.get(key, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise FormError(f"{what} must be a number, got {text[:32]!r}") from None


def _optional_int(form: dict[str, str], key: str, what: str) -> int | None:
    value = _optional_float(form, key, what)
    if value is not None and not value.is_integer():
        raise FormError(f"{what} must be a whole number, got {value}")
    return None if value is None else int(value)


@router.post("/training/sets/{name}", name="training_set_change")
async def training_set_change(
    name: str, request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep
) -> Response:
    """One change: ``action`` add_case, set_reference, auto_consensus or criteria."""
    viewer.require_manager("change training sets")
    try:
        form = await _form(request)
        action = form.get("action", "")
        if action == "add_case":
            training_sets.add_case(session, name, form.get("study", ""), label=form.get("label", "").strip() or None)
            message = "added the case"
        elif action == "set_reference":
            training_sets.set_case_reference(
                session, name, form.get("label", ""), reference_policy=form.get("policy") or None,
                gold_standard_reader=form.get("gold_standard_reader", "").strip() or None)
            message = f"{form.get('label', '')}: reference {POLICY_LABELS.get(form.get('policy', ''), '?')}"
        elif action == "auto_consensus":
            enabled = form.get("enabled") == "on"
            training_sets.set_auto_consensus(session, name, enabled)
            message = f"automatic consensus {'on' if enabled else 'off'}"
        elif action == "criteria":
            last_cases = _optional_int(form, "last_cases", "the number of last cases")
            window = {} if last_cases is None else {"last_cases": last_cases}  # empty: the default window
            criteria = Criteria(
                min_mean_dice=_optional_float(form, "min_mean_dice", "the minimum mean Dice"),
                max_abs_t1_difference_ms=_optional_float(form, "max_abs_t1_difference_ms", "the maximum |dT1|"),
                no_critical_error=form.get("no_critical_error") == "on",
                critical_error_modes=tuple(mode for mode in ERROR_MODES if form.get(f"critical_{mode}") == "on"),
                **window,
                min_cases=_optional_int(form, "min_cases", "the minimum number of cases"),
            )
            training_sets.set_criteria(session, name, criteria)
            message = "criteria saved"
        else:
            raise FormError(f"unknown action {action[:32]!r}")
        session.commit()
    except (FormError, TrainingSetError) as error:
        session.rollback()
        try:
            return _set_page(request, session, templates, viewer, name, error=str(error),
                             status_code=status.HTTP_400_BAD_REQUEST if isinstance(error, FormError) else 422)
        except TrainingSetError as missing:
            return render_error(templates, request, status.HTTP_404_NOT_FOUND, str(missing))
    LOGGER.info("training: %s changed training set %r (%s)", viewer.username, name, action)
    return _redirect(request, "training_set_page", message, name=name)
