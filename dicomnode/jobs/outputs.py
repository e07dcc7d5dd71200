"""The one writer of the node's own DICOM objects: their UIDs, series numbers, files and the version they carry.

Every object a job produces (maps, Secondary Captures, SR, SEG, reader comparisons) is a new series of the source's
study, written under ``<storage>/outputs/<study>/<series>/<sop>.dcm`` by :func:`dicomnode.store.durable.
write_dataset_durably`. UIDs derive from the job key (:func:`output_uid`), so a job that runs again after a crash
rewrites the same objects instead of adding new ones. Series numbers are the source series' number plus the
offset of the output's kind (:class:`OutputSeries`), so that the node's series sort after the scanner's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmwrite

from dicomnode.jobs.storage_full import check_output_space
from dicomnode.store.durable import OUTPUTS_FOLDER, write_durably
from reports.map_mr import SOFTWARE_VERSION
from reports.uids import name_based_uid

#: The version written into every output (General Equipment, the SR's algorithm identification, result summaries).
ALGORITHM_VERSION = SOFTWARE_VERSION


class OutputSeries(Enum):
    """The series a job writes: the label its UIDs derive from and its series number offset."""

    MR_MAP = ("mr-series", 9000)
    SECONDARY_CAPTURE = ("sc-series", 9100)
    SR = ("sr-series", 9200)
    SEG = ("seg-series", 9300)
    PARAMETRIC_MAP = ("pm-series", 9500)
    READER_SR = ("reader-sr-series", 9600)
    READER_SECONDARY_CAPTURE = ("reader-sc-series", 9700)
    READER_PDF = ("reader-pdf-series", 9800)  # the trainee's progress report after a scored attempt

    def __init__(self, label: str, number_offset: int) -> None:
        self.label = label
        self.number_offset = number_offset


def output_uid(job_key: str, *labels: object) -> str:
    """A UID derived from the job key and ``labels``: a re-run of the job gives the same UID."""
    return name_based_uid("myomap-output", job_key, *labels)


@dataclass(frozen=True)
class OutputWriter:
    """Names and writes the outputs of one job.

    Parameters
    ----------
    job_key
        The job's unique key (``<series uid>/<revision>/<kind>[...]``): every UID derives from it.
    storage_root
        The node's storage folder.
    study_instance_uid
        The source's study: the outputs are new series of it.
    source_series_number
        The source series' number (0 when it has none): output series numbers are offsets from it.
    reserve_mb
        Free space (MB) every output leaves on the storage volume (``[storage] min_free_mb``, the watermark below
        which received instances are refused too); 0 for none.
    """

    job_key: str
    storage_root: Path
    study_instance_uid: str
    source_series_number: int
    reserve_mb: float = 0.0

    def uid(self, *labels: object) -> str:
        """A UID of this job's outputs (see :func:`output_uid`)."""
        return output_uid(self.job_key, *labels)

    def series_uid(self, series: OutputSeries) -> str:
        """The Series Instance UID of one of this job's output series."""
        return self.uid(series.label)

    def series_number(self, series: OutputSeries) -> int:
        """The Series Number of one of this job's output series."""
        return self.source_series_number + series.number_offset

    @property
    def folder(self) -> Path:
        """Where this job's outputs live: ``<storage>/outputs/<study>``."""
        return self.storage_root / OUTPUTS_FOLDER / self.study_instance_uid

    def write(self, dataset: Dataset) -> Path:
        """Write ``dataset`` durably under ``<folder>/<its series UID>/<its SOP UID>.dcm``; returns the path.

        Raises
        ------
        StorageFullError
            If the file would leave less than ``reserve_mb`` free, or the disk filled while writing.
        """
        path = self.folder / str(dataset.SeriesInstanceUID) / f"{dataset.SOPInstanceUID}.dcm"
        buffer = BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        data = buffer.getvalue()
        check_output_space(self.storage_root, reserve_mb=self.reserve_mb, size_bytes=len(data))
        write_durably(path, data, root=self.storage_root)
        return path
