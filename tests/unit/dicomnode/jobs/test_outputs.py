"""The one output writer: UIDs from the job key, series numbers by output kind, durable files in the study's
outputs folder."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from dicomnode.jobs.outputs import ALGORITHM_VERSION, OutputSeries, OutputWriter, output_uid
from reports.map_mr import SOFTWARE_VERSION
from tests.dicom_builders import mr_image


def test_uids_derive_from_the_job_key_alone() -> None:
    first = OutputWriter("1.2.3/1/t1_map", Path("/a"), "9.8", 7)
    again = OutputWriter("1.2.3/1/t1_map", Path("/b"), "9.8", 7)
    other = OutputWriter("1.2.3/2/t1_map", Path("/a"), "9.8", 7)
    assert first.uid("mr", 0) == again.uid("mr", 0) == output_uid("1.2.3/1/t1_map", "mr", 0)
    assert first.uid("mr", 0) != other.uid("mr", 0) and first.uid("mr", 0) != first.uid("mr", 1)
    assert first.series_uid(OutputSeries.SR) == first.uid("sr-series")
    uid = first.uid("mr", 0)
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid[5:].isdigit()


def test_series_numbers_are_offsets_of_the_source_and_never_collide() -> None:
    writer = OutputWriter("k", Path("/a"), "9.8", 7)
    numbers = [writer.series_number(series) for series in OutputSeries]
    assert len(set(numbers)) == len(numbers) and all(number > 7 for number in numbers)
    assert writer.series_number(OutputSeries.MR_MAP) == 7 + OutputSeries.MR_MAP.number_offset
    assert len({series.label for series in OutputSeries}) == len(OutputSeries)


def test_write_puts_the_object_under_its_series_and_reads_back(tmp_path: Path) -> None:
    writer = OutputWriter("k", tmp_path, "1.2.826.0.1.5", 3)
    dataset: Dataset = mr_image()
    dataset.SeriesInstanceUID = writer.series_uid(OutputSeries.SECONDARY_CAPTURE)
    dataset.SOPInstanceUID = writer.uid("sc", 0, 0)
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID

    path = writer.write(dataset)

    assert path == tmp_path / "outputs" / "1.2.826.0.1.5" / dataset.SeriesInstanceUID / f"{dataset.SOPInstanceUID}.dcm"
    assert pydicom.dcmread(path).SOPInstanceUID == dataset.SOPInstanceUID
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_version_is_the_installed_one() -> None:
    assert ALGORITHM_VERSION == SOFTWARE_VERSION
