"""Sending the web page's forms as a browser does: with the form token of the page that shows them."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from httpx import Response

from reports.web.csrf import CSRF_FIELD

_TOKEN = re.compile(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"')
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


def page_token(client: TestClient, page: str = "/login") -> str:
    """The form token on ``page`` (the browser's token cookie is set by the first page that shows a form)."""
    response = client.get(page)
    found = _TOKEN.search(response.text)
    assert found is not None, f"no form token on {page} ({response.status_code})"
    return found.group(1)


def post_form(client: TestClient, url: str, fields: dict[str, str], *, token_page: str = "/login",
              **kwargs: object) -> Response:
    """POST ``fields`` and the token of ``token_page`` as a urlencoded form (no redirects followed)."""
    return client.post(url, data={**fields, CSRF_FIELD: page_token(client, token_page)},
                       follow_redirects=False, **kwargs)  # type: ignore[arg-type]


def login(client: TestClient, username: str, password: str, next_path: str = "/") -> Response:
    return post_form(client, "/login", {"username": username, "password": password, "next": next_path})
