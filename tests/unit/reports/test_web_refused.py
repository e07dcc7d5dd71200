"""The transfers page lists refused conflicting instances (a known SOP Instance UID re-sent under another patient or
study): UIDs, the sender and what differed, never patient data."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from config.settings import load_settings
from db import refused
from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from reports.web import create_app
from tests.unit.reports.test_web_results import add_web_user, logged_in


def test_transfers_page_shows_refused_conflicting_instances(tmp_path: Path) -> None:
    settings = load_settings(storage={"path": tmp_path / "storage", "min_free_mb": 0})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    with engine.begin() as connection:
        refused.record_refusal(
            connection, sop_instance_uid="1.2.826.0.1.3680043.8.498.77.1", instance_id=None,
            stored_study_instance_uid="1.2.826.0.1.3680043.8.498.77", sent_study_instance_uid="1.2.826.0.1.99",
            patient_id_differs=True, calling_ae="SCANNER<b>", calling_host="10.0.0.7",
        )
    add_web_user(factory)
    client = logged_in(TestClient(create_app(settings, factory)))

    page = client.get("/transfers").text

    section = page[page.index("Refused conflicting instances"):]
    assert "1.2.826.0.1.3680043.8.498.77.1" in section and "1.2.826.0.1.99" in section
    assert "Patient ID and Study Instance UID" in section and "10.0.0.7" in section
    assert "SCANNER&lt;b&gt;" in section and "SCANNER<b>" not in section
    engine.dispose()


def test_transfers_page_says_nothing_was_refused(tmp_path: Path) -> None:
    settings = load_settings(storage={"path": tmp_path / "storage", "min_free_mb": 0})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    add_web_user(factory)
    page = logged_in(TestClient(create_app(settings, factory))).get("/transfers").text
    assert "No instance has been refused" in page
    engine.dispose()
