"""The root of the errors that stop a job: a job's failure is recorded on its row, never answered to a sender."""

from __future__ import annotations

from dicomnode.errors import MyomapError


class JobError(MyomapError):
    """A job cannot do its work; the job is marked FAILED (or WAITING) with the message."""
