"""Who may see what on the page: a trainee their own results, a supervisor their teams', an admin everything.

The logged-in user's role and reader come from ``web_user`` (:class:`db.models.WebRole`, ``reader_id``); the
readers they may see from :func:`reports.programme.queries.visible_readers`, the one rule the PDF reports and the
CLI follow too. Routes take a :class:`Viewer` (``ViewerDep``) and call its ``require_*`` methods before they
query, so a forbidden page is answered 403 with the reason, never rendered without its links. With the login
switched off (``[web] login = false``) the page has no users and everyone is an admin, as before roles existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from db.models import Reader, WebRole, WebUser
from reports.programme.people import teams_of
from reports.web.deps import SessionDep, render_error
from reports.web.users import find_user


class AccessDeniedError(Exception):
    """The logged-in user may not see or do this; answered 403 with the message."""


class NodePagesDeniedError(AccessDeniedError):
    """A trainee asked for the node's own pages; the home page sends them to their training results instead."""


@dataclass(frozen=True)
class Viewer:
    """The logged-in user as the access rules see them.

    ``readers`` and ``teams`` are what they may see; None means everything (an admin).
    """

    username: str | None
    role: WebRole
    reader: str | None  # the reader the user is (a trainee's own results), if linked
    readers: frozenset[str] | None
    teams: frozenset[str] | None

    @property
    def may_manage(self) -> bool:
        """Supervisors and admins edit readers, teams and training sets."""
        return self.role in (WebRole.ADMIN, WebRole.SUPERVISOR)

    def may_see_reader(self, name: str) -> bool:
        return self.readers is None or name in self.readers

    def may_see_team(self, team: str) -> bool:
        return self.role is not WebRole.TRAINEE and (self.teams is None or team in self.teams)

    def require_reader(self, name: str) -> None:
        """Raises AccessDeniedError unless the user may see ``name``'s results."""
        if not self.may_see_reader(name):
            if self.role is WebRole.TRAINEE:
                raise AccessDeniedError(f"{self.username} is a trainee and sees only their own results, "
                                        f"not those of {name}")
            raise AccessDeniedError(f"{name} is not in a team that {self.username} supervises")

    def require_team(self, team: str) -> None:
        """Raises AccessDeniedError unless the user may see the team's dashboard."""
        if self.role is WebRole.TRAINEE:
            raise AccessDeniedError(f"{self.username} is a trainee and sees only their own results, "
                                    "not a team's")
        if not self.may_see_team(team):
            raise AccessDeniedError(f"team {team} is not one that {self.username} supervises")

    def require_manager(self, what: str) -> None:
        """Raises AccessDeniedError unless the user is a supervisor or an admin."""
        if not self.may_manage:
            raise AccessDeniedError(f"only supervisors and admins may {what}; {self.username} is a trainee")

    def require_node_pages(self) -> None:
        """The node's studies, series, results and transfers show every reader's contours: not for trainees."""
        if self.role is WebRole.TRAINEE:
            raise NodePagesDeniedError(f"{self.username} is a trainee: the node's studies and transfers are for "
                                    "supervisors and admins; your results are under Training")


def viewer_for(session: Session, username: str | None) -> Viewer:
    """The access of ``username`` (None: the login is off, everyone is an admin).

    Raises
    ------
    AccessDeniedError
        If the user no longer exists.
    """
    if username is None:
        return Viewer(None, WebRole.ADMIN, None, None, None)
    user = find_user(session, username)
    if user is None:
        raise AccessDeniedError(f"user {username} no longer exists")
    return _viewer_of_user(session, user)


def _viewer_of_user(session: Session, user: WebUser) -> Viewer:
    from reports.programme.queries import visible_readers

    role = WebRole(user.role)
    reader = session.get(Reader, user.reader_id) if user.reader_id is not None else None
    if role is WebRole.ADMIN:
        return Viewer(user.username, role, reader.name if reader else None, None, None)
    names = frozenset(visible_readers(session, user))
    # A supervisor's teams are those of the reader they are (a supervisor may lead several).
    teams = frozenset(teams_of(reader)) if role is WebRole.SUPERVISOR and reader is not None else frozenset()
    return Viewer(user.username, role, reader.name if reader else None, names, teams)


def get_viewer(request: Request, session: SessionDep) -> Viewer:
    """Dependency: the access of the logged-in user (``request.state.user``, set by the login check)."""
    viewer = viewer_for(session, getattr(request.state, "user", None))
    request.state.web_role = viewer.role.value  # the page header leaves out links the role may not follow
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def forbid_trainees(viewer: ViewerDep) -> None:
    """Dependency of the node's own pages and API (studies, series, results, transfers)."""
    viewer.require_node_pages()


async def access_denied_response(request: Request, error: Exception) -> Response:
    """403 with the reason: the error page for a browser's page view, JSON for everything else."""
    message = str(error)
    if isinstance(error, NodePagesDeniedError) and request.url.path == "/" and request.method in ("GET", "HEAD"):
        return RedirectResponse(request.app.url_path_for("training_page"), status_code=303)
    if request.method in ("GET", "HEAD") and not request.url.path.startswith("/api/"):
        return render_error(request.app.state.templates, request, 403, message)
    return JSONResponse({"detail": message}, status_code=403)
