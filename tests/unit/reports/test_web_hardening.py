"""The web page against a hostile browser or client: CSRF, login floods, sessions that end, security headers."""

from __future__ import annotations

import logging
import re
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from db.models import TransferState
from reports.web import create_app
from reports.web.auth import SESSION_COOKIE
from reports.web.csrf import CSRF_FIELD
from reports.web.deps import TEMPLATES_DIR
from reports.web.headers import API_DOCS_PATHS
from reports.web.throttle import LoginThrottle
from reports.web.users import remove_user, set_password
from tests.unit.reports.test_web import RAW_SERIES_UID, STUDY_UID, Node, _transfer, _unused_port, node, queued
from tests.unit.reports.test_web_results import WEB_USER
from tests.unit.reports.web_forms import FORM_HEADERS, login, page_token, post_form

__all__ = ["node", "queued"]  # fixtures of the transfers page's tests, used here too

USER, PASSWORD = WEB_USER


@pytest.fixture()
def app(node: Node, queued: list[int]) -> FastAPI:
    return create_app(node.settings, node.session_factory, enqueue_delivery=queued.append)


@pytest.fixture()
def browser(app: FastAPI) -> TestClient:
    """A browser logged in through the form (a session cookie, no HTTP Basic)."""
    client = TestClient(app)
    assert login(client, USER, PASSWORD).status_code == 303
    return client


# --- CSRF (cross-site request forgery) ---


def test_a_cross_origin_form_post_is_refused(browser: TestClient, node: Node, queued: list[int]) -> None:
    transfer_id = node.transfer_ids[TransferState.GIVEN_UP]
    url = f"/transfers/{transfer_id}/retry"
    token = page_token(browser, "/transfers")
    # Another port of the same host is another site to the browser (and the attack the SameSite cookie misses).
    for headers in ({"origin": "http://testserver:8081"}, {"origin": "null"},
                    {"referer": "http://evil.example/page.html"}):
        refused = browser.post(url, data={CSRF_FIELD: token}, headers=headers, follow_redirects=False)
        assert refused.status_code == 403, headers
        assert "cross-origin request refused" in refused.json()["detail"]
    assert queued == [] and _transfer(node, transfer_id).state is TransferState.GIVEN_UP


def test_a_trusted_origin_of_the_sites_proxy_is_taken(node: Node, queued: list[int]) -> None:
    proxy_origin = "https://myomap.hospital.example"
    settings = node.settings.model_copy(update={"web": node.settings.web.model_copy(
        update={"trusted_origins": [proxy_origin]})})
    client = TestClient(create_app(settings, node.session_factory, enqueue_delivery=queued.append))
    assert login(client, USER, PASSWORD).status_code == 303
    url = f"/transfers/{node.transfer_ids[TransferState.GIVEN_UP]}/retry"
    refused = post_form(client, url, {}, token_page="/transfers", headers={"origin": "https://evil.example"})
    assert refused.status_code == 403 and queued == []
    taken = post_form(client, url, {}, token_page="/transfers", headers={"origin": proxy_origin})
    assert taken.status_code == 303 and len(queued) == 1


def test_a_form_post_without_this_browsers_token_is_refused(
    browser: TestClient, node: Node, queued: list[int]
) -> None:
    url = f"/transfers/{node.transfer_ids[TransferState.GIVEN_UP]}/retry"
    other_browser = TestClient(browser.app)
    foreign_token = page_token(other_browser)  # valid, but for another browser's cookie
    for fields in ({}, {CSRF_FIELD: ""}, {CSRF_FIELD: foreign_token}, {CSRF_FIELD: "0" * 64}):
        refused = browser.post(url, data=fields, follow_redirects=False)
        assert refused.status_code == 403 and "security token" in refused.json()["detail"], fields
    assert queued == []


def test_the_pages_own_forms_work(browser: TestClient, node: Node, queued: list[int]) -> None:
    transfer_id = node.transfer_ids[TransferState.GIVEN_UP]
    page = browser.get("/transfers")
    assert page.text.count(f'name="{CSRF_FIELD}"') == page.text.count("<form method=\"post\"") + 1  # + logout
    own = {"origin": "http://testserver", "referer": "http://testserver/transfers"}
    response = post_form(browser, f"/transfers/{transfer_id}/retry", {}, token_page="/transfers", headers=own)
    assert response.status_code == 303 and queued == [transfer_id]
    series_page = browser.get(f"/series/{RAW_SERIES_UID}")
    assert series_page.status_code == 200 and f'name="{CSRF_FIELD}"' in series_page.text
    assert post_form(browser, "/logout", {}, token_page="/transfers", headers=own).status_code == 303


def test_a_malformed_cookie_of_another_app_does_not_hide_the_token(app: FastAPI) -> None:
    client = TestClient(app)
    token = page_token(client)
    browser_id = client.cookies["myomap_csrf"]
    client.cookies.clear()
    response = client.post("/login", data={"username": USER, "password": PASSWORD, CSRF_FIELD: token},
                           headers={"cookie": f'other="unterminated; myomap_csrf={browser_id}'},
                           follow_redirects=False)
    assert response.status_code == 303


def test_the_login_form_needs_its_token(app: FastAPI) -> None:
    client = TestClient(app)
    refused = client.post("/login", data={"username": USER, "password": PASSWORD}, follow_redirects=False)
    assert refused.status_code == 403 and "security token" in refused.text
    assert SESSION_COOKIE not in client.cookies
    assert login(client, USER, PASSWORD).status_code == 303


def test_the_json_api_takes_json_only(browser: TestClient, node: Node, queued: list[int]) -> None:
    url = f"/api/transfers/{node.transfer_ids[TransferState.GIVEN_UP]}/retry"
    for headers, body in (({"content-type": "text/plain"}, "{}"), (FORM_HEADERS, "a=b"), ({}, None),
                          ({"content-type": "multipart/form-data; boundary=x"}, "--x--")):
        refused = browser.post(url, content=body, headers=headers)
        assert refused.status_code == 415, headers
        assert "application/json" in refused.json()["detail"]
    assert queued == []
    cross = browser.post(url, json={}, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403 and queued == []
    assert browser.post(url, json={}).status_code == 200 and len(queued) == 1


# --- sessions end ---


def test_logout_ends_the_session_for_every_copy_of_the_cookie(browser: TestClient, app: FastAPI) -> None:
    stolen = TestClient(app)
    stolen.cookies.set(SESSION_COOKIE, browser.cookies[SESSION_COOKIE])
    assert stolen.get("/api/studies").status_code == 200
    assert post_form(browser, "/logout", {}, token_page="/transfers").status_code == 303
    assert stolen.get("/api/studies").status_code == 401
    assert stolen.get("/", follow_redirects=False).status_code == 303


def test_a_new_password_ends_the_users_sessions(browser: TestClient, node: Node) -> None:
    assert browser.get("/api/studies").status_code == 200
    with node.session_factory() as session:
        set_password(session, USER, "a new password")
        session.commit()
    assert browser.get("/api/studies").status_code == 401


def test_removing_a_user_ends_their_sessions(browser: TestClient, node: Node) -> None:
    with node.session_factory() as session:
        remove_user(session, USER)
        session.commit()
    assert browser.get("/api/studies").status_code == 401


# --- login floods ---


def test_backoff_per_user_and_per_address() -> None:
    throttle = LoginThrottle(free_failures_per_user=3, free_failures_per_address=10, base_delay_s=1.0,
                             max_delay_s=60.0)
    now = 1000.0
    for _ in range(3):
        assert throttle.admit("tech1", "10.0.0.1", now=now).admitted
    assert throttle.admit("tech1", "10.0.0.1", now=now).admitted  # the 4th is checked, then a wait starts
    refused = throttle.admit("tech1", "10.0.0.2", now=now + 0.5)  # the user waits, whatever the address
    assert not refused.admitted and refused.retry_after_s == pytest.approx(0.5) and refused.first_refusal
    assert not throttle.admit("tech1", "10.0.0.2", now=now + 0.6).first_refusal  # one log line per wait
    waits = []
    for _ in range(8):
        now += 100.0  # after each wait, one more wrong attempt doubles it
        assert throttle.admit("tech1", "10.0.0.1", now=now).admitted
        waits.append(throttle.admit("tech1", "10.0.0.1", now=now).retry_after_s)
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert throttle.admit("tech2", "10.0.0.9", now=now).admitted  # other users and addresses go on
    throttle.succeeded("tech2", "10.0.0.9")
    # One address trying many names waits after its free failures.
    for i in range(10):
        assert throttle.admit(f"user{i}", "10.0.0.3", now=now).admitted
    assert throttle.admit("user10", "10.0.0.3", now=now).admitted
    assert not throttle.admit("user11", "10.0.0.3", now=now).admitted
    # Records are forgotten after an hour without failures.
    assert throttle.admit("user11", "10.0.0.3", now=now + 3601).admitted


def test_guesses_elsewhere_do_not_lock_the_user_out_of_their_own_workstation() -> None:
    throttle = LoginThrottle()
    now = 1000.0
    assert throttle.admit("tech1", "10.0.0.5", now=now).admitted
    throttle.succeeded("tech1", "10.0.0.5", now=now)  # the user's workstation
    for _ in range(4):
        throttle.admit("tech1", "10.9.9.9", now=now + 1)
    assert not throttle.admit("tech1", "10.9.9.9", now=now + 1.5).admitted  # the guesser waits
    assert not throttle.admit("tech1", "10.0.0.6", now=now + 1.5).admitted  # so does any other address
    assert throttle.admit("tech1", "10.0.0.5", now=now + 1.5).admitted  # the workstation gets in


def test_fifty_wrong_logins_are_throttled(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(app)
    token = page_token(client)
    with caplog.at_level(logging.INFO):
        answers = [client.post("/login", data={"username": USER, "password": f"guess {i}", CSRF_FIELD: token},
                               follow_redirects=False) for i in range(50)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[:3] == [401] * 3 and statuses.count(401) <= 5 and statuses.count(429) >= 45
    throttled = answers[-1]
    assert int(throttled.headers["retry-after"]) >= 1
    assert "Too many failed logins" in throttled.text and "try again in" in throttled.text
    # While the user waits, even the right password is not checked.
    right = client.post("/login", data={"username": USER, "password": PASSWORD, CSRF_FIELD: token},
                        follow_redirects=False)
    assert right.status_code == 429 and SESSION_COOKIE not in client.cookies
    failures = [r.getMessage() for r in caplog.records if "web login failed" in r.getMessage()]
    assert failures and all("from testclient" in line for line in failures)
    assert len([r for r in caplog.records if "throttled" in r.getMessage()]) <= 5  # not one line per attempt
    assert "guess" not in caplog.text and PASSWORD not in caplog.text
    # HTTP Basic guesses share the throttle: 429 with Retry-After, no scrypt run.
    basic = client.get("/api/studies", auth=(USER, "guess 51"))
    assert basic.status_code == 429 and int(basic.headers["retry-after"]) >= 1


class _Server:
    """The app in uvicorn on 127.0.0.1 (a real event loop: TestClient would serialise the requests)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = _unused_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture()
def unthrottled_app(app: FastAPI) -> Iterator[FastAPI]:
    # Every guess reaches scrypt: what many addresses at once would cause, the worst case for the event loop.
    app.state.web_auth.throttle = LoginThrottle(free_failures_per_user=10**6, free_failures_per_address=10**6)
    yield app


def test_healthz_stays_fast_during_a_login_flood(unthrottled_app: FastAPI) -> None:
    with _Server(unthrottled_app) as base, httpx.Client(base_url=base, timeout=30) as client:
        token_page = client.get("/login")
        token = token_page.text.split(f'name="{CSRF_FIELD}" value="')[1].split('"')[0]
        quiet = [_timed_get(client, "/healthz") for _ in range(5)]
        done = threading.Event()

        def guess(i: int) -> int:
            response = client.post("/login", data={"username": USER, "password": f"guess {i}", CSRF_FIELD: token})
            return response.status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            guesses = pool.map(guess, range(50))
            during = []
            started = time.monotonic()
            while time.monotonic() - started < 1.5:
                during.append(_timed_get(client, "/healthz"))
            statuses = list(guesses)
            done.set()
    assert statuses == [401] * 50
    during.sort()
    p90_s = during[int(0.9 * (len(during) - 1))]
    print(f"/healthz quiet median {statistics.median(quiet) * 1000:.1f} ms; during 50 concurrent wrong logins: "
          f"median {statistics.median(during) * 1000:.1f} ms, p90 {p90_s * 1000:.1f} ms, "
          f"max {during[-1] * 1000:.1f} ms over {len(during)} requests")
    assert p90_s < 0.2 and statistics.median(during) < 0.1


def _timed_get(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    assert client.get(path).status_code in (200, 503)
    return time.perf_counter() - started


# --- security headers and HEAD ---

EXPECTED_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too (FastAPI keeps them behind their router; none has a prefix)."""
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is not None:
            yield from _routes(router.routes)
        else:
            yield route


def _sample_path(route: BaseRoute, node: Node) -> str:
    values = {"series_uid": RAW_SERIES_UID, "study_uid": STUDY_UID, "transfer_id": "1", "result_id": "1",
              "n": "0", "path": "style.css"}
    path = route.path
    for name in route.param_convertors:
        path = path.replace(f"{{{name}}}", values.get(name, "1")).replace(f"{{{name}:path}}", values.get(name, "1"))
    return path


def test_security_headers_and_head_on_every_route(app: FastAPI, browser: TestClient, node: Node) -> None:
    get_paths = sorted({_sample_path(route, node) for route in _routes(app.routes)
                        if "GET" in (getattr(route, "methods", None) or ())})
    assert {"/", "/healthz", "/transfers", "/login", "/api/studies", "/docs"} <= set(get_paths)
    # The sample parameters need not make sense to every route: one that fails answers 500, with the headers too.
    browser = TestClient(app, raise_server_exceptions=False, cookies=browser.cookies)
    checked = [0, 0]  # failed, answered
    for path in [*get_paths, "/static/style.css", "/no/such/page"]:
        response = browser.get(path, follow_redirects=False)
        checked[response.status_code < 500] += 1
        for name, value in EXPECTED_HEADERS.items():
            assert response.headers.get(name) == value, (path, name)
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, path
        if path not in API_DOCS_PATHS:
            assert "unsafe-inline" not in policy, path
        head = browser.head(path, follow_redirects=False)
        assert head.status_code == response.status_code, path
        assert head.content == b"" and head.headers.get("x-frame-options") == "DENY", path
    print(f"headers checked on {checked[1]} GET routes; {checked[0]} failed with their sample parameters")
    assert checked[1] >= 0.8 * sum(checked)
    for refused in (browser.post("/api/studies", content="x"), browser.post("/transfers/1/retry")):
        assert refused.headers.get("x-frame-options") == "DENY" and "content-security-policy" in refused.headers


def test_pages_have_no_inline_script_or_style(browser: TestClient) -> None:
    for path in ("/", "/transfers", f"/series/{RAW_SERIES_UID}", "/login"):
        text = browser.get(path).text
        assert "<script" not in text and "style=" not in text and "<style" not in text, path


def test_every_post_form_of_every_template_carries_the_token() -> None:
    forms = 0
    for template in sorted(TEMPLATES_DIR.glob("*.html")):
        text = template.read_text(encoding="utf-8")
        for match in re.finditer(r"<form\b[^>]*>(.*?)</form>", text, flags=re.DOTALL | re.IGNORECASE):
            if re.search(r'method="post"', match.group(0), flags=re.IGNORECASE):
                forms += 1
                assert "csrf_field()" in match.group(1), f"{template.name}: {match.group(0)[:80]}"
    assert forms >= 3
