"""Durable storage of received instances: validated, fsynced, renamed into place, then recorded in the database.

Layout: ``<storage root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``; a re-sent instance with
changed content is kept beside the first as ``<SOPInstanceUID>.v2.dcm`` (v3, ...) and the old files stay. The
success status may only be sent after :func:`store_instance` returns: by then the file and its directory entry are
on disk and the rows are committed.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db import repository
from db.models import Instance
from db.session import session_scope
from dicomnode.classify import classify, expected_instances
from dicomnode.errors import StorageFullError
from dicomnode.validate import ParsedInstance, parse_instance, split_part10, validate_dataset

LOGGER = logging.getLogger(__name__)

BYTES_PER_MB = 1024 * 1024
MAX_ATTEMPTS = 3  # a racing insert of the same study or series fails the transaction once; then it exists
_LOCKS = tuple(threading.Lock() for _ in range(64))


@dataclass(frozen=True)
class StoredInstance:
    """What :func:`store_instance` did with one instance.

    Attributes
    ----------
    instance_id, series_id, study_id : int
        Database ids of the instance and its series and study.
    sop_instance_uid : str
    path : Path
        Absolute path of the file holding the current version.
    created : bool
        False for an identical re-send (nothing was written).
    changed : bool
        True when a re-send had changed content and a new version was kept.
    """

    instance_id: int
    series_id: int
    study_id: int
    sop_instance_uid: str
    path: Path
    created: bool
    changed: bool


@dataclass(frozen=True)
class _Existing:
    instance_id: int
    series_id: int
    study_id: int
    sha256: str
    version: int
    path: str


def check_free_space(settings: Settings) -> None:
    """Raise when the storage volume has less free space than ``settings.storage.min_free_mb``.

    Raises
    ------
    StorageFullError
        Below the watermark (answered 0xA700); nothing is ever deleted to make room.
    """
    root = settings.storage_root
    root.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(root).free / BYTES_PER_MB
    if free_mb < settings.storage.min_free_mb:
        raise StorageFullError(
            f"storage {root} has {free_mb:.0f} MB free, below the watermark of {settings.storage.min_free_mb} MB"
        )


def store_instance(
    dataset: Dataset | bytes,
    *,
    calling_ae: str,
    calling_host: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    file_meta: FileMetaDataset | None = None,
    context_sop_class_uid: str | None = None,
    affected_sop_instance_uid: str | None = None,
) -> StoredInstance:
    """Validate, write durably and record one instance; idempotent for identical re-sends.

    Parameters
    ----------
    dataset : Dataset or bytes
        A data set with ``file_meta`` (its TransferSyntaxUID says how to encode it), the encoded data set as
        received (then ``file_meta`` is required: pynetdicom's ``event.encoded_dataset(include_meta=False)`` and
        ``event.file_meta``), or a whole Part 10 file as bytes (``file_meta`` None).
    calling_ae, calling_host : str
        Who sent it; recorded on the series and as Source Application Entity Title in the file meta.
    settings : Settings
    session_factory : sessionmaker
    file_meta : FileMetaDataset, optional
    context_sop_class_uid, affected_sop_instance_uid : str, optional
        The presentation context's SOP class and the request's SOP Instance UID; the data set must match them.

    Returns
    -------
    StoredInstance

    Raises
    ------
    CannotUnderstandError, DatasetMismatchError, OutOfResourcesError
        From validation (nothing written).
    StorageFullError
        Below the disk watermark, or the disk filled while writing.
    """
    parsed = _parse(dataset, file_meta, calling_ae)
    transfer_syntax_uid = str(parsed.dataset.file_meta.TransferSyntaxUID)
    validate_dataset(
        parsed.dataset,
        transfer_syntax_uid=transfer_syntax_uid,
        max_image_pixels=settings.dicom.max_image_pixels,
        context_sop_class_uid=context_sop_class_uid,
        affected_sop_instance_uid=affected_sop_instance_uid,
    )
    check_free_space(settings)
    sop_instance_uid = str(parsed.dataset.SOPInstanceUID).strip("\0 ")
    digest = hashlib.sha256(parsed.dataset_bytes).hexdigest()
    with _LOCKS[hash(sop_instance_uid) % len(_LOCKS)]:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return _store_locked(
                    parsed, sop_instance_uid, digest, calling_ae, calling_host, settings, session_factory
                )
            except IntegrityError:
                if attempt == MAX_ATTEMPTS:
                    raise
                LOGGER.debug("concurrent insert for SOP instance %s, retrying", sop_instance_uid)
    raise AssertionError("unreachable")


def _parse(dataset: Dataset | bytes, file_meta: FileMetaDataset | None, calling_ae: str) -> ParsedInstance:
    if isinstance(dataset, bytes | bytearray | memoryview):
        data = bytes(dataset)
        if file_meta is None:
            file_meta, data = split_part10(data)
    else:
        meta = file_meta or getattr(dataset, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            raise ValueError("a Dataset to store needs file_meta with a TransferSyntaxUID")
        buffer = BytesIO()
        dataset.file_meta = meta
        dcmwrite(buffer, dataset, enforce_file_format=True)
        file_meta, data = split_part10(buffer.getvalue())
    meta = FileMetaDataset(file_meta)
    if calling_ae:
        meta.SourceApplicationEntityTitle = calling_ae.strip()[:16]
    return parse_instance(data, meta)


def _store_locked(
    parsed: ParsedInstance,
    sop_instance_uid: str,
    digest: str,
    calling_ae: str,
    calling_host: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> StoredInstance:
    root = settings.storage_root
    with session_scope(session_factory) as session:
        row = repository.get_instance_by_uid(session, sop_instance_uid=sop_instance_uid)
        existing = (
            None
            if row is None
            else _Existing(row.id, row.series_id, row.series.study_id, row.sha256, row.version, row.path)
        )
    if existing is not None and existing.sha256 == digest:
        return StoredInstance(
            instance_id=existing.instance_id,
            series_id=existing.series_id,
            study_id=existing.study_id,
            sop_instance_uid=sop_instance_uid,
            path=root / existing.path,
            created=False,
            changed=False,
        )

    ds = parsed.dataset
    study_uid = str(ds.StudyInstanceUID).strip("\0 ")
    series_uid = str(ds.SeriesInstanceUID).strip("\0 ")
    version = 1 if existing is None else existing.version + 1
    name = f"{sop_instance_uid}.dcm" if version == 1 else f"{sop_instance_uid}.v{version}.dcm"
    relative = Path(study_uid) / series_uid / name
    write_durably(root / relative, parsed.file_bytes, root=root)
    role = classify(ds)
    expected = expected_instances(ds)

    with session_scope(session_factory) as session:
        study = repository.get_or_create_study(
            session,
            study_instance_uid=study_uid,
            patient_id=_text(ds, "PatientID", 64),
            patient_name=_text(ds, "PatientName", 324),
            study_date=_text(ds, "StudyDate", 8),
            study_description=_text(ds, "StudyDescription", 64),
            accession_number=_text(ds, "AccessionNumber", 16),
        )
        series = repository.get_or_create_series(
            session,
            study_id=study.id,
            series_instance_uid=series_uid,
            role=role,
            expected_instances=expected,
            series_number=_int_or_none(ds.get("SeriesNumber")),
            modality=_text(ds, "Modality", 16),
            description=_text(ds, "SeriesDescription", 64),
            manufacturer=_text(ds, "Manufacturer", 64),
            calling_ae=calling_ae.strip()[:16],
            calling_host=calling_host[:255],
        )
        fields = {
            "sop_class_uid": str(ds.SOPClassUID).strip("\0 "),
            "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
            "instance_number": _int_or_none(ds.get("InstanceNumber")),
            "path": relative.as_posix(),
            "sha256": digest,
            "size_bytes": len(parsed.file_bytes),
            "version": version,
        }
        if existing is None:
            instance = Instance(series_id=series.id, sop_instance_uid=sop_instance_uid, **fields)
            session.add(instance)
            session.flush()
            repository.record_arrival(session, series_id=series.id, added=1, reopen=True)
        else:
            instance = session.get_one(Instance, existing.instance_id)
            for key, value in fields.items():
                setattr(instance, key, value)
            instance.series_id = series.id
            session.flush()
            repository.record_arrival(session, series_id=series.id, added=0, reopen=True)
            if existing.series_id != series.id:
                repository.recount_instances(session, series_id=series.id)
                repository.recount_instances(session, series_id=existing.series_id)
        result = StoredInstance(
            instance_id=instance.id,
            series_id=series.id,
            study_id=study.id,
            sop_instance_uid=sop_instance_uid,
            path=root / relative,
            created=existing is None,
            changed=existing is not None,
        )
    if existing is not None:
        LOGGER.info(
            "SOP instance %s re-sent with changed content: kept as version %d", sop_instance_uid, version
        )
    return result


def write_durably(path: Path, data: bytes, *, root: Path) -> None:
    """Write ``data`` to ``path`` so that it survives a crash once this returns.

    A temporary file in the target folder is written and fsynced, renamed over ``path`` (atomic), and the folder
    is fsynced so the new name is on disk too; folders created on the way below ``root`` are fsynced likewise.

    Raises
    ------
    StorageFullError
        If the disk or quota filled while writing (the partial file is removed).
    """
    folder = path.parent
    try:
        _make_folders(folder, root)
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_folder(folder)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(f"storage full while writing {path.name}: {error.strerror}") from error
        raise


def _make_folders(folder: Path, root: Path) -> None:
    missing = []
    current = folder
    while not current.exists() and current != root and current != current.parent:
        missing.append(current)
        current = current.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue  # another association created it at the same moment
        _fsync_folder(new.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _text(dataset: Dataset, keyword: str, max_length: int) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip("\0 ")[:max_length]


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
