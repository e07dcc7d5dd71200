"""The trainee's progress report after a scored attempt: an Encapsulated PDF in the case's study, routed to the
peers that receive ``pdf``; none for an expert, none when no peer asks for it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from config import load_settings
from db import migrate
from db.models import Transfer
from db.session import make_engine, make_session_factory
from dicomnode.jobs.map_job import JobOutcome
from reports.encapsulated_pdf import ENCAPSULATED_PDF_STORAGE, document_bytes
from tests.report_builders import dciodvfy_errors
from tests.unit.dicomnode.jobs import test_reader_job as reader_job_tests
from tests.unit.dicomnode.jobs.test_reader_job import Node, PhantomStudy, _all_contours

phantom = reader_job_tests.phantom
node = reader_job_tests.node
ARCHIVE_AE = "ARCHIVE"


@pytest.fixture
def pdf_node(tmp_path: Path) -> Iterator[Node]:
    """A node whose archive asks for the trainees' reports (and the comparison SRs)."""
    settings = load_settings(
        storage={"path": tmp_path / "pdf-node", "min_free_mb": 1},
        peers=[{"ae_title": ARCHIVE_AE, "host": "127.0.0.1", "port": 11198, "receives": ["sr", "pdf"]}],
    )
    settings.storage_root.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    yield Node(settings, make_session_factory(engine))
    engine.dispose()


def _pdf_transfers(node: Node, job_id: int) -> list[Transfer]:
    result = node.result(job_id)
    with node.factory() as session:
        transfers = session.scalars(select(Transfer).where(Transfer.result_id == result.id)).all()
        return [t for t in transfers
                if pydicom.dcmread(node.settings.storage_root / t.path, stop_before_pixels=True).SOPClassUID
                == ENCAPSULATED_PDF_STORAGE]


def test_a_trainees_scored_attempt_sends_their_report_as_encapsulated_pdf(phantom: PhantomStudy, pdf_node: Node,
                                                                          tmp_path: Path) -> None:
    pdf_node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",))])
    job_id = pdf_node.job_for(phantom.contour_series_uid("trainee3", "seg"))
    deliveries: list[int] = []
    assert pdf_node.run(job_id, deliveries) is JobOutcome.DONE
    (transfer,) = _pdf_transfers(pdf_node, job_id)
    assert transfer.ae_title == ARCHIVE_AE and transfer.id in deliveries
    document = pydicom.dcmread(pdf_node.settings.storage_root / transfer.path)
    source = pydicom.dcmread(phantom.map_files()[0])
    assert document.StudyInstanceUID == source.StudyInstanceUID and document.PatientID == source.PatientID
    assert document.DocumentTitle == "Trainee progress report: trainee3"
    assert dciodvfy_errors(document, tmp_path / "report.dcm") == []
    pdf_path = tmp_path / "report.pdf"
    pdf_path.write_bytes(document_bytes(document))
    text = " ".join(subprocess.run(["pdftotext", str(pdf_path), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())
    dice = pdf_node.result(job_id).summary["slices"][0]["dice_myocardium"]
    assert "Trainee progress report" in text and "trainee3" in text and f"{dice:.3f}" in text


def test_no_report_for_an_expert_nor_without_a_peer_asking_for_pdf(phantom: PhantomStudy, pdf_node: Node,
                                                                   node: Node) -> None:
    pdf_node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",))])
    expert_job = pdf_node.job_for(phantom.contour_series_uid("expert1", "seg"))
    assert pdf_node.run(expert_job) is JobOutcome.DONE
    assert _pdf_transfers(pdf_node, expert_job) == []

    node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",))])
    trainee_job = node.job_for(phantom.contour_series_uid("trainee3", "seg"))
    assert node.run(trainee_job) is JobOutcome.DONE
    assert _pdf_transfers(node, trainee_job) == []
    assert not list(node.settings.storage_root.rglob("*.pdf"))
    pdfs = [path for path in node.settings.storage_root.rglob("*.dcm")
            if pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID == ENCAPSULATED_PDF_STORAGE]
    assert pdfs == []
