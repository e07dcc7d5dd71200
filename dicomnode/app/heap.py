"""The garbage collector after start-up: what a started process holds for its lifetime is not scanned again."""

from __future__ import annotations

import gc


def freeze_start_up_objects() -> None:
    """Move every object alive now (modules, settings, ORM mappers, pydicom's dictionaries) out of the collector's
    generations.

    Each C-STORE allocates thousands of short-lived objects, so the collector runs often, and each full collection
    (as well as the one pynetdicom's association server forces every 60 accepted connections or server polls)
    walked the whole start-up heap: about 0.25 s with the interpreter lock held, during which no association of the
    process moved. Frozen objects are still freed by reference counting; only cycles among them stay.
    """
    gc.collect()
    gc.freeze()
