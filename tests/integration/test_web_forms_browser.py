"""The page's own forms in a real browser, and a form on another port of the same host that tries to use them.

Headless Chromium (driven over the DevTools protocol, :mod:`tests.integration.devtools`) logs in by typing into
the login form, retries a transfer with the page's button and logs out, under the page's Content-Security-Policy
and CSRF checks; in between, a page served on another port of 127.0.0.1 (the same site to the browser, so its
SameSite=Strict session cookie goes along) submits a form and a text/plain fetch to the node, which refuses both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from db.models import Transfer, TransferState
from reports.web import create_app
from tests.integration.browser import AppServer, chromium_available
from tests.integration.devtools import DevToolsBrowser
from tests.unit.reports.test_web_results import WEB_USER, ResultsNode, build_results_node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed (make deps installs it)"),
]


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[ResultsNode]:
    built = build_results_node(tmp_path / "node")
    yield built
    built.session_factory.kw["bind"].dispose()


@pytest.fixture()
def queued() -> list[int]:
    return []


@pytest.fixture()
def server(node: ResultsNode, queued: list[int]) -> Iterator[AppServer]:
    with AppServer(create_app(node.settings, node.session_factory, enqueue_delivery=queued.append)) as running:
        yield running


def _attacker_page(target_form: str, target_api: str) -> Starlette:
    """Another origin's page: a form posted by script to the node (no token), and a text/plain fetch to its API."""
    html = f"""<!doctype html><html><body>
<form id="f" method="post" action="{target_form}"><input name="csrf_token" value="guess"></form>
<script>
fetch({json.dumps(target_api)}, {{method: "POST", mode: "no-cors", credentials: "include",
      headers: {{"content-type": "text/plain"}}, body: "{{}}"}}).finally(() => document.getElementById("f").submit());
</script></body></html>"""

    async def page(_request: object) -> HTMLResponse:
        return HTMLResponse(html)

    return Starlette(routes=[Route("/", page)])


def _state(node: ResultsNode, transfer_id: int) -> TransferState:
    with node.session_factory() as session:
        return session.get(Transfer, transfer_id).state


def test_own_forms_work_and_a_sibling_ports_form_is_refused(
    server: AppServer, node: ResultsNode, queued: list[int]
) -> None:
    given_up = node.transfer_ids[TransferState.GIVEN_UP]
    retry_path = f"/transfers/{given_up}/retry"
    username, password = WEB_USER
    with DevToolsBrowser() as browser:
        browser.goto(server.url("/transfers"))
        assert browser.evaluate("location.pathname") == "/login"  # no session yet
        browser.submit(
            f"document.getElementById('username').value = {json.dumps(username)};"
            f"document.getElementById('password').value = {json.dumps(password)};"
            "document.querySelector('form[action=\"/login\"] button').click()"
        )
        assert browser.evaluate("location.pathname") == "/transfers"  # back where the login began
        cookies = browser.call("Network.getCookies", {"urls": [server.url("/")]})["cookies"]
        assert {c["name"] for c in cookies} >= {"myomap_session", "myomap_csrf"}
        assert all(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies)
        # The page's stylesheet applied under its policy (the header is dark on the light page).
        assert browser.evaluate("document.styleSheets.length") >= 1

        browser.submit(f"document.querySelector('form[action=\"{retry_path}\"] button').click()")
        assert browser.evaluate("location.pathname") == "/transfers"
        assert queued == [given_up] and _state(node, given_up) is TransferState.PENDING

        with AppServer(_attacker_page(server.url(retry_path), server.url(f"/api{retry_path}"))) as attacker:
            browser.goto(attacker.url("/"))
            browser.settle(3.0)
        answered = {(r.method, r.path, r.status) for r in server.requests}
        assert ("POST", retry_path, 403) in answered  # the form: foreign Origin
        assert ("POST", f"/api{retry_path}", 403) in answered  # the fetch: foreign Origin (and not JSON)
        assert queued == [given_up]  # nothing more was queued

        browser.goto(server.url("/transfers"))
        browser.submit("document.querySelector('form[action=\"/logout\"] button').click()")
        assert browser.evaluate("location.pathname") == "/login"
        browser.goto(server.url("/transfers"))
        assert browser.evaluate("location.pathname") == "/login"  # the session ended
    violations = [line for line in browser.console if "Content Security Policy" in line]
    assert violations == [], violations
