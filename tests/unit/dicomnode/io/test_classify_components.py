"""Series roles when vendors mix magnitude, phase, real and imaginary images in one series."""

from __future__ import annotations

import pytest
from pydicom.sequence import Sequence as DicomSequence

from db.models import SeriesRole
from dicomnode.io.classify import classify, classify_series
from dicomnode.io.series_loader import GE_PRIVATE_CREATOR
from tests.dicom_builders import enhanced_mr, mr_image

GE_CODES = {"MAGNITUDE": 0, "PHASE": 1, "REAL": 2, "IMAGINARY": 3}
PHILIPS = {"MAGNITUDE": "M", "PHASE": "P", "REAL": "R", "IMAGINARY": "I"}


def _ge(component: str, *, t2_prep: bool = False):
    ds = mr_image(
        description="T2 prep SAX" if t2_prep else "MOLLI SAX Mid",
        manufacturer="GE MEDICAL SYSTEMS",
        image_type=("ORIGINAL", "PRIMARY", "OTHER"),
        inversion_time_ms=None if t2_prep else 180.0,
        image_comments="T2prep 25 ms" if t2_prep else None,
        sequence_name="FIESTA-IR",
    )
    ds.add_new((0x0043, 0x0010), "LO", GE_PRIVATE_CREATOR)
    ds.add_new((0x0043, 0x102F), "SS", GE_CODES[component])
    return ds


def _philips(component: str):
    marker = PHILIPS[component]
    return mr_image(
        description="sMOLLI SAX",
        manufacturer="Philips Medical Systems",
        image_type=("ORIGINAL", "PRIMARY", f"{marker}_FFE", marker, "FFE"),
        image_comments="TIeff 180 ms",
    )


@pytest.mark.parametrize("component", list(GE_CODES))
def test_one_ge_image_of_any_component_gives_the_raw_role(component: str) -> None:
    # GE writes every component into one series; the first instance to arrive may be a phase image.
    assert classify(_ge(component)) == SeriesRole.RAW_IR


def test_real_and_imaginary_images_alone_are_raw_not_phase() -> None:
    assert classify(_philips("REAL")) == SeriesRole.RAW_IR
    assert classify(_philips("IMAGINARY")) == SeriesRole.RAW_IR
    assert classify(_philips("PHASE")) == SeriesRole.RAW_IR_PHASE  # as before: ImageType says phase


@pytest.mark.parametrize("make", [_ge, _philips])
def test_series_holding_magnitude_among_other_components_is_raw(make) -> None:
    mixed = [make(component) for component in ("PHASE", "REAL", "IMAGINARY", "MAGNITUDE")]
    assert classify_series(mixed) == SeriesRole.RAW_IR
    assert classify_series(reversed(mixed)) == SeriesRole.RAW_IR


@pytest.mark.parametrize("make", [_ge, _philips])
def test_series_of_phase_images_only_keeps_the_phase_role(make) -> None:
    assert classify_series([make("PHASE"), make("PHASE")]) == SeriesRole.RAW_IR_PHASE


def test_t2_prep_mixed_and_phase_only_series() -> None:
    assert classify_series([_ge("PHASE", t2_prep=True), _ge("MAGNITUDE", t2_prep=True)]) == SeriesRole.T2_PREP
    assert classify_series([_ge("PHASE", t2_prep=True)]) == SeriesRole.T2_PREP_PHASE


def test_series_roles_that_are_not_raw_are_unchanged() -> None:
    siemens_phase = mr_image(image_type=("ORIGINAL", "PRIMARY", "P", "ND"), inversion_time_ms=260.0)
    assert classify(siemens_phase) == classify_series([siemens_phase]) == SeriesRole.RAW_IR_PHASE
    t1_map = mr_image(description="MOLLI_SAX_T1MAP", image_type=("DERIVED", "PRIMARY", "T1 MAP", "ND"))
    assert classify_series([t1_map]) == SeriesRole.T1_MAP
    with pytest.raises(ValueError, match="at least one"):
        classify_series([])


def test_enhanced_mr_with_magnitude_and_phase_frames_is_raw() -> None:
    ds = enhanced_mr(description="ShMOLLI SAX")
    ds.ComplexImageComponent = "MIXED"
    ds.PerFrameFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0].ComplexImageComponent = "PHASE"
    assert classify(ds) == SeriesRole.RAW_IR
    for group in ds.PerFrameFunctionalGroupsSequence:
        group.MRImageFrameTypeSequence = DicomSequence([group.MRImageFrameTypeSequence[0]])
        group.MRImageFrameTypeSequence[0].ComplexImageComponent = "PHASE"
    assert classify(ds) == SeriesRole.RAW_IR_PHASE


def test_instances_without_a_role_do_not_speak_for_the_series() -> None:
    colour = mr_image(description="MOLLI_SAX_T1MAP", image_type=("DERIVED", "PRIMARY", "T1 MAP", "ND", "COLOR"))
    colour.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture: OTHER on its own
    grey = mr_image(description="MOLLI_SAX_T1MAP", image_type=("DERIVED", "PRIMARY", "T1 MAP", "ND"))
    assert classify(colour) == SeriesRole.OTHER
    assert classify_series([colour, grey]) == SeriesRole.T1_MAP
    assert classify_series([colour]) == SeriesRole.OTHER
