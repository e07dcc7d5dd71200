"""Small files only the node's user may read (the session key, the first admin password): mode 0600, atomic."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private_file(path: Path, text: str, *, replace: bool) -> bool:
    """Write ``text`` to ``path`` with mode 0600, all at once (a reader never sees half a file).

    With ``replace`` false an existing file is kept (two processes starting together agree on one file).

    Returns
    -------
    bool
        True when this call wrote the file, False when ``replace`` is false and the file already existed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600 whatever the umask, so the text is never readable by others.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # fails if the file exists: no race between check and create
        except FileExistsError:
            return False
        return True
    finally:
        Path(temporary).unlink(missing_ok=True)
