"""Where the real DICOM fixtures written by others live: ``shared/data`` beside the repository checkout."""

from __future__ import annotations

import os
from pathlib import Path

_REPOSITORY = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The fixture folder: $MYOMAP_SHARED_DATA, else ``../shared/data`` beside the checkout, else /work/shared/data."""
    candidates = [Path(p) for p in (os.environ.get("MYOMAP_SHARED_DATA"),) if p]
    candidates += [_REPOSITORY.parent / "shared" / "data", Path("/work/shared/data")]
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate
    raise FileNotFoundError(f"no shared fixture folder among {[str(c) for c in candidates]}")


SHARED_DATA = shared_data()
