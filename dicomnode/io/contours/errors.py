"""Errors of the contour readers."""

from __future__ import annotations

from collections.abc import Iterable

from dicomnode.errors import MyomapError


class ContourFormatError(MyomapError):
    """A contour object cannot be read: wrong SOP class, missing attributes or malformed points."""


class UnresolvedReferenceError(MyomapError):
    """Contours reference images whose geometry is unknown; the object can be stored but not analysed.

    Attributes
    ----------
    missing_sop_instance_uids
        Referenced SOP Instance UIDs that matched no known image, sorted.
    frame_of_reference_uid
        The frame of reference the contours lie in, when known.
    """

    def __init__(self, missing_sop_instance_uids: Iterable[str], frame_of_reference_uid: str | None,
                 detail: str = "") -> None:
        self.missing_sop_instance_uids = tuple(sorted(set(missing_sop_instance_uids)))
        self.frame_of_reference_uid = frame_of_reference_uid
        uids = ", ".join(self.missing_sop_instance_uids) or "none given"
        message = (f"contours reference images that are not known: SOP Instance UIDs [{uids}] in frame of "
                   f"reference {frame_of_reference_uid or 'unknown'}; expected each to match a known image by UID "
                   "or by plane")
        super().__init__(f"{message} ({detail})" if detail else message)


class UnknownReaderError(MyomapError):
    """No attribute in the configured order names the reader who drew the contours."""
