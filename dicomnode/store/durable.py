"""Durable writing: every file the node writes, received or its own, goes through :func:`write_durably`.

A file under its final name is always complete and on disk: the bytes go to a temporary file in the target folder
(``.<name>.<random>.part``), which is fdatasynced and renamed over the final name (atomic), and the folder is
fsynced so that the new name is durable too; folders created on the way are fsynced likewise. An interrupted
write leaves at most a temporary file, which :func:`dicomnode.store.reconcile.reconcile_storage` removes at the
next start, in the received instances' folders and in the node's own outputs folder alike.
"""

from __future__ import annotations

import errno
import os
import tempfile
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmwrite

from dicomnode.errors import StorageFullError

TEMPORARY_SUFFIX = ".part"
#: The node's own outputs (maps, SR, SEG, Secondary Captures) live under ``<storage root>/outputs/<study>/``,
#: beside the received instances' ``<storage root>/<study>/`` folders.
OUTPUTS_FOLDER = "outputs"


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`write_durably`'s temporary files."""
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def write_dataset_durably(dataset: Dataset, path: Path, *, root: Path) -> Path:
    """Write ``dataset`` as a DICOM Part 10 file at ``path`` with :func:`write_durably`; returns ``path``."""
    buffer = BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    write_durably(path, buffer.getvalue(), root=root)
    return path


def write_durably(path: Path, data: bytes, *, root: Path) -> None:
    """Write ``data`` to ``path`` so that it survives a crash once this returns.

    A temporary file in the target folder (``.<name>.<random>.part``) is written and fdatasynced, renamed over
    ``path`` (atomic), and the folder is fsynced so the new name is on disk too; folders created on the way
    below ``root`` are fsynced likewise.

    Raises
    ------
    StorageFullError
        If the disk or quota filled while writing (the partial file is removed).
    """
    folder = path.parent
    try:
        _make_folders(folder, root)
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view) :]
                os.fdatasync(descriptor)  # data and size; the name is made durable by the folder's fsync
            finally:
                os.close(descriptor)
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
