"""Who drew a contour object: the first non-empty identity source in a configurable order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomnode.io.contours.errors import UnknownReaderError

LOGGER = logging.getLogger(__name__)


class IdentitySource(str, Enum):
    """Where a reader's name can come from: a DICOM attribute keyword, or the calling AE title of the sender."""

    CONTENT_CREATOR_NAME = "ContentCreatorName"
    OPERATORS_NAME = "OperatorsName"
    STRUCTURE_SET_LABEL = "StructureSetLabel"
    SERIES_DESCRIPTION = "SeriesDescription"
    CALLING_AE_TITLE = "calling_ae_title"


DEFAULT_IDENTITY_ORDER: tuple[IdentitySource, ...] = (
    IdentitySource.CONTENT_CREATOR_NAME,
    IdentitySource.OPERATORS_NAME,
    IdentitySource.STRUCTURE_SET_LABEL,
    IdentitySource.SERIES_DESCRIPTION,
    IdentitySource.CALLING_AE_TITLE,
)


def _text(value: object) -> str:
    """A person name's components joined by spaces (``Doe^John`` -> ``Doe John``), other values as text."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else ""
    return " ".join(part.strip() for part in str(value).split("^") if part.strip())


def reader_name(
    ds: Dataset,
    *,
    calling_ae_title: str | None = None,
    order: Sequence[IdentitySource | str] = DEFAULT_IDENTITY_ORDER,
) -> str:
    """The reader's name from the first source in ``order`` that holds a non-empty value.

    Parameters
    ----------
    ds
        The SEG, RTSTRUCT or other contour object.
    calling_ae_title
        The AE title the object was sent from, used when ``order`` reaches ``CALLING_AE_TITLE``.
    order
        Sources to try, as :class:`IdentitySource` members or their values.

    Raises
    ------
    ValueError
        If ``order`` names an unknown source.
    UnknownReaderError
        If no source in ``order`` holds a value.
    """
    sources = [IdentitySource(source) for source in order]
    for source in sources:
        if source is IdentitySource.CALLING_AE_TITLE:
            name = (calling_ae_title or "").strip()
        else:
            name = _text(ds.get(source.value))
        if name:
            LOGGER.debug("reader of %s from %s", ds.get("SOPInstanceUID", "?"), source.value)
            return name
    raise UnknownReaderError(
        f"no reader name in {ds.get('SOPInstanceUID', '?')}: expected a value in one of "
        f"{[source.value for source in sources]}"
    )
