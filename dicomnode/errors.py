"""Errors of the DICOM node; each carries the DIMSE status the C-STORE handler answers with."""

from __future__ import annotations


class MyomapError(Exception):
    """Root of the node's errors; ``dimse_status`` is what a C-STORE SCP answers when this error stops a store."""

    dimse_status: int = 0xC000


class StorageFullError(MyomapError):
    """Free space on the storage volume is below the configured watermark (Refused: Out of Resources)."""

    dimse_status = 0xA700


class OutOfResourcesError(MyomapError):
    """The data set asks for more than the node will hold, e.g. absurd image dimensions (Out of Resources)."""

    dimse_status = 0xA700


class DatasetMismatchError(MyomapError):
    """The data set does not match its SOP class: wrong SOP Class UID, missing UIDs or pixel data (0xA900)."""

    dimse_status = 0xA900


class CannotUnderstandError(MyomapError):
    """The data set cannot be parsed: truncated, malformed, or a value that breaks its VR (0xC000)."""

    dimse_status = 0xC000


class UnknownPeerError(MyomapError):
    """A calling AE title (or its host) is not among the configured peers."""
