"""The node's side of the web page's upload: store an uploaded contour or map as if it had arrived by C-STORE.

:class:`NodeUploads` is the :data:`reports.web.uploads.UploadSink` that :mod:`dicomnode.app.server` wires into the
web app at start-up (the web layer may not import the node). DICOM files (SEG, RTSTRUCT, maps) go through
:func:`dicomnode.store.storage.store_instance`, the validated durable path of the Storage SCP, and are noted for
assembly like a received instance, so the reader job scores them with the same SR and overlay. IDL SAVE files and
point lists carry pixel contours of one image and no DICOM identity: they are placed on the stored map image the
uploader names, turned into a reader's DICOM-SEG (:func:`reports.seg_reader.build_reader_segmentation`) and stored
the same way.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db.models import Instance
from db.readers import ReaderNames, normalised
from dicomnode.errors import StorageFullError, StoreRejectedError
from dicomnode.io.contours import (
    ContourFormatError,
    ContourSet,
    ImageGeometry,
    Structure,
    UnknownReaderError,
    contour_set_from_point_lists,
    parse_point_list,
    read_idl_sav,
    reader_name,
)
from dicomnode.sop_classes import RT_STRUCTURE_SET, SEGMENTATION_SOP_CLASSES
from dicomnode.store.assembly import Assembler
from dicomnode.store.storage import store_instance
from reports.seg_reader import build_reader_segmentation
from reports.uids import name_based_uid
from reports.web.uploads import ContourUpload, UploadKind, UploadReceipt, UploadRejectedError

LOGGER = logging.getLogger(__name__)

#: The calling AE title recorded for uploads (the reader's identity falls back on it when a file names nobody).
UPLOAD_AE_TITLE = "WEBUPLOAD"
#: Series number of the SEGs made from uploaded IDL SAVE files and point lists.
UPLOAD_SERIES_NUMBER = 9100
POINT_LIST_BORDERS = {"endocardium": Structure.CAVITY.value, "epicardium": Structure.EPICARDIUM.value}


@dataclass
class NodeUploads:
    """Stores uploads into the node (see the module docstring); ``assembler`` None stores without noting."""

    settings: Settings
    session_factory: sessionmaker[Session]
    assembler: Assembler | None
    software_version: str

    def __call__(self, upload: ContourUpload) -> UploadReceipt:
        """Store one upload.

        Raises
        ------
        UploadRejectedError
            With a 4xx status and the reason; nothing is stored.
        """
        if upload.kind in (UploadKind.SEG, UploadKind.RTSTRUCT, UploadKind.DICOM_MAP):
            if len(upload.files) != 1:
                raise UploadRejectedError(f"a {upload.kind.value} upload is one file, got {len(upload.files)}")
            data = upload.files[0].data
            header = _dicom_header(data, upload.files[0].filename)
            _check_kind(header, upload.kind, upload.files[0].filename)
            if upload.allowed_readers is not None and upload.kind is not UploadKind.DICOM_MAP:
                self._check_reader_allowed(header, upload.allowed_readers)
            source_format = upload.kind.value
        else:
            dataset = self._converted(upload)
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            data = buffer.getvalue()
            header = dataset
            source_format = "IDL SAVE" if upload.kind is UploadKind.IDL_SAV else "point list"
        try:
            stored = store_instance(
                data, calling_ae=UPLOAD_AE_TITLE, calling_host="web upload",
                settings=self.settings, session_factory=self.session_factory,
            )
        except StorageFullError as error:
            raise UploadRejectedError(str(error), status_code=507) from error
        except StoreRejectedError as error:
            raise UploadRejectedError(f"the node refused the file: {error}") from error
        LOGGER.info("web upload (%s) by %r stored as %s (series id %d)", source_format,
                    upload.uploaded_by[:64], stored.sop_instance_uid, stored.series_id)
        if self.assembler is not None:
            try:
                self.assembler.note_instance(stored)
            except Exception:  # stored durably: the quiet-period check completes its series
                LOGGER.exception("assembly of uploaded %s failed after storing it", stored.sop_instance_uid)
        verb = "stored" if stored.created or stored.changed else "already held (identical file)"
        return UploadReceipt(
            sop_instance_uid=stored.sop_instance_uid,
            series_instance_uid=str(header.SeriesInstanceUID),
            study_instance_uid=str(header.StudyInstanceUID),
            message=f"{_KIND_WORDS[upload.kind]} {verb}; "
                    + ("it is scored when its series is complete" if upload.kind is not UploadKind.DICOM_MAP
                       else "contours of its study are scored on it"),
        )

    def _converted(self, upload: ContourUpload) -> Dataset:
        """The reader's SEG of an IDL SAVE file or point lists on the named stored image."""
        if not upload.reader.strip():
            raise UploadRejectedError("name the reader whose contours these are")
        image = self._stored_image(upload.image_sop_instance_uid)
        try:
            geometry = ImageGeometry.from_dataset(image)
            contour_set = (_sav_contours(upload, geometry) if upload.kind is UploadKind.IDL_SAV
                           else _point_list_contours(upload, geometry))
            masks = contour_set.to_masks()
        except ContourFormatError as error:
            raise UploadRejectedError(str(error)) from error
        uid = geometry.sop_instance_uid
        cavity = masks.mask(Structure.CAVITY, uid)
        myocardium = masks.mask(Structure.MYOCARDIUM, uid)
        if cavity is None or myocardium is None or not np.any(myocardium):
            raise UploadRejectedError(
                "the contours give no myocardium: expected an endocardium and an epicardium (or a myocardium)")
        # The same files uploaded again give the same UIDs: the store sees an identical re-send.
        key = (upload.reader, uid, *(hashlib.sha256(f.data).hexdigest() for f in upload.files))
        try:
            return build_reader_segmentation(
                image, cavity_mask=cavity, myocardium_mask=myocardium, reader=upload.reader,
                source_format="IDL SAVE" if upload.kind is UploadKind.IDL_SAV else "point list",
                series_instance_uid=name_based_uid("upload-series", *key),
                sop_instance_uid=name_based_uid("upload-instance", *key),
                series_number=UPLOAD_SERIES_NUMBER, software_version=self.software_version,
            )
        except ValueError as error:
            raise UploadRejectedError(str(error)) from error

    def _check_reader_allowed(self, header: Dataset, allowed: frozenset[str]) -> None:
        """The reader the contours name (read as the reader job reads it, through the aliases) is one the uploader
        may send contours of."""
        try:
            dicom_name = reader_name(header, calling_ae_title=UPLOAD_AE_TITLE)
        except UnknownReaderError:
            dicom_name = ""
        with self.session_factory() as session:
            person = ReaderNames.load(session).person(dicom_name) if dicom_name else ""
        if normalised(person) not in {normalised(name) for name in allowed}:
            mine = f"only {next(iter(allowed))}" if len(allowed) == 1 else "only your teams' readers"
            raise UploadRejectedError(
                f"these contours are by {dicom_name or 'no named reader'}: you may upload contours of {mine} "
                "(Content Creator's Name or Operators' Name, or an alias of it, names the reader)", status_code=403)

    def _stored_image(self, sop_instance_uid: str) -> Dataset:
        uid = sop_instance_uid.strip()
        if not uid:
            raise UploadRejectedError("name the map image the contours were drawn on (its SOP Instance UID)")
        with self.session_factory() as session:
            relative = session.scalar(select(Instance.path).where(Instance.sop_instance_uid == uid))
        if relative is None:
            raise UploadRejectedError(f"the node holds no image with SOP Instance UID {uid}", status_code=404)
        try:
            return pydicom.dcmread(self.settings.storage_root / relative)
        except (OSError, InvalidDicomError) as error:
            raise UploadRejectedError(f"image {uid} cannot be read on the node: {error}", status_code=409) from error


_KIND_WORDS = {
    UploadKind.SEG: "segmentation", UploadKind.RTSTRUCT: "structure set", UploadKind.DICOM_MAP: "map image",
    UploadKind.IDL_SAV: "IDL SAVE contours (as a segmentation)",
    UploadKind.POINT_LIST: "point lists (as a segmentation)",
}


def _dicom_header(data: bytes, filename: str) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, OSError) as error:
        raise UploadRejectedError(f"{filename} is not a DICOM Part 10 file: {error}") from error


def _check_kind(header: Dataset, kind: UploadKind, filename: str) -> None:
    sop_class = str(header.get("SOPClassUID", ""))
    if kind is UploadKind.SEG and sop_class not in SEGMENTATION_SOP_CLASSES:
        raise UploadRejectedError(f"{filename} is not a DICOM Segmentation (SOP Class {sop_class or 'missing'})")
    if kind is UploadKind.RTSTRUCT and sop_class != RT_STRUCTURE_SET:
        raise UploadRejectedError(f"{filename} is not an RT Structure Set (SOP Class {sop_class or 'missing'})")
    if kind is UploadKind.DICOM_MAP and (sop_class in SEGMENTATION_SOP_CLASSES or sop_class == RT_STRUCTURE_SET
                                         or "Rows" not in header or "Columns" not in header):
        raise UploadRejectedError(f"{filename} is not a map image (SOP Class {sop_class or 'missing'})")


def _sav_contours(upload: ContourUpload, geometry: ImageGeometry) -> ContourSet:
    if len(upload.files) != 1:
        raise UploadRejectedError(f"an IDL SAVE upload is one file, got {len(upload.files)}")
    # scipy reads IDL SAVE files from a path only.
    with tempfile.TemporaryDirectory(prefix="myomap-upload-") as folder:
        path = Path(folder) / "contours.sav"
        path.write_bytes(upload.files[0].data)
        return read_idl_sav(path, geometry, reader=upload.reader)


def _point_list_contours(upload: ContourUpload, geometry: ImageGeometry) -> ContourSet:
    polygons: dict[str, dict[str, list[np.ndarray]]] = {}
    for file in upload.files:
        label = POINT_LIST_BORDERS.get(file.border)
        if label is None:
            raise UploadRejectedError(f"a point list is an endocardium or an epicardium, got {file.border!r}")
        try:
            text = file.data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UploadRejectedError(f"{file.filename} is not a text file of points: {error}") from error
        points = parse_point_list(text)
        polygons.setdefault(label, {}).setdefault(geometry.sop_instance_uid, []).append(points)
    if set(polygons) != set(POINT_LIST_BORDERS.values()):
        raise UploadRejectedError("point lists need both an endocardium and an epicardium file")
    return contour_set_from_point_lists(polygons, [geometry], reader=upload.reader)
