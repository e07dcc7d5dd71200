"""Durable storage of received instances: validated, fsynced, renamed into place, then recorded in the database.

Layout: ``<storage root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``; a re-sent instance with
changed content is kept beside the first as ``<SOPInstanceUID>.v2.dcm`` (v3, ...) and the old files stay. The
success status may only be sent after :func:`store_instance` returns: by then the file and its directory entry are
on disk and the rows are committed.

The fsynced file is the durable record. The rows are committed without waiting for the disk (SQLite WAL with
synchronous=NORMAL survives a killed process, not a power loss); :func:`dicomnode.store.reconcile.reconcile_storage`
rebuilds, at the next start, any row that an OS crash took.

The hot path decodes the data set only up to its pixel data (:func:`dicomnode.store.validate.inspect_instance`), writes
the bytes as received, and records the instance with Core statements in one short transaction, finding its series
in a per-engine cache of series and study ids by UID.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db import refused, repository
from db.models import SeriesRole
from db.repository import InstanceFileColumns, InstanceRow, SeriesArrival, SeriesRow
from dicomnode.errors import CannotUnderstandError, ConflictingInstanceError, MyomapError, StorageFullError
from dicomnode.io.classify import classify, expected_instances
from dicomnode.store.durable import write_durably
from dicomnode.store.validate import PREAMBLE, InspectedInstance, encode_file_meta, inspect_instance, split_part10

LOGGER = logging.getLogger(__name__)

BYTES_PER_MB = 1024 * 1024
# A racing insert of the same study, series or instance (another thread or process) fails the transaction once,
# and a cached series id whose row went away fails it once more; then the rows exist and are found.
MAX_ATTEMPTS = 4
SERIES_CACHE_SIZE = 4096
_LOCKS = tuple(threading.Lock() for _ in range(64))  # by SOP Instance UID: one store of an instance at a time
_SERIES_LOCKS = tuple(threading.Lock() for _ in range(64))  # by Series UID: one creation of a series at a time


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
    arrival : SeriesArrival or None
        The series as this instance's transaction left it (RECEIVING), so that assembly need not read it again;
        None for an identical re-send.
    """

    instance_id: int
    series_id: int
    study_id: int
    sop_instance_uid: str
    path: Path
    created: bool
    changed: bool
    arrival: SeriesArrival | None = None


@dataclass(frozen=True)
class InstanceFacts:
    """What the instance row records, from the header; built by :func:`instance_facts` (UIDs validated)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    patient_id: str = ""  # compared with the stored study's on a re-send; never logged


@dataclass(frozen=True)
class SeriesFacts:
    """What the study and series rows record, from the header; built by :func:`series_facts`.

    Needed only to create a series or to teach it a role or expected count it lacks, so the ingest path skips
    classification when the series is cached and the instance cannot teach it either (:func:`_may_learn`).
    """

    role: SeriesRole
    expected_instances: int | None
    patient_id: str
    patient_name: str
    study_date: str
    study_description: str
    accession_number: str
    series_number: int | None
    modality: str
    description: str
    manufacturer: str
    calling_ae: str
    calling_host: str


@dataclass(frozen=True)
class RecordedIds:
    """Database ids of a recorded instance."""

    instance_id: int
    series_id: int
    study_id: int
    arrival: SeriesArrival | None = None


class StaleSeriesError(Exception):
    """A cached series id matched no row (deleted, or re-used by another series): drop it and retry."""


class _SeriesCache:
    """Series rows by Series Instance UID for one engine, bounded, shared by all associations.

    Entries are put only after the transaction that created or used them committed, and dropped whenever a
    transaction using one fails, so a rolled-back insert never leaves an id behind.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._rows: OrderedDict[str, SeriesRow] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, series_instance_uid: str) -> SeriesRow | None:
        with self._lock:
            row = self._rows.get(series_instance_uid)
            if row is not None:
                self._rows.move_to_end(series_instance_uid)
            return row

    def put(self, series_instance_uid: str, row: SeriesRow) -> None:
        with self._lock:
            self._rows[series_instance_uid] = row
            self._rows.move_to_end(series_instance_uid)
            while len(self._rows) > self._capacity:
                self._rows.popitem(last=False)

    def drop(self, series_instance_uid: str) -> None:
        with self._lock:
            self._rows.pop(series_instance_uid, None)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


_CACHES: weakref.WeakKeyDictionary[Engine, _SeriesCache] = weakref.WeakKeyDictionary()
_ENGINES: weakref.WeakKeyDictionary[sessionmaker, Engine] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


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
    dataset_bytes, meta = _encoded(dataset, file_meta)
    inspected = inspect_instance(
        dataset_bytes,
        meta,
        max_image_pixels=settings.dicom.max_image_pixels,
        context_sop_class_uid=context_sop_class_uid,
        affected_sop_instance_uid=affected_sop_instance_uid,
        max_inflated_bytes=settings.dicom.max_inflated_mb * BYTES_PER_MB,
    )
    facts = instance_facts(inspected)
    check_free_space(settings)
    digest = hashlib.sha256(dataset_bytes).hexdigest()
    engine = engine_of(session_factory)
    cache = _series_cache(engine)
    with _LOCKS[hash(facts.sop_instance_uid) % len(_LOCKS)]:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            known = cache.get(facts.series_instance_uid)
            about_series = (
                None
                if known is not None and not _may_learn(known, inspected.header)
                else series_facts(inspected.header, calling_ae=calling_ae, calling_host=calling_host)
            )
            try:
                return _store_locked(
                    facts,
                    about_series,
                    meta,
                    dataset_bytes,
                    digest,
                    settings.storage_root,
                    engine,
                    sender=(calling_ae.strip(), calling_host),
                )
            except (IntegrityError, StaleSeriesError):
                cache.drop(facts.series_instance_uid)
                if attempt == MAX_ATTEMPTS:
                    raise
                LOGGER.debug("concurrent change for SOP instance %s, retrying", facts.sop_instance_uid)
    raise AssertionError("unreachable")


def instance_facts(inspected: InspectedInstance) -> InstanceFacts:
    """The instance row's values of an inspected instance."""
    return InstanceFacts(
        study_instance_uid=inspected.study_instance_uid,
        series_instance_uid=inspected.series_instance_uid,
        sop_instance_uid=inspected.sop_instance_uid,
        sop_class_uid=inspected.sop_class_uid,
        transfer_syntax_uid=inspected.transfer_syntax_uid,
        instance_number=_int_or_none(inspected.header.get("InstanceNumber")),
        patient_id=_patient_id(inspected.header),
    )


def series_facts(header: Dataset, *, calling_ae: str, calling_host: str) -> SeriesFacts:
    """The study and series rows' values: role and expected count (:mod:`dicomnode.io.classify`), texts.

    Raises
    ------
    CannotUnderstandError
        A value the rows or the classification need cannot be decoded.
    """
    try:
        role = classify(header)
        return SeriesFacts(
            role=role,
            expected_instances=expected_instances(header, role),
            patient_id=_text(header, "PatientID", 64),
            patient_name=_text(header, "PatientName", 324),
            study_date=_text(header, "StudyDate", 8),
            study_description=_text(header, "StudyDescription", 64),
            accession_number=_text(header, "AccessionNumber", 16),
            series_number=_int_or_none(header.get("SeriesNumber")),
            modality=_text(header, "Modality", 16),
            description=_text(header, "SeriesDescription", 64),
            manufacturer=_text(header, "Manufacturer", 64),
            calling_ae=calling_ae.strip()[:16],
            calling_host=calling_host[:255],
        )
    except MyomapError:
        raise
    except Exception as error:  # pydicom raises several types for values that break their VR
        raise CannotUnderstandError(
            f"a value needed to classify the instance cannot be decoded ({type(error).__name__})"
        ) from error


def engine_of(session_factory: sessionmaker[Session]) -> Engine:
    """The engine a session factory binds to (looked up once per factory)."""
    engine = _ENGINES.get(session_factory)
    if engine is None:
        with session_factory() as session:
            bind = session.get_bind()
        engine = bind if isinstance(bind, Engine) else bind.engine
        with _REGISTRY_LOCK:
            _ENGINES[session_factory] = engine
    return engine


def _series_cache(engine: Engine) -> _SeriesCache:
    cache = _CACHES.get(engine)
    if cache is None:
        with _REGISTRY_LOCK:
            cache = _CACHES.setdefault(engine, _SeriesCache(SERIES_CACHE_SIZE))
    return cache


def forget_cached_series(engine: Engine) -> None:
    """Drop the cached series and study ids of ``engine`` (after rows were deleted outside the ingest path)."""
    _series_cache(engine).clear()


def _encoded(dataset: Dataset | bytes, file_meta: FileMetaDataset | None) -> tuple[bytes, FileMetaDataset]:
    if isinstance(dataset, bytes | bytearray | memoryview):
        data = bytes(dataset)
        if file_meta is None:
            file_meta, data = split_part10(data)
        return data, file_meta  # not changed here: the Source AE title is added when the meta is encoded
    meta = file_meta or getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise ValueError("a Dataset to store needs file_meta with a TransferSyntaxUID")
    buffer = BytesIO()
    dataset.file_meta = meta
    dcmwrite(buffer, dataset, enforce_file_format=True)
    file_meta, data = split_part10(buffer.getvalue())
    return data, file_meta


def _store_locked(
    facts: InstanceFacts,
    about_series: SeriesFacts | None,
    meta: FileMetaDataset,
    dataset_bytes: bytes,
    digest: str,
    root: Path,
    engine: Engine,
    sender: tuple[str, str] = ("", ""),
) -> StoredInstance:
    # One connection for the look-up and the record (a pool checkout per statement group cost as much as the
    # statements); no transaction stays open while the file is written.
    with engine.connect() as connection:
        existing = repository.find_instance_row(connection, sop_instance_uid=facts.sop_instance_uid)
        connection.rollback()
        if existing is not None and existing.sha256 != digest:
            _refuse_if_moved(engine, facts, existing, sender)
        if existing is not None and existing.sha256 == digest:
            return StoredInstance(
                instance_id=existing.id,
                series_id=existing.series_id,
                study_id=existing.study_id,
                sop_instance_uid=facts.sop_instance_uid,
                path=root / existing.path,
                created=False,
                changed=False,
            )
        version = 1 if existing is None else existing.version + 1
        relative = instance_path(facts, version)
        file_bytes = b"".join((PREAMBLE, encode_file_meta(meta, source_ae_title=sender[0][:16]), dataset_bytes))
        write_durably(root / relative, file_bytes, root=root)
        ids = record_instance(
            engine,
            facts,
            about_series,
            path=relative.as_posix(),
            sha256=digest,
            size_bytes=len(file_bytes),
            version=version,
            existing=existing,
            connection=connection,
        )
    if existing is not None:
        LOGGER.info(
            "SOP instance %s re-sent with changed content: kept as version %d", facts.sop_instance_uid, version
        )
    return StoredInstance(
        instance_id=ids.instance_id,
        series_id=ids.series_id,
        study_id=ids.study_id,
        sop_instance_uid=facts.sop_instance_uid,
        path=root / relative,
        created=existing is None,
        changed=existing is not None,
        arrival=ids.arrival,
    )


def _refuse_if_moved(engine: Engine, facts: InstanceFacts, existing: InstanceRow, sender: tuple[str, str]) -> None:
    """Refuse, and record, a re-send of a stored SOP Instance UID under another Patient ID or Study Instance UID.

    Raises
    ------
    ConflictingInstanceError
        The stored instance belongs to another study or patient (answered 0xA900; the stored one is kept).
    """
    with engine.connect() as connection:
        stored = refused.study_identity(connection, study_id=existing.study_id)
    if stored is None:
        return
    other_study = stored.study_instance_uid != facts.study_instance_uid
    other_patient = stored.patient_id != facts.patient_id
    if not (other_study or other_patient):
        return
    calling_ae, calling_host = sender
    with engine.begin() as connection:
        refused.record_refusal(
            connection,
            sop_instance_uid=facts.sop_instance_uid,
            instance_id=existing.id,
            stored_study_instance_uid=stored.study_instance_uid,
            sent_study_instance_uid=facts.study_instance_uid,
            patient_id_differs=other_patient,
            calling_ae=calling_ae,
            calling_host=calling_host,
        )
    what = " and ".join(
        name for name, differs in (("Patient ID", other_patient), ("Study Instance UID", other_study)) if differs
    )
    # Names which identifiers differ, never their values: the Patient IDs are patient data.
    raise ConflictingInstanceError(
        f"UID already stored under another {what}; refused, the stored instance is kept "
        f"(SOP Instance UID {facts.sop_instance_uid})"
    )


def instance_path(facts: InstanceFacts, version: int) -> Path:
    """Where version ``version`` of an instance lives, relative to the storage root."""
    uid = facts.sop_instance_uid
    name = f"{uid}.dcm" if version == 1 else f"{uid}.v{version}.dcm"
    return Path(facts.study_instance_uid) / facts.series_instance_uid / name


def record_instance(
    engine: Engine,
    facts: InstanceFacts,
    about_series: SeriesFacts | None,
    *,
    path: str,
    sha256: str,
    size_bytes: int,
    version: int,
    existing: InstanceRow | None,
    connection: Connection | None = None,
) -> RecordedIds:
    """Record a written file in one transaction: study and series (created if new), instance row, arrival.

    The arrival counts a new instance and re-opens its series for assembly when it was no longer receiving.

    Parameters
    ----------
    engine : Engine
    facts : InstanceFacts
    about_series : SeriesFacts or None
        None when the series is cached and the instance cannot teach it anything (see :func:`store_instance`).
    path : str
        The file, relative to the storage root (POSIX separators).
    sha256 : str
        Hex digest of the data set bytes (no file meta): identical re-sends have the same.
    size_bytes : int
        Size of the file.
    version : int
    existing : InstanceRow or None
        The row of an earlier version of this instance, which then points at the new file.
    connection : Connection, optional
        An open connection of ``engine`` without a transaction to record on; one of the pool's otherwise.

    Returns
    -------
    RecordedIds

    Raises
    ------
    IntegrityError
        Another thread or process inserted the same study, series or instance at the same moment; retry.
    StaleSeriesError
        The cached series row is gone, or ``about_series`` is None and the series is not cached; retry with
        ``about_series``.
    """
    cache = _series_cache(engine)
    uid = facts.series_instance_uid
    cached = cache.get(uid)
    row = (path, sha256, size_bytes, version, existing)
    if cached is not None:
        return _record(engine, connection, cache, facts, about_series, cached, *row)
    # Creating a series: one thread at a time per UID, so that concurrent associations on a new series wait for
    # the first to commit and find it in the cache, instead of failing on the unique constraint.
    with _SERIES_LOCKS[hash(uid) % len(_SERIES_LOCKS)]:
        cached = cache.get(uid)
        return _record(engine, connection, cache, facts, about_series, cached, *row)


def _record(
    engine: Engine,
    given: Connection | None,
    cache: _SeriesCache,
    facts: InstanceFacts,
    about_series: SeriesFacts | None,
    series: SeriesRow | None,
    path: str,
    sha256: str,
    size_bytes: int,
    version: int,
    existing: InstanceRow | None,
) -> RecordedIds:
    if about_series is None and series is None:
        raise StaleSeriesError(f"series {facts.series_instance_uid} left the cache; classify the instance")
    columns = InstanceFileColumns(
        sop_class_uid=facts.sop_class_uid,
        transfer_syntax_uid=facts.transfer_syntax_uid,
        instance_number=facts.instance_number,
        path=path,
        sha256=sha256,
        size_bytes=size_bytes,
        version=version,
    )
    try:
        with _transaction(engine, given) as connection:
            if series is None:
                assert about_series is not None  # the check above raised StaleSeriesError when both are None
                series = _find_or_create_series(connection, facts, about_series)
            elif about_series is not None and _learns(series, about_series):
                repository.learn_series_facts(
                    connection,
                    series_id=series.id,
                    role=about_series.role,
                    expected_instances=about_series.expected_instances,
                )
                series = _learned(series, about_series)
            counted = repository.count_arrival_returning(
                connection,
                series_id=series.id,
                series_instance_uid=facts.series_instance_uid,
                study_id=series.study_id,
                added=1 if existing is None else 0,
            )
            if counted is None:
                raise StaleSeriesError(f"series {facts.series_instance_uid} is not id {series.id}")
            if existing is None:
                instance_id = repository.insert_instance_row(
                    connection, series_id=series.id, sop_instance_uid=facts.sop_instance_uid, **columns
                )
            else:
                instance_id = existing.id
                repository.update_instance_row(connection, instance_id=instance_id, series_id=series.id, **columns)
                if existing.series_id != series.id:
                    repository.recount_series_row(connection, series_id=series.id)
                    repository.recount_series_row(connection, series_id=existing.series_id)
    except BaseException:
        cache.drop(facts.series_instance_uid)
        raise
    cache.put(facts.series_instance_uid, series)
    # A new version may move the instance between series and recount them after the arrival: assembly reads those.
    return RecordedIds(instance_id=instance_id, series_id=series.id, study_id=series.study_id,
                       arrival=counted if existing is None else None)


@contextmanager
def _transaction(engine: Engine, connection: Connection | None) -> Iterator[Connection]:
    """A transaction on ``connection``, or on a connection of ``engine``'s pool; committed when the block ends."""
    if connection is None:
        with engine.begin() as own:
            yield own
    else:
        with connection.begin():
            yield connection


def _find_or_create_series(connection: Connection, facts: InstanceFacts, about: SeriesFacts) -> SeriesRow:
    series = repository.find_series_row(connection, series_instance_uid=facts.series_instance_uid)
    if series is not None:
        if _learns(series, about):
            repository.learn_series_facts(
                connection, series_id=series.id, role=about.role, expected_instances=about.expected_instances
            )
            series = _learned(series, about)
        return series
    study_id = repository.find_study_id(connection, study_instance_uid=facts.study_instance_uid)
    if study_id is None:
        study_id = repository.insert_study_row(
            connection,
            study_instance_uid=facts.study_instance_uid,
            patient_id=about.patient_id,
            patient_name=about.patient_name,
            study_date=about.study_date,
            study_description=about.study_description,
            accession_number=about.accession_number,
        )
    series_id = repository.insert_series_row(
        connection,
        study_id=study_id,
        series_instance_uid=facts.series_instance_uid,
        role=about.role,
        expected_instances=about.expected_instances,
        series_number=about.series_number,
        modality=about.modality,
        description=about.description,
        manufacturer=about.manufacturer,
        calling_ae=about.calling_ae,
        calling_host=about.calling_host,
    )
    return SeriesRow(series_id, study_id, about.role, about.expected_instances)


def _may_learn(series: SeriesRow, header: Dataset) -> bool:
    """Whether this instance may teach the cached series a role or an expected count, so that it must be classified.

    A series whose role is settled (neither OTHER nor a phase role) learns nothing from classification; it learns
    an expected count only from an instance that states one, which a few header elements tell (a MOLLI series
    without ImagesInAcquisition is then not classified again for each of its images).
    """
    if not _role_settled(series):
        return True
    if series.expected_instances is not None:
        return False
    try:
        return expected_instances(header, series.role) is not None
    except Exception:  # a value that breaks its VR: series_facts says so with the right status
        return True


def _role_settled(series: SeriesRow) -> bool:
    # A series learns a role from later instances only from OTHER, or raw from phase.
    return series.role not in (SeriesRole.OTHER, *_PHASE_OF_RAW.values())


#: A series first seen through a phase image becomes raw when a magnitude image of it arrives (Philips M/P and GE
#: M/P/R/I images of one acquisition share a series and arrive in any order).
_PHASE_OF_RAW = {SeriesRole.RAW_IR: SeriesRole.RAW_IR_PHASE, SeriesRole.T2_PREP: SeriesRole.T2_PREP_PHASE}


def _learns_role(series: SeriesRow, about: SeriesFacts) -> bool:
    return (series.role == SeriesRole.OTHER and about.role != SeriesRole.OTHER) or (
        _PHASE_OF_RAW.get(about.role) == series.role
    )


def _learns(series: SeriesRow, about: SeriesFacts) -> bool:
    return _learns_role(series, about) or (series.expected_instances is None and about.expected_instances is not None)


def _learned(series: SeriesRow, about: SeriesFacts) -> SeriesRow:
    return replace(
        series,
        role=about.role if _learns_role(series, about) else series.role,
        expected_instances=(
            about.expected_instances if series.expected_instances is None else series.expected_instances
        ),
    )


def _text(dataset: Dataset, keyword: str, max_length: int) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip("\0 ")[:max_length]


def _patient_id(header: Dataset) -> str:
    try:
        return _text(header, "PatientID", 64)
    except Exception as error:  # pydicom raises several types for values that break their VR
        raise CannotUnderstandError(f"Patient ID cannot be decoded ({type(error).__name__})") from error


def _int_or_none(value: object) -> int | None:
    try:
        # Any value is tried on purpose: int() raises TypeError for those it cannot take, answered with None.
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
