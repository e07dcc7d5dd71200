"""The upload page with the node's upload service: each file kind stored as a C-STORE'd instance is and scored by
the reader job with the same outputs; bad files refused with 4xx and the reason, nothing stored."""

from __future__ import annotations

import base64
import copy
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from db.models import Instance, Result, Series, SeriesRole
from dicomnode.app.uploads import NodeUploads
from dicomnode.jobs.creation import enqueue_series
from dicomnode.jobs.outputs import ALGORITHM_VERSION
from dicomnode.jobs.reader_job import run_reader_job
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from reports.programme.queries import trainee_progress
from reports.web import create_app
from reports.web.uploads import MAX_UPLOAD_BYTES
from tests.report_builders import dciodvfy_errors
from tests.unit.dicomnode.io.contours.test_idl_sav import write_sav
from tests.unit.reports.training_site import (
    IMPROVING,
    PASSWORD,
    PERSISTENT,
    SHIFTED,
    TrainingSite,
    build_training_site,
    expert_borders,
)

UPLOAD = "/training/upload"


class _NoQueue:
    def enqueue_job(self, job_id: int) -> None:
        pass

    def enqueue_delivery(self, transfer_id: int, *, delay_s: float = 0.0) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingSite]:
    yield from build_training_site(tmp_path_factory.mktemp("upload"), n_cases=1, n_attempts=1)


@pytest.fixture(scope="module")
def uploads(site: TrainingSite) -> NodeUploads:
    return NodeUploads(site.settings, site.session_factory, None, ALGORITHM_VERSION)


@pytest.fixture(scope="module")
def client(site: TrainingSite, uploads: NodeUploads) -> TestClient:
    return TestClient(create_app(site.settings, site.session_factory, accept_upload=uploads))


def _post(client: TestClient, user: str, data: dict[str, str], files: dict[str, tuple[str, bytes]]):  # noqa: ANN202
    headers = {"authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}
    page = client.get(UPLOAD, headers=headers)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    form = {**data, **({"csrf_token": token.group(1)} if token else {})}
    return client.post(UPLOAD, data=form, files={k: (n, io.BytesIO(b)) for k, (n, b) in files.items()},
                       headers=headers)


def _score_series(site: TrainingSite, series_instance_uid: str) -> list[Result]:
    """Hand the stored series on as the assembler does once it is complete and run its reader jobs."""
    with site.session_factory() as session:
        series = session.scalars(select(Series).where(Series.series_instance_uid == series_instance_uid)).one()
        key = (series.id, series.revision)
    jobs = enqueue_series(*key, session_factory=site.session_factory, sink=_NoQueue())
    for job_id in jobs:
        run_reader_job(job_id, settings=site.settings, session_factory=site.session_factory,
                       enqueue_delivery=lambda _: None)
    with site.session_factory() as session:
        return list(session.scalars(select(Result).where(Result.job_id.in_(jobs))))


def _expert_borders(site: TrainingSite) -> tuple[pydicom.Dataset, np.ndarray, np.ndarray]:
    return expert_borders(site.outcome)


def _attempts_of(site: TrainingSite, reader: str) -> int:
    with site.session_factory() as session:
        return len(trainee_progress(session, reader).attempts)


def test_idl_sav_is_converted_stored_and_scored_for_the_trainee_themselves(site: TrainingSite,
                                                                           client: TestClient,
                                                                           tmp_path: Path) -> None:
    image, endo, epi = _expert_borders(site)
    sav = write_sav(tmp_path / "contours.sav", {"endo_x": endo[:, 0], "endo_y": endo[:, 1],
                                                 "epi_x": epi[:, 0], "epi_y": epi[:, 1]}).read_bytes()
    before = _attempts_of(site, IMPROVING)
    # A trainee names another reader: the page takes the trainee's own reader instead.
    response = _post(client, "trainee", {"kind": "idl_sav", "reader": SHIFTED,
                                         "image_sop_instance_uid": str(image.SOPInstanceUID)},
                     {"file": ("contours.sav", sav)})
    assert response.status_code == 201, response.text[-600:]
    assert "Stored." in response.text
    series_uid = re.search(r"series ([0-9.]+)</div>", response.text).group(1)
    (result,) = _score_series(site, series_uid)
    (figures,) = result.summary["slices"]
    assert result.summary["reader"] == IMPROVING and figures["status"] == "scored"
    assert figures["dice_myocardium"] > 0.85  # an expert's borders, redrawn from points
    assert _attempts_of(site, IMPROVING) == before + 1
    # The converted SEG is a valid DICOM object.
    with site.session_factory() as session:
        path = session.scalar(select(Instance.path).join(Series).where(Series.series_instance_uid == series_uid))
    stored = pydicom.dcmread(site.settings.storage_root / path)
    assert stored.ContentCreatorName.family_name == IMPROVING
    assert dciodvfy_errors(stored, tmp_path / "upload_seg.dcm") == []


def test_point_lists_are_scored_for_the_reader_the_supervisor_names(site: TrainingSite,
                                                                    client: TestClient) -> None:
    image, endo, epi = _expert_borders(site)

    def text(points: np.ndarray) -> bytes:
        return "".join(f"{x:.2f} {y:.2f}\n" for x, y in points).encode()

    response = _post(client, "sup_north", {"kind": "point_list", "reader": IMPROVING,
                                           "image_sop_instance_uid": str(image.SOPInstanceUID)},
                     {"endocardium": ("endo.txt", text(endo)), "epicardium": ("epi.txt", text(epi[::-1]))})
    assert response.status_code == 201, response.text[-600:]
    series_uid = re.search(r"series ([0-9.]+)</div>", response.text).group(1)
    (result,) = _score_series(site, series_uid)
    assert result.summary["reader"] == IMPROVING
    assert result.summary["slices"][0]["dice_myocardium"] > 0.85
    # Not a reader of the supervisor's teams.
    refused = _post(client, "sup_north", {"kind": "point_list", "reader": SHIFTED,
                                          "image_sop_instance_uid": str(image.SOPInstanceUID)},
                    {"endocardium": ("endo.txt", text(endo)), "epicardium": ("epi.txt", text(epi))})
    assert refused.status_code == 403 and "supervises" in refused.text


def test_seg_upload_is_scored_like_a_received_seg(site: TrainingSite, client: TestClient) -> None:
    trainee_seg = next(s for s in site.outcome.submissions if s.reader == IMPROVING)
    ds = pydicom.dcmread(trainee_seg.paths[0])
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = _post(client, "admin", {"kind": "seg"}, {"file": ("reader.dcm", buffer.getvalue())})
    assert response.status_code == 201, response.text[-600:]
    (result,) = _score_series(site, str(ds.SeriesInstanceUID))
    assert result.summary["slices"][0]["status"] == "scored"
    assert set(result.summary["outputs"]) >= {"sr", "sc"}  # the same comparison SR and overlay as by C-STORE


def test_map_and_rtstruct_of_a_new_study(site: TrainingSite, client: TestClient, tmp_path: Path) -> None:
    request = StudyRequest(seed=43, n_slices=1, matrix=(80, 96), pixel_spacing_mm=2.2, vendor=Vendor.SIEMENS,
                           sequence=SequenceChoice.MOLLI, motion_rate=0.0)
    outcome = generate_study(plan_study(request, 0), tmp_path / "phantom")
    import json

    sidecar = json.loads((outcome.folder / "mid" / "sidecar.json").read_text())
    maps = [outcome.folder / p for p in sidecar["sequences"][0]["series"]["map"]["paths"]]
    for path in maps:
        response = _post(client, "admin", {"kind": "dicom_map"}, {"file": (path.name, path.read_bytes())})
        assert response.status_code == 201, response.text[-600:]
    with site.session_factory() as session:
        roles = set(session.scalars(select(Series.role).where(
            Series.series_instance_uid == sidecar["sequences"][0]["series"]["map"]["series_instance_uid"])))
    assert roles == {SeriesRole.T1_MAP}
    experts = [r for r in sidecar["readers"] if r["role"] == "expert"]
    trainee = next(r for r in sidecar["readers"] if r["role"] == "trainee")
    for reader in [*experts, trainee]:
        for path in reader["rtstruct"]["paths"]:
            data = (outcome.folder / path).read_bytes()
            response = _post(client, "admin", {"kind": "rtstruct"}, {"file": (Path(path).name, data)})
            assert response.status_code == 201, response.text[-600:]
    (result,) = _score_series(site, trainee["rtstruct"]["series_instance_uid"])
    assert result.summary["slices"][0]["status"] == "scored"
    assert result.summary["slices"][0]["reference"] in ("staple", "expert_staple")


def _stored_count(site: TrainingSite) -> int:
    with site.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)))


@pytest.mark.parametrize(("data", "files", "status", "words"), [
    ({"kind": "seg"}, {"file": ("x.dcm", b"not dicom at all")}, 422, "is not a DICOM Part 10 file"),
    ({"kind": "seg"}, {"file": ("", b"")}, 400, "choose a file"),  # a browser's empty file field
    ({"kind": "seg"}, {}, 415, "multipart/form-data"),
    ({"kind": "seg"}, {"file": ("x.dcm", b"")}, 400, "is empty"),
    ({"kind": "tiff"}, {"file": ("x.tif", b"II*")}, 400, "unknown kind"),
    ({"kind": "idl_sav", "reader": IMPROVING, "image_sop_instance_uid": "1.2.3.4"}, {"file": ("c.sav", b"SR")}, 404,
     "holds no image with SOP Instance UID 1.2.3.4"),
    ({"kind": "point_list", "image_sop_instance_uid": "1.2.3"}, {"endocardium": ("e.txt", b"1 2\n")}, 400,
     "an endocardium and an epicardium"),
])
def test_bad_uploads_are_refused_with_the_reason_and_store_nothing(site: TrainingSite, client: TestClient,
                                                                   data: dict[str, str],
                                                                   files: dict[str, tuple[str, bytes]],
                                                                   status: int, words: str) -> None:
    before = _stored_count(site)
    response = _post(client, "admin", data, files)
    assert response.status_code == status, response.text[-600:]
    assert words in response.text and "Not stored." in response.text
    assert _stored_count(site) == before


def test_a_file_of_the_wrong_kind_and_a_bad_sav_are_refused(site: TrainingSite, client: TestClient) -> None:
    image, _, _ = _expert_borders(site)
    map_bytes = Path(site.outcome.cases[0].map_paths[0]).read_bytes()
    response = _post(client, "admin", {"kind": "rtstruct"}, {"file": ("map.dcm", map_bytes)})
    assert response.status_code == 422 and "is not an RT Structure Set" in response.text
    response = _post(client, "admin", {"kind": "idl_sav", "reader": IMPROVING,
                                       "image_sop_instance_uid": str(image.SOPInstanceUID)},
                     {"file": ("c.sav", b"garbage")})
    assert response.status_code == 422 and "is not a readable IDL SAVE file" in response.text


def test_oversized_uploads_are_refused_before_reading_them(client: TestClient) -> None:
    headers = {"authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode(),
               "content-type": "multipart/form-data; boundary=x",
               "content-length": str(3 * MAX_UPLOAD_BYTES)}
    response = client.post(UPLOAD, content=b"--x--\r\n", headers=headers)
    assert response.status_code == 413


def test_without_the_node_the_page_says_uploads_are_off(site: TrainingSite) -> None:
    plain = TestClient(create_app(site.settings, site.session_factory))
    response = _post(plain, "admin", {"kind": "seg"}, {"file": ("x.dcm", b"x")})
    assert response.status_code == 503 and "uploads are off" in response.text


def test_upload_copies_nothing_of_the_patient_into_the_log(site: TrainingSite, client: TestClient,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    trainee_seg = next(s for s in site.outcome.submissions if s.reader == IMPROVING)
    ds = copy.deepcopy(pydicom.dcmread(trainee_seg.paths[0]))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with caplog.at_level("DEBUG"):
        _post(client, "admin", {"kind": "seg"}, {"file": ("again.dcm", buffer.getvalue())})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert str(ds.PatientName) not in logged and str(ds.PatientID) not in logged


def _fresh_copy(path: Path, creator: str | None = None) -> bytes:
    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if creator is not None:
        ds.ContentCreatorName = creator
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_trainee_uploads_only_their_own_dicom_contours(site: TrainingSite, client: TestClient) -> None:
    own = next(s for s in site.outcome.submissions if s.reader == IMPROVING)
    response = _post(client, "trainee", {"kind": "seg"}, {"file": ("mine.dcm", _fresh_copy(own.paths[0]))})
    assert response.status_code == 201, response.text[-600:]
    before = _stored_count(site)
    other = _fresh_copy(own.paths[0], creator=SHIFTED)
    refused = _post(client, "trainee", {"kind": "seg"}, {"file": ("theirs.dcm", other)})
    assert refused.status_code == 403
    assert f"these contours are by {SHIFTED}: you may upload contours of only {IMPROVING}" in refused.text
    # A supervisor uploads their teams' readers' files, not another team's.
    refused = _post(client, "sup_north", {"kind": "seg"}, {"file": ("theirs.dcm", other)})
    assert refused.status_code == 403 and "only your teams&#39; readers" in refused.text
    assert _stored_count(site) == before
    team_file = _fresh_copy(own.paths[0], creator=PERSISTENT)
    assert _post(client, "sup_north", {"kind": "seg"}, {"file": ("team.dcm", team_file)}).status_code == 201
