"""The admin web app with FastAPI's TestClient on a temporary SQLite database filled through the db models."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import Header, HTTPException
from fastapi.params import Depends
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.models import (
    Base,
    Instance,
    Job,
    JobState,
    Result,
    Series,
    SeriesRole,
    SeriesState,
    Study,
    Transfer,
    TransferState,
)
from db.session import make_engine, make_session_factory
from reports.web import create_app
from tests.unit.reports.test_web_results import add_web_user, logged_in
from tests.unit.reports.web_forms import post_form

STUDY_UID = "1.2.826.0.1.3680043.8.498.100"
OTHER_STUDY_UID = "1.2.826.0.1.3680043.8.498.200"
RAW_SERIES_UID = "1.2.826.0.1.3680043.8.498.101"
MAP_SERIES_UID = "1.2.826.0.1.3680043.8.498.102"
OUTPUT_SERIES_UID = "1.2.826.0.1.3680043.8.498.103"
PATIENT_NAME = "Doe^Jane"


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Node:
    settings: Settings
    session_factory: sessionmaker[Session]
    transfer_ids: dict[TransferState, int]


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[Node]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    settings = Settings(
        storage={"path": tmp_path / "storage", "min_free_mb": 1},
        dicom={"acse_timeout_s": 2.0, "dimse_timeout_s": 2.0, "network_timeout_s": 2.0},
        scu={"max_attempts": 3, "backoff_initial_s": 1.0, "backoff_max_s": 5.0},
    )
    add_web_user(factory)
    now = datetime.now(UTC)
    with factory() as session:
        study = Study(
            study_instance_uid=STUDY_UID,
            patient_name=PATIENT_NAME,
            patient_id="PID-7",
            study_date="20240315",
            study_description="CMR mapping",
            created_at=now - timedelta(hours=1),
        )
        raw = Series(
            study=study,
            series_instance_uid=RAW_SERIES_UID,
            series_number=7,
            modality="MR",
            description="MOLLI_5(3)3 mid",
            role=SeriesRole.RAW_IR,
            state=SeriesState.DONE,
            expected_instances=8,
            n_instances=8,
            calling_ae="SCANNER",
            calling_host="127.0.0.1",
        )
        Series(  # attached to the study through the relationship
            study=study,
            series_instance_uid=MAP_SERIES_UID,
            series_number=8,
            modality="MR",
            description="MOLLI_T1MAP",
            role=SeriesRole.T1_MAP,
            state=SeriesState.RECEIVING,
            n_instances=1,
        )
        for number in range(1, 9):
            raw.instances.append(
                Instance(
                    sop_instance_uid=f"{RAW_SERIES_UID}.{number}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    instance_number=number,
                    path=f"{STUDY_UID}/{RAW_SERIES_UID}/{number}.dcm",
                    sha256="0" * 64,
                    size_bytes=1000,
                )
            )
        job = Job(
            key=f"{RAW_SERIES_UID}/0/t1_map", kind="t1_map", series=raw, state=JobState.DONE, attempts=1
        )
        result = Result(
            job=job,
            kind="t1_map",
            output_series_uid=OUTPUT_SERIES_UID,
            paths=["out/1.dcm", "out/2.dcm"],
            summary={"global_t1_ms": 1012.5},
        )
        dead_port = _unused_port()
        transfers = {
            TransferState.SENT: Transfer(
                result=result,
                path="out/1.dcm",
                sop_instance_uid=f"{OUTPUT_SERIES_UID}.1",
                ae_title="PACS",
                host="127.0.0.1",
                port=dead_port,
                state=TransferState.SENT,
                attempts=1,
                sent_at=now,
            ),
            TransferState.GIVEN_UP: Transfer(
                result=result,
                path="out/2.dcm",
                sop_instance_uid=f"{OUTPUT_SERIES_UID}.2",
                ae_title="CONSOLE",
                host="127.0.0.1",
                port=dead_port,
                state=TransferState.GIVEN_UP,
                attempts=3,
                last_error="CONSOLE@127.0.0.1 could not be reached or aborted",
            ),
        }
        other = Study(study_instance_uid=OTHER_STUDY_UID, patient_name="Roe^Richard", created_at=now)
        session.add_all([study, other, job, result, *transfers.values()])
        session.commit()
        ids = {state: transfer.id for state, transfer in transfers.items()}
    yield Node(settings=settings, session_factory=factory, transfer_ids=ids)
    engine.dispose()


@pytest.fixture()
def queued() -> list[int]:
    return []


@pytest.fixture()
def client(node: Node, queued: list[int]) -> TestClient:
    return logged_in(TestClient(create_app(node.settings, node.session_factory, enqueue_delivery=queued.append)))


def _transfer(node: Node, transfer_id: int) -> Transfer:
    with node.session_factory() as session:
        return session.get(Transfer, transfer_id)


def test_studies_json_newest_first(client: TestClient) -> None:
    response = client.get("/api/studies")
    assert response.status_code == 200
    studies = response.json()
    assert [s["study_instance_uid"] for s in studies] == [OTHER_STUDY_UID, STUDY_UID]
    assert studies[1]["n_series"] == 2 and studies[1]["patient_name"] == PATIENT_NAME
    assert studies[1]["created_at"].endswith("Z") or studies[1]["created_at"].endswith("+00:00")
    assert [s["study_instance_uid"] for s in client.get("/api/studies?limit=1&offset=1").json()] == [
        STUDY_UID
    ]


def test_study_json_with_series(client: TestClient) -> None:
    study = client.get(f"/api/studies/{STUDY_UID}").json()
    assert [(s["series_number"], s["role"], s["state"]) for s in study["series"]] == [
        (7, "raw_ir", "done"),
        (8, "t1_map", "receiving"),
    ]


def test_series_json_has_instances_jobs_results_and_transfers(client: TestClient) -> None:
    series = client.get(f"/api/series/{RAW_SERIES_UID}").json()
    assert series["n_instances"] == 8 and series["expected_instances"] == 8
    assert series["role"] == "raw_ir" and series["state"] == "done"
    assert series["study_instance_uid"] == STUDY_UID
    (job,) = series["jobs"]
    assert job["kind"] == "t1_map" and job["state"] == "done"
    (result,) = job["results"]
    assert result["n_files"] == 2 and result["summary"] == {"global_t1_ms": 1012.5}
    assert sorted(t["state"] for t in result["transfers"]) == ["given_up", "sent"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"/api/studies/{STUDY_UID}.9", "no study with Study Instance UID"),
        (f"/api/series/{RAW_SERIES_UID}.9", "no series with Series Instance UID"),
    ],
)
def test_unknown_uid_is_404_with_a_message(client: TestClient, url: str, message: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/studies/not-a-uid",
        "/api/series/1.2.abc",
        "/api/transfers?state=lost",
        "/api/studies?limit=0",
        "/series/" + "1" * 65,
    ],
)
def test_bad_input_is_422_with_a_message(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"]


def test_transfers_json_filters_by_state(client: TestClient, node: Node) -> None:
    everything = client.get("/api/transfers").json()
    assert {t["state"] for t in everything} == {"sent", "given_up"}
    given_up = client.get("/api/transfers", params={"state": "given_up"}).json()
    assert [t["id"] for t in given_up] == [node.transfer_ids[TransferState.GIVEN_UP]]
    assert given_up[0]["source_series_instance_uid"] == RAW_SERIES_UID
    assert given_up[0]["result_kind"] == "t1_map"
    assert client.get("/api/transfers", params={"state": "pending"}).json() == []


def test_retry_api_requeues_a_given_up_transfer(client: TestClient, node: Node, queued: list[int]) -> None:
    transfer_id = node.transfer_ids[TransferState.GIVEN_UP]
    response = client.post(f"/api/transfers/{transfer_id}/retry", json={})
    assert response.status_code == 200
    assert response.json()["state"] == "pending" and response.json()["attempts"] == 0
    assert queued == [transfer_id]
    stored = _transfer(node, transfer_id)
    assert stored.state is TransferState.PENDING and stored.attempts == 0 and stored.last_error == ""


def test_retry_api_refuses_sent_and_unknown(client: TestClient, node: Node, queued: list[int]) -> None:
    sent = client.post(f"/api/transfers/{node.transfer_ids[TransferState.SENT]}/retry", json={})
    assert sent.status_code == 409 and "already sent" in sent.json()["detail"]
    unknown = client.post("/api/transfers/999/retry", json={})
    assert unknown.status_code == 404 and "999" in unknown.json()["detail"]
    assert client.post("/api/transfers/abc/retry", json={}).status_code == 422
    assert queued == []


def test_retry_button_redirects_to_the_transfers_page(
    client: TestClient, node: Node, queued: list[int]
) -> None:
    transfer_id = node.transfer_ids[TransferState.GIVEN_UP]
    response = post_form(client, f"/transfers/{transfer_id}/retry", {})
    assert response.status_code == 303 and response.headers["location"] == "/transfers"
    assert queued == [transfer_id]
    assert _transfer(node, transfer_id).state is TransferState.PENDING
    missing = post_form(client, "/transfers/999/retry", {})
    assert missing.status_code == 404 and "no transfer with id 999" in missing.text


def test_retry_without_a_queue_makes_the_transfer_due(node: Node) -> None:
    client = logged_in(TestClient(create_app(node.settings, node.session_factory)))
    transfer_id = node.transfer_ids[TransferState.GIVEN_UP]
    assert client.post(f"/api/transfers/{transfer_id}/retry", json={}).status_code == 200
    # The web app never sends itself: the transfer waits, due now, for the node's sweep of overdue transfers.
    stored = _transfer(node, transfer_id)
    assert stored.state is TransferState.PENDING and stored.attempts == 0 and stored.last_error == ""
    assert stored.next_attempt_at.replace(tzinfo=UTC) <= datetime.now(UTC)


def test_studies_page_shows_patients_and_series_states(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "Doe, Jane" in page and "Roe, Richard" in page and "2024-03-15" in page
    assert f'href="/series/{RAW_SERIES_UID}"' in page
    assert "MOLLI_T1MAP" in page and "receiving" in page and "8 / 8" in page
    assert client.get("/?before=0").status_code == 422


def test_series_page_shows_jobs_results_and_transfers(client: TestClient) -> None:
    page = client.get(f"/series/{RAW_SERIES_UID}").text
    assert "MOLLI_5(3)3 mid" in page and "raw ir" in page and "8 of 8 expected" in page
    assert "t1 map" in page and "Global t1 (ms)" in page and "1012.50" in page
    assert "CONSOLE@127.0.0.1" in page and "given_up" in page
    missing = client.get(f"/series/{RAW_SERIES_UID}.9")
    assert missing.status_code == 404 and "no series with Series Instance UID" in missing.text


def test_transfers_page_offers_retry_only_for_undelivered(client: TestClient, node: Node) -> None:
    page = client.get("/transfers").text
    assert f'action="/transfers/{node.transfer_ids[TransferState.GIVEN_UP]}/retry"' in page
    assert f'action="/transfers/{node.transfer_ids[TransferState.SENT]}/retry"' not in page
    sent_only = client.get("/transfers", params={"state": "sent"}).text
    assert "<strong>PACS</strong>" in sent_only and "<strong>CONSOLE</strong>" not in sent_only


def test_healthz_reports_database_storage_and_work(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    health = response.json()
    # The given-up transfer makes the node degraded (it still takes work: 200).
    assert health["status"] == "degraded" and health["database_reachable"] is True
    assert health["problems"] == ["1 transfer given up: see the transfers page to retry"]
    assert health["storage_free_mb"] > 1
    assert (
        health["transfers_given_up"] == 1 and health["transfers_pending"] == 0 and health["jobs_waiting"] == 0
    )


def test_healthz_fails_below_the_disk_watermark(node: Node) -> None:
    settings = node.settings.model_copy(
        update={"storage": node.settings.storage.model_copy(update={"min_free_mb": 10**12})}
    )
    response = TestClient(create_app(settings, node.session_factory)).get("/healthz")
    assert response.status_code == 503
    assert "below the watermark" in response.json()["problems"][0]


def test_healthz_fails_without_a_database(node: Node, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'folder' / 'node.db'}")
    response = TestClient(create_app(node.settings, make_session_factory(engine))).get("/healthz")
    assert response.status_code == 503
    assert response.json()["database_reachable"] is False


def test_openapi_lists_the_json_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/healthz",
        "/api/studies",
        "/api/studies/{study_uid}",
        "/api/series/{series_uid}",
        "/api/transfers",
        "/api/transfers/{transfer_id}/retry",
    ):
        assert path in paths
    assert "/transfers" not in paths  # pages are not API


def test_access_dependencies_guard_everything_but_healthz(node: Node) -> None:
    def require_token(x_token: str | None = Header(default=None)) -> None:
        if x_token != "let-me-in":
            raise HTTPException(401, detail="login required")

    client = logged_in(TestClient(
        create_app(node.settings, node.session_factory, access_dependencies=[Depends(require_token)])
    ))
    assert client.get("/healthz").status_code == 200
    for url in ("/api/studies", "/", f"/series/{RAW_SERIES_UID}", "/transfers"):
        assert client.get(url).status_code == 401
    assert client.get("/api/studies", headers={"X-Token": "let-me-in"}).status_code == 200
    client.auth = None  # the login is checked first: the token alone is not enough
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/studies", headers={"X-Token": "let-me-in"}).status_code == 401
    assert client.get("/", headers={"X-Token": "let-me-in"}, follow_redirects=False).status_code == 303


def test_static_stylesheet_is_served(client: TestClient) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200 and "text/css" in response.headers["content-type"]


def test_patient_names_are_not_logged(
    client: TestClient, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        client.get("/")
        client.get(f"/series/{RAW_SERIES_UID}")
        client.post(f"/api/transfers/{node.transfer_ids[TransferState.GIVEN_UP]}/retry", json={})
    assert caplog.records  # the retry is logged ...
    assert "Doe" not in caplog.text and "PID-7" not in caplog.text  # ... without patient data
