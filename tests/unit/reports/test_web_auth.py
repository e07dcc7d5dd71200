"""The web page's login: password hashes, session cookies, HTTP Basic, the login form, the first admin."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.migrate import upgrade
from db.models import WebUser
from db.session import make_engine, make_session_factory
from reports.web import create_app
from reports.web.auth import SECRET_KEY_FILE, SESSION_COOKIE, WebAuth, load_secret_key
from reports.web.passwords import hash_password, verify_password
from reports.web.routes.login import WRONG_CREDENTIALS, safe_next
from reports.web.users import (
    INITIAL_ADMIN,
    INITIAL_PASSWORD_FILE,
    UserExistsError,
    add_user,
    ensure_initial_admin,
    remove_user,
    set_password,
    start_session,
)
from tests.unit.reports.web_forms import login, post_form

USER, PASSWORD = "tech1", "sesame-open-7"
SERIES_PAGE = "/series/1.2.826.0.1.3680043.8.498.9"  # unknown series: 404 once logged in, which is enough here


@dataclass(frozen=True)
class Site:
    settings: Settings
    session_factory: sessionmaker[Session]


def _settings(tmp_path: Path, **web: object) -> Settings:
    return Settings(storage={"path": tmp_path / "storage", "min_free_mb": 1}, web=web)


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[Site]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(engine)  # the migration makes the web_user table
    factory = make_session_factory(engine)
    with factory() as session:
        add_user(session, USER, PASSWORD)
        session.commit()
    yield Site(_settings(tmp_path), factory)
    engine.dispose()


@pytest.fixture()
def client(site: Site) -> TestClient:
    return TestClient(create_app(site.settings, site.session_factory))


def _login(client: TestClient, username: str = USER, password: str = PASSWORD, next_path: str = "/"):  # noqa: ANN202
    return login(client, username, password, next_path)


def _password_of(site: Site, username: str) -> str:
    with site.session_factory() as session:
        return session.query(WebUser).filter_by(username=username).one().password_hash


# --- password hashes ---


def test_password_hash_round_trip_and_salt() -> None:
    stored = hash_password("s3cret pass")
    assert stored.startswith("scrypt$16384$8$1$") and "s3cret" not in stored
    assert verify_password("s3cret pass", stored)
    assert not verify_password("s3cret pas", stored) and not verify_password("", stored)
    again = hash_password("s3cret pass")
    assert again != stored and verify_password("s3cret pass", again)  # a new random salt each time
    assert stored.split("$")[4] != again.split("$")[4]


def test_malformed_or_foreign_hashes_never_verify() -> None:
    stored = hash_password("x")
    for broken in ("", "x", stored.replace("scrypt", "bcrypt"), stored.rsplit("$", 1)[0] + "$!!",
                   stored.replace("$16384$", "$1000$"), stored.replace("$16384$", f"${2**30}$")):
        assert not verify_password("x", broken), broken


# --- session cookies ---


def test_tampered_expired_and_unknown_session_tokens_are_refused(site: Site) -> None:
    auth = WebAuth(site.session_factory, b"k" * 32, session_s=3600.0)
    token = auth.start_session(USER)
    assert auth.user_from_cookie(token) == USER
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    for tampered in (forged, "", "garbage", token + "x", "x" * 500):
        assert auth.user_from_cookie(tampered) is None, tampered
    with site.session_factory() as session:
        user = session.query(WebUser).filter_by(username=USER).one()
        expired = start_session(session, user, lifetime_s=-1.0)
        session.commit()
    assert auth.user_from_cookie(expired) is None
    with site.session_factory() as session:  # a new password ends the sessions of the old one
        set_password(session, USER, "new-password")
        session.commit()
    assert auth.user_from_cookie(token) is None


def test_secret_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    key = load_secret_key(settings)
    path = settings.storage_root / SECRET_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 64
    assert load_secret_key(settings) == key  # the next start signs with the same key
    configured = _settings(tmp_path / "other", secret_key="site key from the vault")
    assert load_secret_key(configured) == b"site key from the vault"
    assert not (configured.storage_root / SECRET_KEY_FILE).exists()
    assert "site key" not in configured.model_dump_json()  # `myomap config` never prints it


def test_a_session_survives_a_restart_of_the_app(site: Site, client: TestClient) -> None:
    assert _login(client).status_code == 303
    restarted = TestClient(create_app(site.settings, site.session_factory))
    restarted.cookies = client.cookies
    assert restarted.get("/api/studies").status_code == 200


# --- what needs a login ---


def test_api_without_credentials_is_401_with_a_basic_challenge(client: TestClient) -> None:
    for method, url in (("GET", "/api/studies"), ("GET", "/api/transfers"), ("POST", "/api/transfers/1/retry"),
                        ("POST", "/transfers/1/retry")):
        response = client.request(method, url, follow_redirects=False, json={} if method == "POST" else None)
        assert response.status_code == 401, url
        assert response.json() == {"detail": "login required"}
        assert response.headers["www-authenticate"] == 'Basic realm="myomap"'


def test_pages_redirect_to_the_login_form(client: TestClient) -> None:
    for url in ("/", "/transfers?state=pending", SERIES_PAGE, "/results/1/images/0.png"):
        response = client.get(url, follow_redirects=False)
        assert response.status_code == 303, url
        location = urlsplit(response.headers["location"])
        assert location.path == "/login" and parse_qs(location.query)["next"] == [url]
    form = client.get("/login?next=/transfers")
    assert form.status_code == 200 and 'name="password"' in form.text and 'value="/transfers"' in form.text
    assert "Log out" not in form.text and 'href="/transfers"' not in form.text  # no navigation before the login


def test_healthz_static_and_the_api_description_stay_open(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_wrong_password_or_unknown_user_gets_the_same_form_and_no_cookie(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        wrong = _login(client, password="sesame-open-8")
        unknown = _login(client, username="nobody")
    for response in (wrong, unknown):
        assert response.status_code == 401 and WRONG_CREDENTIALS in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "") and SESSION_COOKIE not in client.cookies
    assert wrong.text.replace(USER, "nobody") == unknown.text  # nothing tells whether the user exists
    assert "tech1" in caplog.text and "nobody" in caplog.text and "sesame" not in caplog.text
    assert _login(client, password="").status_code == 400
    assert client.get("/api/studies").status_code == 401


def test_login_sets_a_strict_cookie_then_pages_and_api_work(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = _login(client, next_path="/transfers")
    assert response.status_code == 303 and response.headers["location"] == "/transfers"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=43200"):
        assert flag.lower() in cookie.lower(), flag
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert "web login: user 'tech1'" in caplog.text and PASSWORD not in caplog.text
    page = client.get("/transfers")
    assert page.status_code == 200 and "tech1" in page.text and 'action="/logout"' in page.text
    assert client.get("/api/studies").status_code == 200
    assert client.get(SERIES_PAGE).status_code == 404  # past the login, to the route


def test_cookie_is_secure_behind_an_https_proxy(site: Site) -> None:
    # uvicorn sets the scheme from X-Forwarded-Proto of a trusted proxy; TestClient can ask for https directly.
    client = TestClient(create_app(site.settings, site.session_factory), base_url="https://myomap.example")
    response = _login(client)
    assert response.status_code == 303 and "secure" in response.headers["set-cookie"].lower()


def test_basic_auth_for_scripts(site: Site, client: TestClient) -> None:
    assert client.get("/api/studies", auth=(USER, PASSWORD)).status_code == 200
    assert client.get("/api/studies", auth=(USER, PASSWORD)).status_code == 200  # remembered: no scrypt again
    for wrong in ((USER, "nope"), ("nobody", PASSWORD)):
        refused = client.get("/api/studies", auth=wrong)
        assert refused.status_code == 401 and "www-authenticate" in refused.headers
    # Wrong Basic credentials on a page: 401 (a script sent them), not the form.
    assert client.get("/", auth=(USER, "nope"), follow_redirects=False).status_code == 401
    assert client.get("/api/studies", headers={"authorization": "Basic !!!"}).status_code == 401
    with site.session_factory() as session:  # a changed password is not taken from the memory of checks
        set_password(session, USER, "changed")
        session.commit()
    assert client.get("/api/studies", auth=(USER, PASSWORD)).status_code == 401
    assert client.get("/api/studies", auth=(USER, "changed")).status_code == 200
    with site.session_factory() as session:
        remove_user(session, USER)
        session.commit()
    assert client.get("/api/studies", auth=(USER, "changed")).status_code == 401


def test_logout_clears_the_cookie(client: TestClient) -> None:
    _login(client)
    assert client.get("/api/studies").status_code == 200
    response = post_form(client, "/logout", {})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"] and "Max-Age=0" in response.headers["set-cookie"]
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example/", "/\\evil.example", "evil", "",
                                    "/ok\nLocation: x"])
def test_no_open_redirect(client: TestClient, target: str) -> None:
    response = _login(client, next_path=target.replace("\n", "%0A"))
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert safe_next(target) == "/"
    assert safe_next("/series/1.2?x=1") == "/series/1.2?x=1"


def test_login_off_checks_nothing(site: Site, tmp_path: Path) -> None:
    settings = _settings(tmp_path, login=False)
    client = TestClient(create_app(settings, site.session_factory))
    assert client.get("/api/studies").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "Log out" not in page.text
    assert client.get("/login").status_code == 404
    assert not (settings.storage_root / SECRET_KEY_FILE).exists()


# --- the first start ---


def test_first_start_creates_admin_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    settings = _settings(tmp_path)
    assert ensure_initial_admin(_settings(tmp_path, login=False), factory) is None  # login off: no user
    with caplog.at_level(logging.INFO):
        path = ensure_initial_admin(settings, factory)
    assert path == settings.storage_root / INITIAL_PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 20 and password not in caplog.text and str(path) in caplog.text
    assert "admin" in caplog.text
    with factory() as session:
        users = session.query(WebUser).all()
        assert [u.username for u in users] == [INITIAL_ADMIN] and verify_password(password, users[0].password_hash)
    assert ensure_initial_admin(settings, factory) is None  # the next start changes nothing
    assert path.read_text().strip() == password
    client = TestClient(create_app(settings, factory))
    assert client.get("/api/studies", auth=(INITIAL_ADMIN, password)).status_code == 200
    with factory() as session, pytest.raises(UserExistsError):
        add_user(session, INITIAL_ADMIN, "again")
    engine.dispose()
