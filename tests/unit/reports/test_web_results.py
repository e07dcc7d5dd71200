"""Results on the series page, the result JSON, Secondary Captures as PNG and downloads, on real DICOM files.

The database and storage folder are built here (:func:`build_results_node`); the browser test reuses them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi import Header, HTTPException
from fastapi.params import Depends
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.models import Base, Job, JobState, Result, Series, SeriesRole, SeriesState, Study, Transfer, TransferState
from db.session import make_engine, make_session_factory
from reports.web import create_app
from reports.web.users import add_user
from tests.unit.reports.web_forms import post_form

STUDY_UID = "1.2.826.0.1.3680043.8.498.300"
RAW_SERIES_UID = "1.2.826.0.1.3680043.8.498.301"
SC_SERIES_UID = "1.2.826.0.1.3680043.8.498.302"
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-7"
SERIES_BANNER = "Motion artefact in segments 1, 4 - consider repeating the breath-hold"
SLICE_BANNER = "Basal T1 1180 ms; motion in segments 1, 4"
FAILED_REASON = "no myocardium found in the map"
#: The colour painted into the first Secondary Capture, found again in the PNG and in the browser screenshot.
MARKER_RGB = (255, 0, 255)
SC_SHAPE = (96, 128)  # rows, columns
#: The web user every node built here has (user name, password): the pages need a login.
WEB_USER = ("reader1", "correct horse battery staple")


def add_web_user(session_factory: sessionmaker[Session], user: tuple[str, str] = WEB_USER) -> tuple[str, str]:
    """Add a web user to the node's database; (name, password), as httpx takes it for HTTP Basic (``auth=``)."""
    with session_factory() as session:
        add_user(session, *user)
        session.commit()
    return user


def logged_in(client: TestClient, user: tuple[str, str] = WEB_USER) -> TestClient:
    """``client`` sending the user's HTTP Basic credentials with every request."""
    client.auth = user
    return client


@dataclass(frozen=True)
class ResultsNode:
    """A node database with one analysed T1 result whose files are real DICOM objects under ``storage``."""

    settings: Settings
    session_factory: sessionmaker[Session]
    storage: Path
    result_id: int
    transfer_ids: dict[TransferState, int]
    sc_pixels: list[np.ndarray]  # what each entry of outputs.sc holds
    paths: list[str]  # Result.paths


def _uid(*parts: int) -> str:
    return ".".join(["1.2.826.0.1.3680043.8.498.399", *map(str, parts)])


def secondary_capture(pixels: np.ndarray, number: int) -> pydicom.Dataset:
    """A Secondary Capture of ``pixels``: RGB when (rows, columns, 3) uint8, else MONOCHROME2 uint16."""
    rgb = pixels.ndim == 3
    return hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB" if rgb else "MONOCHROME2",
        bits_allocated=8 if rgb else 16,
        coordinate_system="PATIENT",
        study_instance_uid=STUDY_UID,
        series_instance_uid=SC_SERIES_UID,
        series_number=9100,
        sop_instance_uid=_uid(number),
        instance_number=number,
        manufacturer="myomap",
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
        patient_orientation=("L", "P"),
    )


def _sc_pixels(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, columns = SC_SHAPE
    first = rng.integers(0, 60, size=(rows, columns, 3), dtype=np.uint8)  # dark, noisy, with a marker square
    first[20:70, 30:90] = MARKER_RGB
    second = np.zeros((rows, columns, 3), dtype=np.uint8)
    second[..., 1] = np.linspace(0, 255, columns, dtype=np.uint8)[None, :]  # a green ramp
    grey = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) * 3 + 100).astype(np.uint16)
    return [first, second, grey]


def _analysis() -> dict:
    segments = {
        str(number): {
            "mean_ms": 1150.0 + number,
            "median_ms": 1149.0 + number,
            "sd_ms": 40.0 + number / 10,
            "area_mm2": 150.0 + number,
            "wall_thickness_mm": 6.0 + number / 10,
            "motion_probability": 0.93 if number in (1, 4) else 0.05,
        }
        for number in range(1, 7)
    }
    return {
        "algorithm": {"name": "myomap", "version": "0.1.0", "models": {"segmentation": "1.0", "motion": "1.2"}},
        "banner": SERIES_BANNER,
        "slices": [
            {
                "index": 0,
                "status": "analysed",
                "reason": None,
                "banner": SLICE_BANNER,
                "map_kind": "T1",
                "level": "basal",
                "myocardium": {"mean_ms": 1180.2, "median_ms": 1176.4, "sd_ms": 51.3, "area_mm2": 1021.7,
                               "wall_thickness_mm": 7.4},
                "segments": segments,
                "motion": {"whole_image_probability": 0.8, "segments_with_motion": [1, 4], "has_motion": True},
                "quality": {"predicted_dice": 0.91, "doubtful": False},
            },
            {"index": 1, "status": "failed", "reason": FAILED_REASON, "banner": "Slice 2 not analysed"},
        ],
    }


def build_results_node(folder: Path, *, seed: int = 4711) -> ResultsNode:
    """Write the Secondary Captures and a map file under ``folder/storage`` and the rows into a SQLite database."""
    storage = folder / "storage"
    output_folder = Path("outputs") / STUDY_UID / SC_SERIES_UID
    (storage / output_folder).mkdir(parents=True)
    pixels = _sc_pixels(seed)
    sc_paths = []
    for number, array in enumerate(pixels, start=1):
        relative = output_folder / f"{_uid(number)}.dcm"
        secondary_capture(array, number).save_as(storage / relative, enforce_file_format=True)
        sc_paths.append(str(relative))
    map_path = output_folder / f"{_uid(9)}.dcm"  # stands in for an MR map: any DICOM object downloads alike
    secondary_capture(pixels[2], 9).save_as(storage / map_path, enforce_file_format=True)
    # Beside the storage folder: a result listing it must still not serve it.
    secondary_capture(pixels[0], 10).save_as(folder / "outside.dcm", enforce_file_format=True)
    unlisted = output_folder / f"{_uid(11)}.dcm"
    secondary_capture(pixels[1], 11).save_as(storage / unlisted, enforce_file_format=True)
    paths = [str(map_path), *sc_paths, "../outside.dcm"]
    summary = {
        "kind": "T1", "method": "MOLLI 5(3)3, Bloch-corrected", "scheme": "molli", "slices": 2, "valid_pixels": 9000,
        "valid_fraction_of_fitted": 0.97, "median_ms": 1176.0,
        "analysis": _analysis(),
        "outputs": {"maps": [str(map_path)], "sr": [], "seg": [], "sc": [*sc_paths, str(unlisted)]},
    }

    engine = make_engine(f"sqlite:///{folder / 'node.db'}")
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    settings = Settings(
        storage={"path": storage, "min_free_mb": 1},
        dicom={"acse_timeout_s": 2.0, "dimse_timeout_s": 2.0, "network_timeout_s": 2.0},
        scu={"max_attempts": 3, "backoff_initial_s": 1.0, "backoff_max_s": 5.0},
    )
    add_web_user(factory)
    with factory() as session:
        study = Study(study_instance_uid=STUDY_UID, patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
                      study_date="20240315", study_description="CMR mapping")
        series = Series(study=study, series_instance_uid=RAW_SERIES_UID, series_number=7, modality="MR",
                        description="MOLLI_5(3)3 basal", role=SeriesRole.RAW_IR, state=SeriesState.DONE,
                        n_instances=8, calling_ae="SCANNER", calling_host="127.0.0.1")
        job = Job(key=f"{RAW_SERIES_UID}/0/t1_map", kind="t1_map", series=series, state=JobState.DONE, attempts=1)
        result = Result(job=job, kind="t1_map", output_series_uid=SC_SERIES_UID, paths=paths, summary=summary)
        transfers = {
            TransferState.SENT: Transfer(result=result, path=sc_paths[0], sop_instance_uid=_uid(1), ae_title="PACS",
                                         host="127.0.0.1", port=1, state=TransferState.SENT, attempts=1),
            TransferState.GIVEN_UP: Transfer(result=result, path=sc_paths[1], sop_instance_uid=_uid(2),
                                             ae_title="CONSOLE", host="127.0.0.1", port=1,
                                             state=TransferState.GIVEN_UP, attempts=3,
                                             last_error="CONSOLE@127.0.0.1 could not be reached"),
        }
        session.add_all([study, series, job, result, *transfers.values()])
        session.commit()
        ids = {state: transfer.id for state, transfer in transfers.items()}
        result_id = result.id
    return ResultsNode(settings=settings, session_factory=factory, storage=storage, result_id=result_id,
                       transfer_ids=ids, sc_pixels=pixels, paths=paths)


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[ResultsNode]:
    built = build_results_node(tmp_path)
    yield built
    built.session_factory.kw["bind"].dispose()


@pytest.fixture()
def queued() -> list[int]:
    return []


@pytest.fixture()
def client(node: ResultsNode, queued: list[int]) -> TestClient:
    return logged_in(TestClient(create_app(node.settings, node.session_factory, enqueue_delivery=queued.append)))


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_series_page_shows_images_measurements_verdicts_transfers_and_downloads(
    client: TestClient, node: ResultsNode
) -> None:
    response = client.get(f"/series/{RAW_SERIES_UID}")
    assert response.status_code == 200
    page = response.text
    result_id = node.result_id
    assert f'id="result-{result_id}"' in page
    # Verdicts: the series banner flagged, the slice's motion and contour quality, the failed slice's reason.
    assert f'<p class="banner banner-series banner-warn">{SERIES_BANNER}</p>' in page
    assert SLICE_BANNER in page and "motion found" in page and "segments 1, 4" in page
    assert "whole-image probability 0.80" in page
    assert "predicted Dice 0.91" in page and "acceptable" in page and "doubtful: check the contours" not in page
    assert FAILED_REASON in page and "Slice 2" in page
    assert "myomap 0.1.0" in page and "segmentation 1.0" in page
    # Measurements: myocardium and every segment, named.
    for value in ("1180.2", "1176.4", "51.3", "1021.7", "7.4", "1 basal anterior", "6 basal anterolateral",
                  "1151.0", "0.93", "0.05"):
        assert value in page, value
    # Images: the three listed SCs, not the one missing from Result.paths.
    for n in range(3):
        assert f'<img src="/results/{result_id}/images/{n}.png"' in page
    assert f"/results/{result_id}/images/3.png" not in page
    # Downloads of every file; a retry button only for the undelivered transfer.
    for n in range(len(node.paths)):
        assert f'href="/results/{result_id}/files/{n}"' in page
    given_up, sent = node.transfer_ids[TransferState.GIVEN_UP], node.transfer_ids[TransferState.SENT]
    assert f'action="/results/{result_id}/transfers/{given_up}/retry"' in page
    assert f'action="/results/{result_id}/transfers/{sent}/retry"' not in page
    assert "CONSOLE@127.0.0.1" in page and "given_up" in page and "could not be reached" in page


def test_result_json_reads_the_analysis(client: TestClient, node: ResultsNode) -> None:
    response = client.get(f"/api/results/{node.result_id}")
    assert response.status_code == 200
    result = response.json()
    assert result["series_instance_uid"] == RAW_SERIES_UID and result["study_instance_uid"] == STUDY_UID
    assert result["attention"] is True
    assert result["figures"] == {"kind": "T1", "method": "MOLLI 5(3)3, Bloch-corrected", "scheme": "molli",
                                 "slices": 2, "valid_pixels": 9000, "valid_fraction_of_fitted": 0.97,
                                 "median_ms": 1176.0}
    analysed, failed = result["analysis"]["slices"]
    assert analysed["segments"]["4"]["motion_probability"] == 0.93
    # A result stored before the QC gave its parts and doubts reads with them empty.
    assert analysed["quality"] == {"predicted_dice": 0.91, "doubtful": False, "autoencoder_dice": None,
                                   "augmentation_agreement": None, "doubts": []}
    assert failed == {"index": 1, "status": "failed", "reason": FAILED_REASON, "banner": "Slice 2 not analysed",
                      "map_kind": None, "level": None, "myocardium": None, "segments": {}, "motion": None,
                      "quality": None, "map_source": None, "value_region": None, "cross_check": None,
                      "second_measurement": None, "notes": []}
    assert [f["kind"] for f in result["files"]] == ["maps", "sc", "sc", "sc", "other"]
    assert [image["index"] for image in result["images"]] == [0, 1, 2]
    assert sorted(t["state"] for t in result["transfers"]) == ["given_up", "sent"]
    assert client.get("/api/results/999").status_code == 404
    assert "no result with id 999" in client.get("/api/results/999").json()["detail"]


@pytest.mark.parametrize("n", [0, 1])
def test_colour_secondary_capture_as_png_has_the_stored_pixels(client: TestClient, node: ResultsNode, n: int) -> None:
    png = _png(client.get(f"/results/{node.result_id}/images/{n}.png"))
    assert png.shape == (*SC_SHAPE, 3)
    np.testing.assert_array_equal(png, node.sc_pixels[n])


def test_greyscale_secondary_capture_is_stretched_to_8_bits(client: TestClient, node: ResultsNode) -> None:
    png = _png(client.get(f"/results/{node.result_id}/images/2.png"))
    assert png.shape == SC_SHAPE and png.dtype == np.uint8
    assert png.min() == 0 and png.max() == 255
    stored = node.sc_pixels[2].astype(float)
    expected = np.round((stored - stored.min()) * 255 / (stored.max() - stored.min()))
    np.testing.assert_array_equal(png, expected.astype(np.uint8))


def test_download_serves_the_stored_dicom_file_with_its_name(client: TestClient, node: ResultsNode) -> None:
    for n, relative in enumerate(node.paths[:4]):
        response = client.get(f"/results/{node.result_id}/files/{n}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/dicom"
        name = Path(relative).name
        assert f'filename="{name}"' in response.headers["content-disposition"]
        assert response.content == (node.storage / relative).read_bytes()
        assert pydicom.dcmread(io.BytesIO(response.content)).SOPInstanceUID == name.removesuffix(".dcm")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/results/999/files/0", "no result with id 999"),
        ("/results/999/images/0.png", "no result with id 999"),
        ("/results/{id}/files/5", "has 5 files, no file 5"),
        ("/results/{id}/images/4.png", "has 4 images, no image 4"),
        # Listed in outputs.sc but not in Result.paths: never served.
        ("/results/{id}/images/3.png", "has no file outputs/"),
        # Listed in Result.paths but outside the storage folder.
        ("/results/{id}/files/4", "lies outside the storage folder"),
    ],
)
def test_unknown_or_unlisted_files_are_404_with_a_message(
    client: TestClient, node: ResultsNode, url: str, message: str
) -> None:
    response = client.get(url.format(id=node.result_id))
    assert response.status_code == 404
    assert message in response.json()["detail"]


def test_request_paths_never_reach_the_file_system(client: TestClient, node: ResultsNode) -> None:
    for url in (f"/results/{node.result_id}/files/..%2F..%2Fnode.db", f"/results/{node.result_id}/files/-1",
                f"/results/{node.result_id}/images/x.png", "/results/0/files/0"):
        response = client.get(url)
        assert response.status_code in (404, 422), url
        assert response.headers["content-type"] == "application/json", url


def test_a_file_gone_from_disk_is_404(client: TestClient, node: ResultsNode) -> None:
    (node.storage / node.paths[1]).unlink()
    for url in (f"/results/{node.result_id}/files/1", f"/results/{node.result_id}/images/0.png"):
        response = client.get(url)
        assert response.status_code == 404 and "is no longer on disk" in response.json()["detail"]
    assert client.get(f"/series/{RAW_SERIES_UID}").status_code == 200


def test_an_undecodable_image_is_a_server_error_with_a_message(client: TestClient, node: ResultsNode) -> None:
    (node.storage / node.paths[1]).write_bytes(b"not DICOM")
    response = client.get(f"/results/{node.result_id}/images/0.png")
    assert response.status_code == 500 and "is not a decodable DICOM image" in response.json()["detail"]


def test_retry_from_the_series_page_returns_to_the_result(
    client: TestClient, node: ResultsNode, queued: list[int]
) -> None:
    transfer_id = node.transfer_ids[TransferState.GIVEN_UP]
    response = post_form(client, f"/results/{node.result_id}/transfers/{transfer_id}/retry", {})
    assert response.status_code == 303
    assert response.headers["location"] == f"/series/{RAW_SERIES_UID}#result-{node.result_id}"
    assert queued == [transfer_id]
    with node.session_factory() as session:
        assert session.get(Transfer, transfer_id).state is TransferState.PENDING
    sent = post_form(client, f"/results/{node.result_id}/transfers/{node.transfer_ids[TransferState.SENT]}/retry", {})
    assert sent.status_code == 409 and "already sent" in sent.text
    other = post_form(client, f"/results/{node.result_id + 1}/transfers/{transfer_id}/retry", {})
    assert other.status_code == 404 and f"has no transfer with id {transfer_id}" in other.text
    assert queued == [transfer_id]


def test_an_unreadable_analysis_leaves_the_page_and_files_working(
    client: TestClient, node: ResultsNode, caplog: pytest.LogCaptureFixture
) -> None:
    with node.session_factory() as session:
        result = session.get(Result, node.result_id)
        result.summary = {**result.summary, "analysis": {"slices": [{"index": 0, "status": "lost"}]}}
        session.commit()
    with caplog.at_level(logging.WARNING):
        page = client.get(f"/series/{RAW_SERIES_UID}")
    assert page.status_code == 200 and SERIES_BANNER not in page.text
    assert f"/results/{node.result_id}/images/0.png" in page.text and "1,176" in page.text
    assert f"result {node.result_id}: summary not readable" in caplog.text
    assert client.get(f"/api/results/{node.result_id}").json()["analysis"] is None


def test_access_dependencies_guard_the_result_routes(node: ResultsNode) -> None:
    def require_token(x_token: str | None = Header(default=None)) -> None:
        if x_token != "let-me-in":
            raise HTTPException(401, detail="login required")

    client = logged_in(TestClient(
        create_app(node.settings, node.session_factory, access_dependencies=[Depends(require_token)])
    ))
    urls = (f"/api/results/{node.result_id}", f"/results/{node.result_id}/images/0.png",
            f"/results/{node.result_id}/files/0")
    for url in urls:
        assert client.get(url).status_code == 401, url
        assert client.get(url, headers={"X-Token": "let-me-in"}).status_code == 200, url
    retry = f"/results/{node.result_id}/transfers/{node.transfer_ids[TransferState.GIVEN_UP]}/retry"
    assert client.post(retry).status_code == 401
    client.auth = None  # the token alone is not enough: the login is checked too
    assert client.get(urls[0], headers={"X-Token": "let-me-in"}).status_code == 401
    assert client.post(retry, headers={"X-Token": "let-me-in"}).status_code == 401


def test_openapi_lists_the_result_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/results/{result_id}", "/results/{result_id}/images/{n}.png", "/results/{result_id}/files/{n}"):
        assert path in paths
    assert "/results/{result_id}/transfers/{transfer_id}/retry" not in paths


def test_patient_data_is_not_logged(client: TestClient, node: ResultsNode, caplog: pytest.LogCaptureFixture) -> None:
    (node.storage / node.paths[1]).write_bytes(b"not DICOM")  # an error path that logs
    with caplog.at_level(logging.DEBUG):
        client.get(f"/series/{RAW_SERIES_UID}")
        client.get(f"/results/{node.result_id}/images/0.png")
        client.get(f"/results/{node.result_id}/files/0")
    assert caplog.records
    assert "Doe" not in caplog.text and PATIENT_ID not in caplog.text
