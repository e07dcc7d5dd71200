"""The Encapsulated PDF a PACS receives: the trainee report in the training case's study, dciodvfy-clean, read back
byte for byte."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from reports.encapsulated_pdf import ENCAPSULATED_PDF_STORAGE, EncapsulatedPdf, document_bytes
from reports.pdf import trainee_pdf
from tests.programme_fixtures import improving
from tests.report_builders import DCIODVFY

MADE = datetime(2026, 12, 5, 18, 30, 5, 250000)


def _case() -> Dataset:
    """The training case's map image, as far as the report copies it: patient and study."""
    source = Dataset()
    source.PatientID = "PHANTOM-0001"
    source.PatientName = "Phantom^Case1"
    source.PatientBirthDate = "19700101"
    source.PatientSex = "F"
    source.StudyInstanceUID = "2.25.339120775925466710541532716305766612354"
    source.StudyDate = "20261102"
    source.StudyTime = "090000"
    source.StudyID = "1"
    source.AccessionNumber = "A1"
    source.ReferringPhysicianName = ""
    source.StudyDescription = "Cardiac^Mapping"
    return source


def _build(pdf: bytes, **changes: object) -> EncapsulatedPdf:
    arguments: dict = {"series_instance_uid": "2.25.1001", "sop_instance_uid": "2.25.1002", "series_number": 9800,
                       "instance_number": 1, "document_title": "Trainee progress report: trainee_improving",
                       "series_description": "myomap trainee report", "content_datetime": MADE}
    return EncapsulatedPdf(pdf, _case(), **(arguments | changes))


@pytest.mark.parametrize("pad", [False, True], ids=["even", "odd"])
def test_the_trainee_report_passes_dciodvfy_and_reads_back_byte_for_byte(tmp_path: Path, pad: bool) -> None:
    pdf = trainee_pdf(improving(tmp_path), node_version="0.1.0", generated_at=MADE, storage_root=tmp_path)
    if (len(pdf) % 2 == 1) != pad:  # one case of each parity: an odd document is padded with a NUL
        pdf += b"\n"
    path = tmp_path / "report.dcm"
    _build(pdf).save_as(path, enforce_file_format=True)
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
    assert problems == []
    back = pydicom.dcmread(path)
    assert back.SOPClassUID == ENCAPSULATED_PDF_STORAGE and back.Modality == "DOC"
    assert back.PatientID == "PHANTOM-0001" and back.StudyInstanceUID == _case().StudyInstanceUID
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf" and back.BurnedInAnnotation == "NO"
    assert len(back.EncapsulatedDocument) % 2 == 0
    assert document_bytes(back) == pdf and back.EncapsulatedDocumentLength == len(pdf)
    assert back.ContentDate == "20261205" and back.ContentTime == "183005"


def test_bad_documents_and_labels_are_refused() -> None:
    with pytest.raises(TypeError, match="pdf must be bytes"):
        _build("%PDF-1.7")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pdf must start with"):
        _build(b"<html>")
    with pytest.raises(ValueError, match="series_description"):
        _build(b"%PDF-1.7\n", series_description="x" * 65)
    with pytest.raises(ValueError, match="document_title"):
        _build(b"%PDF-1.7\n", document_title="")
    with pytest.raises(ValueError, match="not an Encapsulated PDF"):
        document_bytes(_case())
