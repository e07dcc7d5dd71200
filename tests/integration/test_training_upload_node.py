"""The upload page of a running node (`myomap serve`): a case's maps, its experts' SEGs, a trainee's SEG and the
same trainee's IDL SAVE contours uploaded through the page are stored, completed by the node's assembler and scored
by its reader job, as contours sent by C-STORE are; the trainee's dashboard then lists both attempts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import Job, JobState, Result
from dicomnode.jobs.reader_job import RESULT_KIND
from phantom.training_set import TrainingSetOutcome, generate_training_set
from tests.integration.node_harness import NodeProcess, free_port, serve, wait_until
from tests.unit.dicomnode.io.contours.test_idl_sav import write_sav
from tests.unit.reports.training_site import expert_borders

pytestmark = [pytest.mark.integration]

TRAINEE = "trainee_improving"


@pytest.fixture(scope="module")
def training_set(tmp_path_factory: pytest.TempPathFactory) -> TrainingSetOutcome:
    return generate_training_set(tmp_path_factory.mktemp("upload_set"), n_cases=1, n_attempts=1, seed=5)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    yield from serve(tmp_path / "node", free_port(), quiet_seconds=1.0)


class _Page:
    """The upload form as an admin's browser posts it (HTTP Basic, the form token from the page)."""

    def __init__(self, node: NodeProcess) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{node.web_port}", auth=node.web_auth, timeout=60)

    def upload(self, kind: str, files: dict[str, tuple[str, bytes]], **fields: str) -> httpx.Response:
        token = re.search(r'name="csrf_token" value="([^"]+)"', self.client.get("/training/upload").text)
        data = {"kind": kind, **fields, **({"csrf_token": token.group(1)} if token else {})}
        return self.client.post("/training/upload", data=data, files=files)


def _trainee_results(node: NodeProcess) -> list[Result]:
    engine = create_engine(f"sqlite:///{node.data / 'myomap.db'}")
    try:
        with Session(engine) as session:
            pending = session.scalars(select(Job).where(Job.state.in_((JobState.QUEUED, JobState.RUNNING)))).all()
            if pending:
                return []
            results = session.scalars(select(Result).where(Result.kind == RESULT_KIND)).all()
            return [r for r in results if r.summary.get("reader") == TRAINEE]
    finally:
        engine.dispose()


def test_uploads_are_scored_by_the_running_node(node: NodeProcess, training_set: TrainingSetOutcome,
                                                tmp_path: Path) -> None:
    page = _Page(node)
    case = training_set.cases[0]
    for path in case.map_paths:
        response = page.upload("dicom_map", {"file": (path.name, path.read_bytes())})
        assert response.status_code == 201, response.text[-500:]
    for submission in training_set.submissions:
        if submission.role == "expert" or submission.reader == TRAINEE:
            for path in submission.paths:
                response = page.upload("seg", {"file": (path.name, path.read_bytes())})
                assert response.status_code == 201, response.text[-500:]
    image, endo, epi = expert_borders(training_set)
    sav = write_sav(tmp_path / "contours.sav", {"endo_x": endo[:, 0], "endo_y": endo[:, 1],
                                                 "epi_x": epi[:, 0], "epi_y": epi[:, 1]})
    response = page.upload("idl_sav", {"file": ("contours.sav", sav.read_bytes())}, reader=TRAINEE,
                           image_sop_instance_uid=str(image.SOPInstanceUID))
    assert response.status_code == 201, response.text[-500:]

    wait_until(lambda: len(_trainee_results(node)) == 2, timeout_s=120, interval_s=0.5,
               what="both of the trainee's uploads scored")
    results = _trainee_results(node)
    scores = sorted(r.summary["slices"][0]["dice_myocardium"] for r in results)
    assert all(r.summary["slices"][0]["status"] == "scored" for r in results)
    assert scores[-1] > 0.85  # the IDL SAVE file holds an expert's borders
    for result in results:  # the same outputs as a C-STORE'd contour: comparison SR and overlay
        for output in ("sr", "sc"):
            (path,) = result.summary["outputs"][output][:1]
            assert pydicom.dcmread(node.data / path).SOPInstanceUID
    dashboard = page.client.get(f"/training/trainee/{TRAINEE}").text
    assert dashboard.count('class="attempt"') == 2
