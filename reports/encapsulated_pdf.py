"""A PDF report as an Encapsulated PDF object (PS3.3 A.45.1) in the source's study, new series, for a PACS.

Modules: Patient, General Study and Patient Study from the source (the training case the reader contoured);
Encapsulated Document Series (modality DOC); General and SC Equipment (the node, conversion type WSD: made by a
workstation); Encapsulated Document (the PDF, its MIME type, title and length); SOP Common. The report names
readers, never the patient, so Burned In Annotation is NO.
"""

from __future__ import annotations

import logging
from datetime import datetime

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from reports.map_mr import SOFTWARE_VERSION

LOGGER = logging.getLogger(__name__)

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
PDF_MIME_TYPE = "application/pdf"
#: DICOM's limits: Document Title (ST) and Series Description (LO).
MAX_TITLE_CHARS = 1024
MAX_DESCRIPTION_CHARS = 64
_PDF_MAGIC = b"%PDF-"


class EncapsulatedPdf(hd.base.SOPClass):
    """An Encapsulated PDF Storage instance holding ``pdf``, for the patient and in the study of ``source``.

    Parameters
    ----------
    pdf
        The document's bytes (must start with ``%PDF-``).
    source
        Any instance of the study the report belongs to: patient and study data are copied from it.
    series_instance_uid, sop_instance_uid, series_number, instance_number
        Identification of the new series and instance.
    document_title
        What the document is ("Trainee progress report: trainee_a").
    series_description
        The series' line on a PACS series list.
    content_datetime
        When the document was made.

    Raises
    ------
    TypeError
        If ``pdf`` is not bytes.
    ValueError
        If ``pdf`` is not a PDF, or the title or description is empty or longer than DICOM allows.
    """

    def __init__(self, pdf: bytes, source: Dataset, *, series_instance_uid: str, sop_instance_uid: str,
                 series_number: int, instance_number: int, document_title: str, series_description: str,
                 content_datetime: datetime) -> None:
        if not isinstance(pdf, bytes | bytearray):
            raise TypeError(f"pdf must be bytes, got {type(pdf).__name__}")
        if not bytes(pdf).startswith(_PDF_MAGIC):
            raise ValueError(f"pdf must start with {_PDF_MAGIC!r}, got {bytes(pdf[:8])!r}")
        if not document_title or len(document_title) > MAX_TITLE_CHARS:
            raise ValueError(f"document_title must have 1 to {MAX_TITLE_CHARS} characters, got {document_title!r}")
        if not series_description or len(series_description) > MAX_DESCRIPTION_CHARS:
            raise ValueError(f"series_description must have 1 to {MAX_DESCRIPTION_CHARS} characters, "
                             f"got {series_description!r}")
        super().__init__(
            study_instance_uid=source.StudyInstanceUID,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=ENCAPSULATED_PDF_STORAGE,
            instance_number=instance_number,
            modality="DOC",
            manufacturer="myomap",
            manufacturer_model_name="myomap training report",
            software_versions=SOFTWARE_VERSION,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            patient_id=source.get("PatientID"),
            patient_name=source.get("PatientName"),
            patient_birth_date=source.get("PatientBirthDate"),
            patient_sex=source.get("PatientSex") or None,
            accession_number=source.get("AccessionNumber"),
            study_id=source.get("StudyID"),
            study_date=source.get("StudyDate"),
            study_time=source.get("StudyTime"),
            referring_physician_name=source.get("ReferringPhysicianName"),
            series_description=series_description,
            content_date=content_datetime.date(),
            content_time=content_datetime.time().replace(microsecond=0),
        )
        if "StudyDescription" in source:
            self.StudyDescription = source.StudyDescription
        self.ConversionType = "WSD"  # made by a workstation, not digitised
        self.BurnedInAnnotation = "NO"  # names readers, not the patient
        self.RecognizableVisualFeatures = "NO"
        self.DocumentTitle = document_title
        self.ConceptNameCodeSequence = DicomSequence()  # type 2: no code names a training report
        self.AcquisitionDateTime = None  # type 2: nothing was acquired
        self.MIMETypeOfEncapsulatedDocument = PDF_MIME_TYPE
        document = bytes(pdf)
        self.EncapsulatedDocumentLength = len(document)
        # OB values have even length: an odd document gets one trailing NUL, which the length above excludes.
        self.EncapsulatedDocument = document + b"\x00" * (len(document) % 2)
        LOGGER.debug("encapsulated PDF %s: %d bytes", sop_instance_uid, len(document))


def document_bytes(dataset: Dataset) -> bytes:
    """The PDF held by an Encapsulated PDF instance, without the padding byte.

    Raises
    ------
    ValueError
        If ``dataset`` is not an Encapsulated PDF.
    """
    if str(dataset.get("SOPClassUID", "")) != ENCAPSULATED_PDF_STORAGE:
        raise ValueError(f"not an Encapsulated PDF: SOP class {dataset.get('SOPClassUID', 'missing')}")
    document = bytes(dataset.EncapsulatedDocument)
    length = dataset.get("EncapsulatedDocumentLength")
    return document[:int(length)] if length is not None else document.rstrip(b"\x00")


__all__ = ["ENCAPSULATED_PDF_STORAGE", "PDF_MIME_TYPE", "EncapsulatedPdf", "document_bytes"]
