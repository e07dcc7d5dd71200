"""The admin page's search, state filters and transfer kinds on a real PostgreSQL server (the JSON summaries are
searched as text, and the name search is case-insensitive, in both databases)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reports.web import create_app
from tests.integration.conftest import PostgresServer
from tests.unit.reports.test_web_admin import _add_transfers, build_node, check_searches
from tests.unit.reports.test_web_results import logged_in

pytestmark = pytest.mark.integration


def test_search_filters_and_transfer_kinds_on_postgres(postgres_server: PostgresServer, tmp_path: Path) -> None:
    built = build_node(postgres_server.create_database(), tmp_path / "storage")
    try:
        client = logged_in(TestClient(create_app(built.settings, built.factory)))
        check_searches(client)
        _add_transfers(built)
        kinds = {t["file_name"]: t["object_kind"] for t in client.get("/api/transfers").json()}
        assert kinds == {"sr1.dcm": "sr", "seg1.dcm": "seg", "sc1.dcm": "sc", "overlay1.dcm": "reader_sc"}
        assert client.get("/healthz").json()["status"] == "degraded"
        assert 'class="verdict verdict-failed"' in client.get("/").text
    finally:
        built.factory.kw["bind"].dispose()
