"""Headless Chromium on the training dashboards, logged in through the form as a trainee, a supervisor and an
admin: each sees what their role allows (their own results, their team's, everyone's) and is refused the rest with
the reason; the plots are drawn and the overlays load."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from reports.web import create_app
from tests.integration.browser import AppServer, Chromium, chromium_available
from tests.unit.reports.training_site import (
    IMPROVING,
    PASSWORD,
    PERSISTENT,
    SHIFTED,
    TEAM_NORTH,
    TEAM_SOUTH,
    build_training_site,
)

pytestmark = pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    for site in build_training_site(tmp_path_factory.mktemp("training_browser")):
        with AppServer(create_app(site.settings, site.session_factory)) as running:
            yield running


def _log_in(server: AppServer, username: str) -> str:
    """A real login through the form (its form token included); the Cookie header a browser sends afterwards."""
    with httpx.Client(base_url=server.url(""), follow_redirects=False, timeout=10) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        data = {"username": username, "password": PASSWORD, "next": "/training"}
        response = client.post("/login", data={**data, **({"csrf_token": token.group(1)} if token else {})})
        assert response.status_code == 303, response.text
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def _dom(server: AppServer, chromium: Chromium, user: str, path: str) -> str:
    server.browser_cookie = _log_in(server, user)
    return chromium.dump_dom(server.url(path))


def _not_blank(path: Path) -> None:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10, f"{path.name} is blank"


def test_a_trainee_sees_their_own_dashboard_only(server: AppServer, tmp_path: Path) -> None:
    chromium = Chromium(virtual_time_budget_ms=15000)
    server.requests.clear()
    dom = _dom(server, chromium, "trainee", "/training")  # sent on to their own dashboard
    assert f"<h1>{IMPROVING}" in dom and dom.count('class="attempt"') == 4
    assert dom.count("<svg") >= 5 and "Dice on each case over repeated attempts" in dom
    assert PERSISTENT not in dom and SHIFTED not in dom
    assert 'href="/transfers"' not in dom  # the node's pages are not in a trainee's menu
    overlays = [r for r in server.requests if r.path.endswith("/overlay.png")]
    assert len(overlays) == 4 and {r.status for r in overlays} == {200}
    # Another trainee's dashboard and the team's are refused with the reason.
    refused = chromium.dump_dom(server.url(f"/training/trainee/{PERSISTENT}"))
    assert "Error 403" in refused and "sees only their own results" in refused
    assert "Error 403" in chromium.dump_dom(server.url(f"/training/team/{TEAM_NORTH}"))
    shot = chromium.screenshot(server.url(f"/training/trainee/{IMPROVING}"), tmp_path / "trainee.png")
    _not_blank(shot)


def test_a_supervisor_sees_their_team_and_not_the_other(server: AppServer, tmp_path: Path) -> None:
    chromium = Chromium()
    dom = _dom(server, chromium, "sup_north", f"/training/team/{TEAM_NORTH}")
    assert f"<h1>Team {TEAM_NORTH}</h1>" in dom
    assert f"/training/trainee/{IMPROVING}" in dom and f"/training/trainee/{PERSISTENT}" in dom
    assert SHIFTED not in dom and "Spread per case" in dom and "<svg" in dom
    assert "Error 403" in chromium.dump_dom(server.url(f"/training/team/{TEAM_SOUTH}"))
    assert "Error 403" in chromium.dump_dom(server.url(f"/training/trainee/{SHIFTED}"))
    index = chromium.dump_dom(server.url("/training"))
    assert f"/training/team/{TEAM_NORTH}" in index and f"/training/team/{TEAM_SOUTH}" not in index
    _not_blank(chromium.screenshot(server.url(f"/training/team/{TEAM_NORTH}"), tmp_path / "team.png"))


def test_an_admin_sees_every_team_and_trainee(server: AppServer) -> None:
    chromium = Chromium()
    index = _dom(server, chromium, "admin", "/training")
    for name in (IMPROVING, PERSISTENT, SHIFTED):
        assert f"/training/trainee/{name}" in index
    assert f"/training/team/{TEAM_NORTH}" in index and f"/training/team/{TEAM_SOUTH}" in index
    south = chromium.dump_dom(server.url(f"/training/team/{TEAM_SOUTH}"))
    assert f"<h1>Team {TEAM_SOUTH}</h1>" in south and f"/training/trainee/{SHIFTED}" in south
    assert f"<h1>{SHIFTED}" in chromium.dump_dom(server.url(f"/training/trainee/{SHIFTED}"))
