"""The admin page at a glance: verdicts of studies and series, the studies search and its pages, result figures in
words, the transfers page's object kinds and destinations, /healthz degraded and the container's health check.

A node database (SQLite, migrated as the node migrates it) filled through the db models with the summaries the
jobs write (reports.result_summary), served by FastAPI's TestClient with the login on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.migrate import upgrade
from db.models import Job, JobState, Result, Series, SeriesRole, SeriesState, Study, Transfer, TransferState
from db.session import make_engine, make_session_factory
from dicomnode.analysis.slices import warm_up_models
from inference.model_set import SHIPPED_FILES
from reports.result_summary import (
    AlgorithmInfo,
    AnalysisFigures,
    MapResultSummary,
    MotionFigures,
    QualityFigures,
    ReaderResultSummary,
    ReaderSliceFigures,
    ResultOutputs,
    SliceFigures,
    summary_json,
)
from reports.web import create_app
from reports.web.health import free_space_mb
from reports.web.healthcheck import check
from tests.unit.reports.test_web_results import add_web_user, logged_in

FAILED_REASON = "no left ventricle found: the myocardium surrounds only 58 % of the cavity's border"
JOB_ERROR = "cannot read the map: pixel data truncated"


def _analysed(index: int = 0, *, motion_segments: tuple[int, ...] = (), doubtful: bool = False,
              with_motion: bool = True) -> SliceFigures:
    return SliceFigures(
        index=index, status="analysed", banner="", map_kind="T1", level="mid",
        motion=MotionFigures(whole_image_probability=0.8 if motion_segments else 0.1,
                             segments_with_motion=list(motion_segments), has_motion=bool(motion_segments))
        if with_motion else None,
        quality=QualityFigures(predicted_dice=0.62 if doubtful else 0.91, doubtful=doubtful,
                               doubts=["wall thinner than 2 mm"] if doubtful else []),
    )


def _map_summary(uid: str, *slices: SliceFigures, outputs: ResultOutputs | None = None) -> dict:
    summary = MapResultSummary(
        kind="t1", method="scanner map", slices=len(slices), valid_pixels=4000, median_ms=1196.0, p25_ms=1100.0,
        p75_ms=1250.0, unit_series=[uid], map_source="scanner map",
        analysis=AnalysisFigures(
            algorithm=AlgorithmInfo(name="myomap", version="0.1.0",
                                    models={"segmentation": "segmentation 2.0.0", "motion": "myomap-motion 1.1.0"}),
            banner="", slices=list(slices)),
        outputs=outputs or ResultOutputs(),
    )
    return summary_json(summary)


@dataclass
class Built:
    factory: sessionmaker[Session]
    settings: Settings
    uids: dict[str, str]  # name -> Series Instance UID
    next_number: int = 0


def _add_study(session: Session, built: Built, name: str, *, patient: str, patient_id: str, date: str,
               accession: str, series_state: SeriesState = SeriesState.DONE, job_state: JobState | None = JobState.DONE,
               job_error: str = "", summary: dict | None = None, result_kind: str = "t1_map",
               role: SeriesRole = SeriesRole.RAW_IR, created_at: datetime | None = None) -> Result | None:
    built.next_number += 1
    n = built.next_number
    uid = f"1.2.826.0.1.3680043.8.498.{n}.1"
    built.uids[name] = uid
    study = Study(study_instance_uid=f"1.2.826.0.1.3680043.8.498.{n}", patient_name=patient, patient_id=patient_id,
                  study_date=date, accession_number=accession, study_description="CMR mapping",
                  created_at=created_at or datetime.now(UTC))
    series = Series(study=study, series_instance_uid=uid, series_number=5, modality="MR",
                    description=f"MOLLI {name}", role=role, state=series_state, n_instances=8)
    Series(study=study, series_instance_uid=f"{uid}.9", series_number=6, modality="MR", description="phase",
           role=SeriesRole.RAW_IR_PHASE, state=SeriesState.STORED, n_instances=8)
    session.add(study)
    if job_state is None:
        return None
    job = Job(key=f"{uid}/0/{result_kind}", kind=result_kind, series=series, state=job_state, attempts=1,
              error=job_error)
    session.add(job)
    if summary is None:
        return None
    if summary.get("unit_series") == ["x"]:  # the series analysed: this one
        summary = {**summary, "unit_series": [uid]}
    result = Result(job=job, kind=result_kind, summary=summary, paths=[
        path for paths in (summary.get("outputs") or {}).values() for path in paths])
    session.add(result)
    return result


def build_node(database_url: str, storage: Path) -> Built:
    """A migrated node database at ``database_url`` with six studies: a slice failed, a job failed, motion,
    doubtful contours, no motion, and one still receiving."""
    engine = make_engine(database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    add_web_user(factory)
    settings = Settings(storage={"path": storage, "min_free_mb": 1}, database={"url": database_url})
    built = Built(factory, settings, {})
    base = datetime.now(UTC) - timedelta(days=1)
    with factory() as session:
        _add_study(session, built, "failed-slice", patient="Failed^Fiona", patient_id="PF-1", date="20240110",
                   accession="ACC-F1", created_at=base,
                   summary=_map_summary("x", SliceFigures.failed(0, FAILED_REASON, "Analysis not possible")))
        _add_study(session, built, "failed-job", patient="Broken^Bob", patient_id="PB-2", date="20240220",
                   accession="ACC-B2", series_state=SeriesState.FAILED, job_state=JobState.FAILED,
                   job_error=JOB_ERROR, created_at=base + timedelta(minutes=1))
        _add_study(session, built, "motion", patient="Moving^Mia", patient_id="PM-3", date="20240305",
                   accession="ACC-M3", created_at=base + timedelta(minutes=2),
                   summary=_map_summary("x", _analysed(motion_segments=(1, 4))))
        _add_study(session, built, "doubtful", patient="Doubt^Dan", patient_id="PD-4", date="20240410",
                   accession="ACC-D4", created_at=base + timedelta(minutes=3),
                   summary=_map_summary("x", _analysed(doubtful=True)))
        _add_study(session, built, "ok", patient="Fine^Olga", patient_id="PO-5", date="20240515",
                   accession="ACC-O5", created_at=base + timedelta(minutes=4),
                   summary=_map_summary("x", _analysed()))
        _add_study(session, built, "pending", patient="Waiting^Walt", patient_id="PW-6", date="20240620",
                   accession="ACC-W6", series_state=SeriesState.RECEIVING, job_state=None,
                   created_at=base + timedelta(minutes=5))
        session.commit()
    return built


@pytest.fixture()
def built(tmp_path: Path) -> Iterator[Built]:
    node = build_node(f"sqlite:///{tmp_path / 'node.db'}", tmp_path / "storage")
    yield node
    node.factory.kw["bind"].dispose()


@pytest.fixture()
def client(built: Built) -> TestClient:
    return logged_in(TestClient(create_app(built.settings, built.factory)))


def _series_row(page: str, uid: str) -> str:
    start = page.index(f'href="/series/{uid}"')
    return page[page.rindex("<tr", 0, start):page.index("</tr>", start)]


def test_a_done_series_whose_slices_failed_shows_red_with_the_reason(client: TestClient, built: Built) -> None:
    page = client.get("/").text
    row = _series_row(page, built.uids["failed-slice"])
    assert 'class="verdict verdict-failed"' in row and "no left ventricle found" in row
    assert "verdict-ok" not in row and ">done<" not in row
    job_row = _series_row(page, built.uids["failed-job"])
    assert 'class="verdict verdict-failed"' in job_row and JOB_ERROR in job_row
    verdict = client.get(f"/api/series/{built.uids['failed-slice']}").json()["verdict"]
    assert verdict["kind"] == "failed" and verdict["detail"].startswith("no left ventricle found")


def test_every_verdict_has_its_colour_class_and_the_legend_explains_them(client: TestClient, built: Built) -> None:
    page = client.get("/").text
    expected = {"motion": "verdict-motion", "doubtful": "verdict-doubtful", "ok": "verdict-ok",
                "pending": "verdict-pending"}
    for name, css in expected.items():
        assert f'class="verdict {css}"' in _series_row(page, built.uids[name]), name
    assert "segments 1, 4" in _series_row(page, built.uids["motion"])
    assert "wall thinner than 2 mm" in _series_row(page, built.uids["doubtful"])
    assert 'class="legend"' in page
    for meaning in ("analysis failed", "motion artefact found", "contours the quality check doubts",
                    "receiving, queued, running or waiting", "stored, nothing to analyse"):
        assert meaning in page
    css = client.get("/static/style.css").text
    assert ".verdict-failed, .verdict-motion { color: #fff; background: var(--red); }" in css
    # A study takes its most urgent series' verdict.
    study = client.get("/api/studies", params={"name": "fiona"}).json()[0]
    assert study["verdict"]["kind"] == "failed"


def test_motion_not_assessed_is_no_check() -> None:
    from reports.web.verdicts import VerdictKind, result_verdict

    result = Result(kind="t1_map", summary=_map_summary("x", _analysed(with_motion=False)))
    assert result_verdict(result).kind is VerdictKind.NO_CHECK


def _patients(client: TestClient, **params: str) -> set[str]:
    return {study["patient_id"] for study in client.get("/api/studies", params=params).json()}


def test_search_by_name_id_accession_date_and_state(client: TestClient) -> None:
    check_searches(client)
    page = client.get("/", params={"name": "olga"}).text
    assert "Fine, Olga" in page and "Moving, Mia" not in page and "1 study matches the search" in page
    assert 'value="olga"' in page  # the form keeps the search


def check_searches(client: TestClient) -> None:
    """Every search and filter of the studies list finds the studies of :func:`build_node`, and only them."""
    assert _patients(client, name="fiona FAILED") == {"PF-1"}
    assert _patients(client, name="walt") == {"PW-6"}
    assert _patients(client, patient_id="PM-3") == {"PM-3"}
    assert _patients(client, patient_id="PM") == set()  # exact unless it ends with *
    assert _patients(client, patient_id="P*") == {"PF-1", "PB-2", "PM-3", "PD-4", "PO-5", "PW-6"}
    assert _patients(client, accession="ACC-D4") == {"PD-4"}
    assert _patients(client, date_from="2024-02-01", date_to="2024-04-10") == {"PB-2", "PM-3", "PD-4"}
    assert _patients(client, state="failed") == {"PF-1", "PB-2"}
    assert _patients(client, state="motion") == {"PM-3"}
    assert _patients(client, state="doubtful") == {"PD-4"}
    assert _patients(client, state="pending") == {"PW-6"}
    assert _patients(client, name="mia", state="failed") == set()
    assert client.get("/api/studies", params={"date_from": "last week"}).status_code == 422


def test_the_studies_page_pages_by_keyset(built: Built, client: TestClient) -> None:
    with built.factory() as session:
        for n in range(120):
            session.add(Study(study_instance_uid=f"1.2.3.{n}", patient_name=f"Many^P{n:03d}", patient_id=f"M{n:03d}",
                              study_date="20250101"))
        session.commit()
    first = client.get("/", params={"name": "many"}).text
    assert "P119" in first and "P070" in first and "P069" not in first
    assert "newer" not in first
    older = first.split('rel="next"')[0].rsplit('href="?', 1)[1].split('"')[0].replace("&amp;", "&")
    assert "before=" in older and "name=many" in older
    second = client.get(f"/?{older}").text
    assert "P069" in second and "P020" in second and "P070" not in second and "P019" not in second
    newer = second.split('rel="prev"')[0].rsplit('href="?', 1)[1].split('"')[0].replace("&amp;", "&")
    back = client.get(f"/?{newer}").text
    assert "P119" in back and "P070" in back and "P069" not in back
    third_link = second.split('rel="next"')[0].rsplit('href="?', 1)[1].split('"')[0].replace("&amp;", "&")
    third = client.get(f"/?{third_link}").text
    assert "P019" in third and "P000" in third and 'rel="next"' not in third
    api = client.get("/api/studies", params={"name": "many", "limit": 50}).json()
    rest = client.get("/api/studies", params={"name": "many", "limit": 100, "before": api[-1]["id"]}).json()
    assert len(api) == 50 and len(rest) == 70 and {s["id"] for s in api}.isdisjoint({s["id"] for s in rest})


def test_result_figures_read_as_words_not_keys(client: TestClient, built: Built) -> None:
    page = client.get(f"/series/{built.uids['motion']}").text
    for raw in ("median_ms", "unit_series", "{'", "[{", "valid_pixels", "source_revision"):
        assert raw not in page, raw
    assert "1,196 (interquartile range 1,100 to 1,250)" in page
    assert "Analysed together" in page and "5 MOLLI motion" in page
    assert page.count("segmentation 2.0.0") == 1 and "segmentation segmentation" not in page
    assert 'class="verdict verdict-motion"' in page


def test_a_reader_score_shows_its_slices_as_a_table(built: Built, client: TestClient) -> None:
    summary = summary_json(ReaderResultSummary(
        reader="trainee-3", reference="consensus of 2 experts",
        slices=[ReaderSliceFigures(map_sop_instance_uid="1.2.3", map_kind="T1", level="mid", status="scored",
                                   dice_myocardium=0.8123, hausdorff_mm=4.25)],
        outputs=ResultOutputs(sc=["outputs/a/b/overlay.dcm"]),
    ))
    with built.factory() as session:
        _add_study(session, built, "reader", patient="Reader^Rita", patient_id="PR-7", date="20240701",
                   accession="ACC-R7", role=SeriesRole.SEG, result_kind="reader_score", summary=summary)
        session.commit()
    page = client.get(f"/series/{built.uids['reader']}").text
    assert "map_sop_instance_uid" not in page and "{'" not in page
    assert "<th scope=\"row\">T1 mid</th>" in page and "0.812" in page and "4.2" in page
    assert "Contours of trainee-3 scored" in page


def _add_transfers(built: Built) -> None:
    outputs = ResultOutputs(sr=["outputs/s/x/sr1.dcm"], seg=["outputs/s/x/seg1.dcm"], sc=["outputs/s/x/sc1.dcm"])
    with built.factory() as session:
        result = _add_study(session, built, "sent", patient="Sent^Sam", patient_id="PS-8", date="20240801",
                            accession="ACC-S8", summary=_map_summary("x", _analysed(), outputs=outputs))
        assert result is not None
        for path, ae_title, state in (("outputs/s/x/sr1.dcm", "ARCHIVE", TransferState.GIVEN_UP),
                                      ("outputs/s/x/seg1.dcm", "ARCHIVE", TransferState.SENT),
                                      ("outputs/s/x/sc1.dcm", "CONSOLE", TransferState.SENT)):
            session.add(Transfer(result=result, path=path, sop_instance_uid=Path(path).stem, ae_title=ae_title,
                                 host="127.0.0.1", port=104, state=state, attempts=1, last_error=""))
        overlay = _add_study(session, built, "overlay", patient="Reader^Ray", patient_id="PR-9", date="20240901",
                             accession="ACC-R9", role=SeriesRole.SEG, result_kind="reader_score",
                             summary=summary_json(ReaderResultSummary(
                                 reader="trainee-1", outputs=ResultOutputs(sc=["outputs/r/y/overlay1.dcm"]))))
        assert overlay is not None
        session.add(Transfer(result=overlay, path="outputs/r/y/overlay1.dcm", sop_instance_uid="overlay1",
                             ae_title="READER", host="127.0.0.1", port=105, state=TransferState.SENT, attempts=1,
                             last_error=""))
        session.commit()


def test_transfers_show_object_kind_and_destination_and_filter_by_both(built: Built, client: TestClient) -> None:
    _add_transfers(built)
    listed = {t["file_name"]: t["object_kind"] for t in client.get("/api/transfers").json()}
    assert listed == {"sr1.dcm": "sr", "seg1.dcm": "seg", "sc1.dcm": "sc", "overlay1.dcm": "reader_sc"}
    page = client.get("/transfers").text
    assert ">reader SC</span>" in page and ">SEG</span>" in page and "overlay1.dcm" in page
    assert '<option value="READER"' in page and '<option value="reader_sc"' in page  # choices from the data
    archive = client.get("/transfers", params={"destination": "ARCHIVE"}).text
    assert "sr1.dcm" in archive and "seg1.dcm" in archive and "sc1.dcm" not in archive
    seg_only = client.get("/transfers", params={"destination": "ARCHIVE", "kind": "seg"}).text
    assert "seg1.dcm" in seg_only and "sr1.dcm" not in seg_only
    assert {t["file_name"] for t in client.get("/api/transfers", params={"kind": "sc"}).json()} == {"sc1.dcm"}
    assert client.get("/transfers", params={"kind": "pdf"}).text.count("<tr class=\"transfer-") == 0


def test_healthz_is_ok_without_a_reason(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["problems"] == []
    assert "node ok" in client.get("/").text


def test_healthz_is_degraded_when_transfers_were_given_up(built: Built, client: TestClient) -> None:
    _add_transfers(built)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["problems"] == ["1 transfer given up: see the transfers page to retry"]
    header = client.get("/").text
    assert 'class="health health-degraded"' in header and "1 transfer given up" in header


def test_healthz_is_degraded_near_the_storage_watermark(built: Built, tmp_path: Path) -> None:
    free_mb = free_space_mb(tmp_path)
    assert free_mb is not None
    near = built.settings.model_copy(update={"storage": built.settings.storage.model_copy(
        update={"min_free_mb": int(free_mb / 1.5)})})
    response = TestClient(create_app(near, built.factory)).get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "degraded"
    assert "near the watermark" in response.json()["problems"][0]


def test_healthz_is_degraded_when_no_worker_takes_waiting_jobs(built: Built, client: TestClient) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with built.factory() as session:
        for job in session.query(Job):
            job.started_at = long_ago
        series = session.query(Series).filter_by(series_instance_uid=built.uids["pending"]).one()
        session.add(Job(key="stalled/0/t1_map", kind="t1_map", series=series, state=JobState.QUEUED,
                        created_at=long_ago))
        session.commit()
    health = client.get("/healthz").json()
    assert health["status"] == "degraded"
    assert health["problems"][0].startswith("queue stalled: 1 job waiting (the oldest for 60 min)")
    assert "no worker has taken a job for 60 min" in health["problems"][0]
    # A worker that took a job a moment ago: busy, not stalled.
    with built.factory() as session:
        job = session.query(Job).filter(Job.key != "stalled/0/t1_map").first()
        assert job is not None
        job.started_at = datetime.now(UTC)
        session.commit()
    assert client.get("/healthz").json()["status"] == "ok"


def test_healthz_and_the_header_say_where_the_models_run(built: Built, client: TestClient) -> None:
    assert client.get("/healthz").json()["models"] == []
    assert "models not loaded yet" in client.get("/").text
    # As the analysis process records it once it has loaded the models (this test's process loads them here).
    assert warm_up_models(built.settings) is not None
    models = client.get("/healthz").json()["models"]
    assert len(models) == 1 and models[0]["summary"] == "CPUExecutionProvider"
    assert set(models[0]["providers"]) == set(SHIPPED_FILES) and models[0]["device_asked"] == "auto"
    assert "models on CPUExecutionProvider" in client.get("/").text


class _Health(BaseHTTPRequestHandler):
    answer: tuple[int, dict] = (200, {"status": "ok", "problems": []})

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code, body = self.answer
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("code", "body", "exit_code", "printed"),
    [
        (200, {"status": "ok", "problems": []}, 0, "ok"),
        (200, {"status": "degraded", "problems": ["3 transfers given up"]}, 1, "degraded: 3 transfers given up"),
        (503, {"status": "failing", "problems": ["database unreachable"]}, 1, "failing: database unreachable"),
    ],
)
def test_the_container_health_check_command(code: int, body: dict, exit_code: int, printed: str) -> None:
    handler = type("Handler", (_Health,), {"answer": (code, body)})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        done = subprocess.run([sys.executable, "-m", "reports.web.healthcheck", url], capture_output=True, text=True,
                              timeout=30)
    finally:
        server.shutdown()
    assert done.returncode == exit_code and done.stdout.strip() == printed


def test_the_health_check_fails_when_nothing_answers() -> None:
    with HTTPServer(("127.0.0.1", 0), _Health) as server:
        port = server.server_port  # closed again before the check
    code, line = check(f"http://127.0.0.1:{port}/healthz", timeout_s=2)
    assert code == 1 and line.startswith("unreachable")


def test_dockerfiles_use_the_health_check_command() -> None:
    root = Path(__file__).resolve().parents[3]
    for name in ("Dockerfile", "Dockerfile.cpu"):
        text = (root / name).read_text()
        assert 'CMD ["python", "-m", "reports.web.healthcheck", "http://127.0.0.1:8080/healthz"]' in text, name
    cpu = (root / "Dockerfile.cpu").read_text()
    assert '".[cpu,postgres,redis]"' in cpu and "onnxruntime-gpu" not in cpu and "nvidia" not in cpu
