"""What t1_protocol reads for the Bloch correction, and the note when the field strength is missing."""

from __future__ import annotations

import logging

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from dicomnode.io.series_loader import TimingKind, load_series
from dicomnode.io.t1_protocol import (
    ASSUMED_FIELD_STRENGTH_T,
    FIELD_STRENGTH_NOTE,
    field_strength_note,
    field_strength_t,
    t1_protocol,
)
from inference.mapping import MappingScheme
from inference.molli_correction import AssumedT2
from tests.dicom_builders import mr_image


def test_the_note_names_the_model_for_field_really_takes() -> None:
    assert FIELD_STRENGTH_NOTE == "field strength not in the header; T2 model assumed 1.5 T"
    assert AssumedT2.for_field(None) == AssumedT2.for_field(ASSUMED_FIELD_STRENGTH_T)
    assert AssumedT2.for_field(None) != AssumedT2.for_field(3.0)


@pytest.mark.parametrize(("value", "note"), [(None, FIELD_STRENGTH_NOTE), ("", FIELD_STRENGTH_NOTE),
                                             ("0", FIELD_STRENGTH_NOTE), ("1.5", None), ("3", None)])
def test_field_strength_note(value, note) -> None:
    ds = mr_image(inversion_time_ms=100.0)
    if value is not None:
        ds.MagneticFieldStrength = value
    assert field_strength_note(ds) == note


def test_field_strength_in_enhanced_functional_groups_and_in_gauss() -> None:
    shared = Dataset()
    item = Dataset()
    item.MagneticFieldStrength = 3.0  # not where the standard puts it, but where some writers do
    shared.MRImagingModifierSequence = DicomSequence([item])
    enhanced = Dataset()
    enhanced.SharedFunctionalGroupsSequence = DicomSequence([shared])
    assert field_strength_t(enhanced) == 3.0 and field_strength_note(enhanced) is None
    old_ge = mr_image()
    old_ge.MagneticFieldStrength = "15000"  # gauss
    assert field_strength_t(old_ge) == 1.5


def test_t1_protocol_logs_the_note_when_the_field_is_missing(caplog) -> None:
    datasets = []
    for index, ti in enumerate((100.0, 1100.0, 2100.0, 3100.0, 4100.0, 180.0, 1180.0, 2180.0)):
        ds = mr_image(inversion_time_ms=ti, instance_number=index + 1, series_uid="1.2.3.4", study_uid="1.2.3")
        ds.NominalInterval = "1000"
        datasets.append(ds)
    loaded = load_series(datasets, TimingKind.INVERSION)
    with caplog.at_level(logging.WARNING, logger="dicomnode.io.t1_protocol"):
        t1_protocol(loaded.slices[0], loaded, MappingScheme.MOLLI, None)
    assert FIELD_STRENGTH_NOTE in caplog.text
