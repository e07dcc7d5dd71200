"""The roots of the node's errors.

:class:`MyomapError` is the root of every error the node raises on purpose. Only a :class:`StoreRejectedError`
carries a DIMSE status: it is the answer the C-STORE handler gives when the error stops a store. Errors of the
stages after storage have their own roots (``dicomnode.jobs.errors.JobError``, the analysis' ``AnalyzeError``)
and never reach a sender.
"""

from __future__ import annotations


class MyomapError(Exception):
    """Root of the node's errors."""


class StoreRejectedError(MyomapError):
    """An instance the Storage SCP refuses; ``dimse_status`` is what the C-STORE response says (PS3.4 B.2.3)."""

    dimse_status: int = 0xC000


class StorageFullError(StoreRejectedError):
    """Free space on the storage volume is below the configured watermark (Refused: Out of Resources)."""

    dimse_status = 0xA700


class OutOfResourcesError(StoreRejectedError):
    """The data set asks for more than the node will hold, e.g. absurd image dimensions (Out of Resources)."""

    dimse_status = 0xA700


class DatasetMismatchError(StoreRejectedError):
    """The data set does not match its SOP class: wrong SOP Class UID, missing UIDs or pixel data (0xA900)."""

    dimse_status = 0xA900


class CannotUnderstandError(StoreRejectedError):
    """The data set cannot be parsed: truncated, malformed, or a value that breaks its VR (0xC000)."""

    dimse_status = 0xC000


class UnknownPeerError(MyomapError):
    """A calling AE title (or its host) is not among the configured peers (the association is rejected)."""


class ConflictingInstanceError(DatasetMismatchError):
    """A known SOP Instance UID re-sent under another Patient ID or Study Instance UID (0xA900): a UID names one
    instance for ever, so the stored instance is kept where it is and the re-send is refused."""
