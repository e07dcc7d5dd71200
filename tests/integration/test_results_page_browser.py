"""The studies page and a series page with an analysed result, rendered by headless Chromium.

The node's database and files come from the unit tests' builder (real Secondary Captures written with highdicom);
the app runs in uvicorn on 127.0.0.1 with its login on. The login page is rendered as a browser without a session
sees it; for the other pages the test logs in with a real POST /login and the app server hands that session cookie
on for the browser (:class:`tests.integration.browser.AppServer`). The screenshots are kept under the test's tmp
folder (the path is printed).
"""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from reports.web import create_app
from reports.web.auth import SESSION_COOKIE
from reports.web.csrf import CSRF_FIELD
from tests.integration.browser import WINDOW_SIZE, AppServer, Chromium, chromium_available
from tests.unit.reports.test_web_results import (
    MARKER_RGB,
    RAW_SERIES_UID,
    SC_SHAPE,
    SERIES_BANNER,
    SLICE_BANNER,
    WEB_USER,
    ResultsNode,
    build_results_node,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed (make deps installs it)"),
]

#: A page is not blank when its grey levels vary at least this much (a white page with a few words: ~100s).
MIN_PIXEL_VARIANCE = 50.0


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.extend(value for name, value in attrs if name == "src" and value)


def _image_sources(html: str) -> list[str]:
    parser = _Images()
    parser.feed(html)
    return parser.sources


def _screenshot(chromium: Chromium, url: str, out: Path) -> np.ndarray:
    chromium.screenshot(url, out)
    print(f"screenshot of {url}: {out}")
    with Image.open(out) as image:
        assert image.size == WINDOW_SIZE
        pixels = np.asarray(image.convert("RGB"))
    assert float(np.var(pixels.mean(axis=2))) > MIN_PIXEL_VARIANCE, f"{out} looks blank"
    return pixels


@pytest.fixture()
def node(tmp_path: Path) -> ResultsNode:
    built = build_results_node(tmp_path / "node")
    yield built
    built.session_factory.kw["bind"].dispose()


@pytest.fixture()
def server(node: ResultsNode) -> AppServer:
    with AppServer(create_app(node.settings, node.session_factory)) as running:
        yield running


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str | None]] = []
        self.inputs: dict[str, str | None] = {}  # name -> type

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.forms.append(values)
        elif tag == "input" and values.get("name"):
            self.inputs[values["name"]] = values.get("type")


def _log_in(server: AppServer) -> str:
    """A real login through the form's POST; the ``Cookie`` header value a browser would send afterwards."""
    username, password = WEB_USER
    with httpx.Client(timeout=10) as client:  # keeps the form page's token cookie, as a browser does
        form = client.get(server.url("/login"))
        token = form.text.split(f'name="{CSRF_FIELD}" value="')[1].split('"')[0]
        response = client.post(server.url("/login"), follow_redirects=False, data={
            "username": username, "password": password, "next": "/", CSRF_FIELD: token})
    assert response.status_code == 303 and response.headers["location"] == "/", response.text
    return f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE]}"


def test_login_page_renders_and_guards_the_pages(server: AppServer, tmp_path: Path) -> None:
    chromium = Chromium()
    _screenshot(chromium, server.url("/login"), tmp_path / "screenshots" / "login.png")
    # Without a session the studies page is the login form (the browser followed the redirect).
    dom = chromium.dump_dom(server.url("/"))
    form = _Form()
    form.feed(dom)
    assert [f.get("action") for f in form.forms] == ["/login"] and form.forms[0].get("method") == "post"
    assert form.inputs == {CSRF_FIELD: "hidden", "next": "hidden", "username": None, "password": "password"}
    assert 'value="/"' in dom and "Doe, Jane" not in dom and "Log out" not in dom
    assert ("GET", "/", 303) in {(r.method, r.path, r.status) for r in server.requests}


def test_studies_and_series_pages_render_with_the_result(
    server: AppServer, node: ResultsNode, tmp_path: Path
) -> None:
    chromium = Chromium()
    shots = tmp_path / "screenshots"
    server.browser_cookie = _log_in(server)

    _screenshot(chromium, server.url("/"), shots / "studies.png")
    studies_dom = chromium.dump_dom(server.url("/"))
    assert "Doe, Jane" in studies_dom and f'href="/series/{RAW_SERIES_UID}"' in studies_dom
    assert WEB_USER[0] in studies_dom and 'action="/logout"' in studies_dom  # the header names who is logged in

    series_url = server.url(f"/series/{RAW_SERIES_UID}")
    first_image = f"/results/{node.result_id}/images/0.png"
    server.requests.clear()
    page = _screenshot(chromium, series_url, shots / "series.png")
    # The browser fetched the Secondary Capture, and it shows: the marker colour painted into it is on screen,
    # scaled up from the stored image (its marker is 50 x 60 pixels).
    fetched = {(r.path, r.status) for r in server.requests}
    assert (first_image, 200) in fetched, sorted(fetched)
    red, green, blue = (page[..., channel].astype(int) for channel in range(3))
    marker = (np.abs(red - MARKER_RGB[0]) < 16) & (green < 16) & (np.abs(blue - MARKER_RGB[2]) < 16)
    assert int(marker.sum()) >= 50 * 60, int(marker.sum())

    dom = chromium.dump_dom(series_url)
    assert SERIES_BANNER in dom and SLICE_BANNER in dom
    for value in ("1180.2", "1176.4", "51.3", "1021.7", "predicted Dice 0.91", "0.93"):
        assert value in dom, value
    sources = _image_sources(dom)
    assert first_image in sources and len(sources) == 3
    with httpx.Client(base_url=server.url(), auth=WEB_USER) as client:
        for source in sources:
            response = client.get(source)
            assert response.status_code == 200 and response.headers["content-type"] == "image/png", source
            with Image.open(io.BytesIO(response.content)) as image:
                assert image.size == (SC_SHAPE[1], SC_SHAPE[0])
