"""Thumbnails of a reader's worst attempts: the overlay of their contour on the reference, small, inline.

An attempt's overlay is the node's comparison image (the reader's and the reference's contours over the map): a PNG,
or the overlay Secondary Capture it was sent as (a .dcm), stored under the node's storage root. It goes into the
report as a PNG data URI scaled to :data:`THUMBNAIL_PX`, so that the PDF stays small and needs no files beside it.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from reports.programme.model import Attempt

LOGGER = logging.getLogger(__name__)

THUMBNAIL_PX = 360  # longest side: sharp at the 55 mm the report prints it at


@dataclass(frozen=True)
class Thumbnail:
    """One of the worst attempts and its overlay as a data URI (None when none is stored; ``missing`` says why)."""

    attempt: Attempt
    data_uri: str | None
    missing: str = ""


def worst_attempts(attempts: Sequence[Attempt], count: int = 4) -> list[Attempt]:
    """The ``count`` scored attempts of lowest Dice, worst first (ties: the later one first)."""
    scored = [attempt for attempt in attempts if attempt.dice is not None]
    return sorted(scored, key=lambda a: (a.dice, -a.received_at.timestamp()))[:count]


def _overlay_image(path: Path) -> Image.Image:
    if path.suffix.lower() == ".dcm":
        ds = pydicom.dcmread(path)
        pixels = np.asarray(ds.pixel_array)
        return Image.fromarray(pixels.astype(np.uint8), "RGB" if pixels.ndim == 3 else "L")
    with Image.open(path) as image:
        image.load()
        return image.copy()


def thumbnail(attempt: Attempt, storage_root: Path | None) -> Thumbnail:
    """The overlay of ``attempt`` scaled to a thumbnail; a thumbnail without image when it cannot be read."""
    if attempt.overlay_png is None:
        return Thumbnail(attempt, None, "no overlay stored")
    path = Path(attempt.overlay_png)
    if not path.is_absolute():
        if storage_root is None:
            return Thumbnail(attempt, None, "overlay stored, storage folder not given")
        path = storage_root / path
    try:
        image = _overlay_image(path)
    except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError) as error:
        LOGGER.warning("overlay %s not readable: %s", path.name, error)
        return Thumbnail(attempt, None, "overlay not readable")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=True)
    return Thumbnail(attempt, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))


def worst_thumbnails(attempts: Sequence[Attempt], storage_root: Path | None, count: int = 4) -> list[Thumbnail]:
    """Thumbnails of the ``count`` worst attempts, worst first."""
    return [thumbnail(attempt, storage_root) for attempt in worst_attempts(attempts, count)]
