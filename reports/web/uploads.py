"""What the upload page hands to the node: files of a reader without PACS access, and what the node answers.

The web layer never imports ``dicomnode`` (tests/unit/test_architecture.py): storing and scoring belong to the
node. So the page only checks the form and passes a :class:`ContourUpload` to an :data:`UploadSink` that the node
wires into :func:`reports.web.create_app` at start-up (``accept_upload``), the same way it passes its delivery
queue. The node's sink stores the file through the same validated, durable path a C-STORE takes and notes it for
assembly, so an uploaded contour is scored with the same outputs as one sent by a PACS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

#: The largest file the page accepts (a single-slice SEG, RTSTRUCT or map is far smaller; a guard, not a limit
#: any real upload reaches).
MAX_UPLOAD_BYTES = 32 * 1024 * 1024


class UploadKind(str, Enum):
    """What a reader uploads."""

    SEG = "seg"  # DICOM Segmentation
    RTSTRUCT = "rtstruct"  # DICOM RT Structure Set
    DICOM_MAP = "dicom_map"  # a T1/T2 map image the contours are drawn on
    IDL_SAV = "idl_sav"  # IDL SAVE file of the IDL-based T1 tools (pixel contours of one image)
    POINT_LIST = "point_list"  # "x y" pixel points of one image: endocardium and epicardium files


#: Kinds that are not DICOM: the node converts them to a DICOM-SEG on the image they were drawn on.
NEEDS_IMAGE = frozenset({UploadKind.IDL_SAV, UploadKind.POINT_LIST})

KIND_LABELS: dict[UploadKind, str] = {
    UploadKind.SEG: "DICOM Segmentation (SEG)",
    UploadKind.RTSTRUCT: "DICOM RT Structure Set (RTSTRUCT)",
    UploadKind.DICOM_MAP: "DICOM map image (T1 or T2 map)",
    UploadKind.IDL_SAV: "IDL SAVE contour file (.sav)",
    UploadKind.POINT_LIST: "Point lists (endocardium and epicardium, one \"x y\" pair per line)",
}


@dataclass(frozen=True)
class UploadedFile:
    """One file of an upload; ``border`` names the contour a point list holds ("endocardium", "epicardium")."""

    filename: str
    data: bytes
    border: str = ""


@dataclass(frozen=True)
class ContourUpload:
    """A checked upload: its kind, its files, who uploaded it and, for files that are not DICOM, the reader and
    the SOP Instance UID of the stored map image the contours were drawn on; for DICOM contours, whose contours
    the uploader may send."""

    kind: UploadKind
    files: tuple[UploadedFile, ...]
    uploaded_by: str
    reader: str = ""
    image_sop_instance_uid: str = ""
    #: The readers whose DICOM contours the uploader may send (a trainee: themselves; a supervisor: their teams');
    #: the reader a SEG or RTSTRUCT names (through the aliases) must be one of them. None: anyone's (an admin).
    allowed_readers: frozenset[str] | None = None


@dataclass(frozen=True)
class UploadReceipt:
    """What the node stored: the instance, its series and study, and a sentence for the page."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    message: str


class UploadRejectedError(ValueError):
    """The node refused an upload (not DICOM, wrong kind, unknown image, unreadable contours); the message says
    why and the page answers 4xx with it. Nothing was stored."""

    def __init__(self, message: str, *, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


#: The node's upload service: stores the upload or raises :class:`UploadRejectedError`.
UploadSink = Callable[[ContourUpload], UploadReceipt]
