"""Start-up reconciliation of the storage folder with the database: the fsynced files are the durable record.

A received instance is acknowledged once its file is fsynced under its final name and its rows are committed.
The commit does not wait for the disk (SQLite WAL with synchronous=NORMAL), so an OS crash or power loss can take
the last rows while their files survive; a crash in the middle of a write leaves a temporary file. At every start,
before the SCP listens, :func:`reconcile_storage`

- removes temporary files (``.<name>.<random>.part``) of interrupted writes: an instance whose write was
  interrupted was never acknowledged, and its sender retries it (and those of the node's own outputs, which
  the job that was writing them writes again);
- records every stored file that has no row (study, series and instance, the series re-opened for assembly), and
  points a row at a newer version of its instance found on disk.

It compares the names on disk with one query of the recorded instances, and reads only the files that are missing
from the database, so it takes seconds for a hundred thousand files when nothing is missing. It never deletes a
stored file: a file it cannot record is logged and left where it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db import repository
from dicomnode.errors import MyomapError
from dicomnode.store.durable import OUTPUTS_FOLDER, is_temporary
from dicomnode.store.storage import (
    MAX_ATTEMPTS,
    RecordedIds,
    StaleSeriesError,
    engine_of,
    forget_cached_series,
    instance_facts,
    record_instance,
    series_facts,
)
from dicomnode.store.validate import UID_PATTERN, inspect_instance, split_part10

LOGGER = logging.getLogger(__name__)

# <SOPInstanceUID>.dcm or <SOPInstanceUID>.v<N>.dcm (see dicomnode.store.storage.instance_path)
STORED_FILE = re.compile(r"(?P<uid>[0-9]+(?:\.[0-9]+)*?)(?:\.v(?P<version>[0-9]+))?\.dcm")


@dataclass(frozen=True)
class ReconcileReport:
    """What :func:`reconcile_storage` found and did.

    Attributes
    ----------
    files_on_disk : int
        Stored instance files found (every version).
    temporary_removed : int
        Temporary files of interrupted writes removed.
    instances_recorded : int
        Files that had no row and were recorded (new instance rows).
    instances_updated : int
        Rows pointed at a newer version of their instance found on disk.
    unreadable : tuple of str
        Files (relative to the storage root) that could not be recorded; left in place.
    rows_without_file : tuple of str
        Recorded paths whose file is missing (reported, nothing is changed).
    seconds : float
        Time the reconciliation took.
    """

    files_on_disk: int
    temporary_removed: int
    instances_recorded: int
    instances_updated: int
    unreadable: tuple[str, ...]
    rows_without_file: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class _StoredFile:
    relative: str
    sop_instance_uid: str
    version: int


def reconcile_storage(settings: Settings, session_factory: sessionmaker[Session]) -> ReconcileReport:
    """Bring the database in line with the stored files; call it at start-up before the SCP listens.

    Parameters
    ----------
    settings : Settings
        ``settings.storage_root`` is walked: ``<study>/<series>/<sop>[.vN].dcm`` below folders named by UIDs
        (other folders, e.g. the node's outputs, are not received instances and are left alone).
    session_factory : sessionmaker

    Returns
    -------
    ReconcileReport
    """
    started = time.perf_counter()
    root = settings.storage_root
    stored, temporary_removed = _walk(root)
    engine = engine_of(session_factory)
    with engine.connect() as connection:
        recorded = repository.instance_versions(connection)
    newest: dict[str, _StoredFile] = {}
    for stored_file in stored:
        known = recorded.get(stored_file.sop_instance_uid)
        if known is not None and known[0] >= stored_file.version:
            continue
        current = newest.get(stored_file.sop_instance_uid)
        if current is None or stored_file.version > current.version:
            newest[stored_file.sop_instance_uid] = stored_file
    recorded_count = updated_count = 0
    unreadable = []
    if newest:
        forget_cached_series(engine)  # rows may have gone since they were cached
    for stored_file in sorted(newest.values(), key=lambda f: f.relative):
        try:
            created = _record_file(root, stored_file, settings, engine)
        except (MyomapError, OSError, ValueError, IntegrityError, StaleSeriesError) as error:
            LOGGER.error("stored file %s cannot be recorded, left in place: %s", stored_file.relative, error)
            unreadable.append(stored_file.relative)
            continue
        recorded_count += created
        updated_count += not created
    on_disk = {stored_file.relative for stored_file in stored}
    rows_without_file = tuple(sorted(path for _version, path in recorded.values() if path not in on_disk))
    for path in rows_without_file:
        LOGGER.error("recorded instance file %s is missing from the storage folder", path)
    report = ReconcileReport(
        files_on_disk=len(stored),
        temporary_removed=temporary_removed,
        instances_recorded=recorded_count,
        instances_updated=updated_count,
        unreadable=tuple(unreadable),
        rows_without_file=rows_without_file,
        seconds=time.perf_counter() - started,
    )
    level = logging.WARNING if recorded_count or updated_count or unreadable or rows_without_file else logging.INFO
    LOGGER.log(
        level,
        "storage reconciled in %.2f s: %d files, %d temporary files removed, %d instances recorded, %d rows "
        "updated, %d unreadable, %d rows without file",
        report.seconds,
        report.files_on_disk,
        temporary_removed,
        recorded_count,
        updated_count,
        len(unreadable),
        len(rows_without_file),
    )
    return report


def _walk(root: Path) -> tuple[list[_StoredFile], int]:
    """Stored files under ``root`` (two levels of UID-named folders), after removing temporary files there and in
    the node's outputs folder."""
    stored: list[_StoredFile] = []
    removed = 0
    for where, entry in _series_entries(root):
        if is_temporary(entry.name):
            removed += _remove_temporary(where, entry)
            continue
        match = STORED_FILE.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        stored.append(
            _StoredFile(
                relative=f"{where}/{entry.name}",
                sop_instance_uid=match["uid"],
                version=int(match["version"] or 1),
            )
        )
    removed += sum(_remove_temporary(f"{OUTPUTS_FOLDER}/{where}", entry)
                   for where, entry in _series_entries(root / OUTPUTS_FOLDER) if is_temporary(entry.name))
    return stored, removed


def _series_entries(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(``<study>/<series>``, entry) for every entry of the series folders under ``root``."""
    for study in _uid_folders(root):
        for series in _uid_folders(Path(study.path)):
            with os.scandir(series.path) as entries:
                for entry in entries:
                    yield f"{study.name}/{series.name}", entry


def _remove_temporary(where: str, entry: os.DirEntry[str]) -> int:
    """Remove a temporary file of an interrupted write; 1 when this call removed it, 0 when it was gone already."""
    try:
        os.unlink(entry.path)
    except FileNotFoundError:
        return 0
    LOGGER.info("removed %s/%s of an interrupted write", where, entry.name)
    return 1


def _uid_folders(folder: Path) -> list[os.DirEntry[str]]:
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return [
            entry
            for entry in entries
            if UID_PATTERN.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        ]


def _record_file(root: Path, stored_file: _StoredFile, settings: Settings, engine: Engine) -> bool:
    """Record one stored file (True: a new instance row; False: an existing row now points at it)."""
    file_bytes = (root / stored_file.relative).read_bytes()
    meta, dataset_bytes = split_part10(file_bytes)
    inspected = inspect_instance(
        dataset_bytes,
        meta,
        max_image_pixels=settings.dicom.max_image_pixels,
        max_inflated_bytes=settings.dicom.max_inflated_mb * 1024 * 1024,
    )
    study_uid, series_uid, _name = stored_file.relative.split("/")
    found = (inspected.study_instance_uid, inspected.series_instance_uid, inspected.sop_instance_uid)
    if found != (study_uid, series_uid, stored_file.sop_instance_uid):
        raise ValueError(f"the file holds study/series/instance {'/'.join(found)}, not what its path says")
    facts = instance_facts(inspected)
    about_series = series_facts(
        inspected.header, calling_ae=str(meta.get("SourceApplicationEntityTitle", "")), calling_host=""
    )
    digest = hashlib.sha256(dataset_bytes).hexdigest()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with engine.connect() as connection:
            existing = repository.find_instance_row(connection, sop_instance_uid=facts.sop_instance_uid)
        try:
            ids: RecordedIds = record_instance(
                engine,
                facts,
                about_series,
                path=stored_file.relative,
                sha256=digest,
                size_bytes=len(file_bytes),
                version=stored_file.version,
                existing=existing,
            )
        except (IntegrityError, StaleSeriesError):
            if attempt == MAX_ATTEMPTS:
                raise
            continue
        LOGGER.info(
            "recorded %s (series id %d) from the storage folder", stored_file.relative, ids.series_id
        )
        return existing is None
    raise AssertionError("unreachable")
