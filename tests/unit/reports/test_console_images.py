"""Console result images and their Secondary Captures: banner wording, what each image shows, rendering time, and
dciodvfy-clean RGB Secondary Captures that read back with the rendered pixels, on the node's MR map and on the
phantom's scanner maps (classic MR Image and Enhanced Parametric Map)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from config import load_settings
from dicomnode.analysis.labels import unit_label
from inference.aha import AhaLevel
from inference.mapping import MapKind, MappingScheme
from inference.motion import MotionResult
from inference.verdict import motion_text, segment_list
from phantom.model import Vendor
from reports.console_images import (
    ALERT,
    CAUTION,
    DOUBTFUL_COLOUR,
    ENDO_COLOUR,
    EPI_COLOUR,
    GOOD,
    MOTION_COLOUR,
    NEUTRAL,
    NO_SLICE_COLOUR,
    NOT_FOR_DIAGNOSIS,
    NOT_FOR_DIAGNOSTIC_USE,
    READER_COLOUR,
    REFERENCE_COLOUR,
    ConsoleImage,
    ConsoleLabel,
    StudyBullseye,
    StudyLevel,
    banner_text,
    labelled_banner,
    render_console_images,
    render_failure_image,
    render_reader_overlay,
    render_study_bullseye,
    study_verdict,
)
from reports.secondary_capture import build_secondary_capture, direction_letters
from tests.report_builders import (
    dciodvfy_errors,
    node_map_slices,
    phantom_map_slice,
)


@pytest.fixture(scope="module")
def slices() -> list:
    """Basal T1 with motion in segments 1, 4 and 5, mid T1 without, apical T1 without, mid T2."""
    return node_map_slices(motion_by_level={"basal": (5, 1, 4)}, with_t2=True)


def _count(rgb: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.count_nonzero(np.all(rgb == np.asarray(colour, dtype=np.uint8), axis=-1)))


def test_banner_texts(slices: list) -> None:
    basal, mid, _, mid_t2 = (analysis for _, analysis in slices)
    assert banner_text(basal) == "Motion artefact in segments 1, 4, 5 - consider repeating the breath-hold"
    motion = basal.motion
    assert motion is not None
    backwards = MotionResult(dict(reversed(motion.segment_probabilities.items())), motion.whole_image_probability,
                             motion.attention_maps, motion.threshold)
    assert banner_text(dataclasses.replace(basal, motion=backwards)) == banner_text(basal)
    single = MotionResult({s: (0.9 if s == 4 else 0.1) for s in motion.segment_probabilities}, 0.2,
                          motion.attention_maps, motion.threshold)
    assert banner_text(dataclasses.replace(basal, motion=single)) == \
        "Motion artefact in segment 4 - consider repeating the breath-hold"  # one segment: singular
    assert banner_text(mid) == "No motion artefact detected"
    assert banner_text(mid_t2) == "No motion check (no raw images)"  # a scanner T2 map without its T2-prep images
    assert banner_text(None, "no left-ventricular myocardium was found in the map") == \
        "Analysis not possible: no left-ventricular myocardium was found in the map"
    assert banner_text(mid, "the fit failed") == "Analysis not possible: the fit failed"
    assert dataclasses.replace(mid, motion=None).map_kind is MapKind.T1
    assert banner_text(dataclasses.replace(mid, motion=None)) == "No motion check (no raw images)"
    motion = mid.motion
    assert motion is not None
    only_whole_image = MotionResult(motion.segment_probabilities, 0.9, motion.attention_maps, motion.threshold)
    assert banner_text(dataclasses.replace(mid, motion=only_whole_image)) == \
        "Motion artefact in the image - consider repeating the breath-hold"
    with pytest.raises(ValueError):
        banner_text(None)


def test_images_of_a_slice_with_motion(slices: list) -> None:
    analysis = slices[0][1]
    images = render_console_images(analysis)
    assert [image.name for image in images] == ["map with contours", "AHA bullseye", "attention map"]
    for image in images:
        assert image.rgb.dtype == np.uint8 and image.rgb.ndim == 3 and image.rgb.shape[2] == 3
        assert image.rgb.shape[1] >= 512
        assert tuple(image.rgb[4, 4]) == ALERT  # the banner
        assert image.banner == banner_text(analysis)
    map_image, bullseye, attention = (image.rgb for image in images)
    assert _count(map_image, ENDO_COLOUR) > 200 and _count(map_image, EPI_COLOUR) > 200
    # Three motion segments of the basal ring are marked; none on the slice without motion.
    motion_pixels = _count(bullseye, MOTION_COLOUR)
    assert motion_pixels > 3 * 5000
    assert _count(render_console_images(slices[1][1])[1].rgb, MOTION_COLOUR) == 0
    one = dataclasses.replace(analysis.motion, segment_probabilities={
        s: (0.9 if s == 4 else 0.1) for s in analysis.motion.segment_probabilities})
    one_segment = _count(render_console_images(dataclasses.replace(analysis, motion=one))[1].rgb, MOTION_COLOUR)
    assert 2.5 < motion_pixels / one_segment < 3.5
    # The attention overlay is red to yellow where the model looked, and the map image has none of it.
    warm = (attention[..., 0] > 200) & (attention[..., 2] < 60) & (attention[..., 1] > 60)
    warm_in_map = (map_image[..., 0] > 200) & (map_image[..., 2] < 60) & (map_image[..., 1] > 60)
    assert np.count_nonzero(warm) > 500 > np.count_nonzero(warm_in_map)


def test_images_without_motion_and_of_t2(slices: list) -> None:
    mid, mid_t2 = slices[1][1], slices[3][1]
    images = render_console_images(mid)
    assert [image.name for image in images] == ["map with contours", "AHA bullseye"]
    assert tuple(images[0].rgb[4, 4]) == GOOD
    t2_images = render_console_images(mid_t2)
    assert [image.name for image in t2_images] == ["map with contours", "AHA bullseye"]
    assert tuple(t2_images[1].rgb[4, 4]) == NEUTRAL


def test_rendering_is_fast(slices: list) -> None:
    analysis = slices[0][1]
    render_console_images(analysis)  # fonts load once
    timings_ms = []
    for _ in range(5):
        started = time.perf_counter()
        render_console_images(analysis)
        timings_ms.append(1000.0 * (time.perf_counter() - started))
    # Aim: < 50 ms for the three images on a free core; the bound leaves room for a shared CI machine.
    assert min(timings_ms) < 150.0, timings_ms


def test_failure_and_reader_images(slices: list) -> None:
    analysis = slices[1][1]
    with_map = render_failure_image("no left-ventricular myocardium was found in the map", analysis.map_ms)
    without_map = render_failure_image("the series has only 2 images", None)
    for image in (with_map, without_map):
        assert tuple(image.rgb[4, 4]) == ALERT and image.rgb.shape[1] >= 512
    assert with_map.banner == "Analysis not possible: no left-ventricular myocardium was found in the map"
    assert with_map.rgb.shape[0] > without_map.rgb.shape[0]
    assert with_map.in_image_plane and not without_map.in_image_plane

    reference = analysis.segmentation.myocardium_mask
    reader = np.roll(reference, 3, axis=1)
    overlay = render_reader_overlay(analysis.map_ms, reader, reference, {"Dice": 0.78, "Hausdorff (mm)": 4.2},
                                    "trainee2", "consensus")
    assert overlay.banner == "trainee2 compared with consensus"
    assert _count(overlay.rgb, READER_COLOUR) > 300 and _count(overlay.rgb, REFERENCE_COLOUR) > 300
    with pytest.raises(ValueError):
        render_reader_overlay(analysis.map_ms, reader[:-1], reference, {}, "a", "b")


def test_direction_letters() -> None:
    assert direction_letters(np.array([1.0, 0.0, 0.0])) == "L"
    assert direction_letters(np.array([0.0, 0.0, -1.0])) == "F"
    assert direction_letters(np.array([0.6, 0.8, 0.0])) == "PL"
    assert direction_letters(np.array([-0.48, 0.36, -0.8])) == "FRP"


def _check_capture(image: ConsoleImage, source: pydicom.Dataset, path: Path,
                   series_description: str = "myomap T1 MOLLI mid SC") -> pydicom.Dataset:
    capture = build_secondary_capture(image, source, series_instance_uid=generate_uid(),
                                      sop_instance_uid=generate_uid(), series_number=1005, instance_number=1,
                                      series_description=series_description)
    assert dciodvfy_errors(capture, path) == []
    read = pydicom.dcmread(path)
    np.testing.assert_array_equal(read.pixel_array, image.rgb)
    assert read.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert read.PhotometricInterpretation == "RGB"
    assert read.ConversionType == "WSD"
    assert read.SeriesDescription == series_description
    assert read.ImageComments == image.banner
    assert read.StudyInstanceUID == source.StudyInstanceUID and read.PatientID == source.PatientID
    assert read.SeriesInstanceUID != source.SeriesInstanceUID
    assert read.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    return read


@pytest.mark.slow
def test_secondary_captures_of_the_node_map(slices: list, tmp_path: Path) -> None:
    source, analysis = slices[0]
    images = [*render_console_images(analysis), render_failure_image("the fit failed", analysis.map_ms),
              render_reader_overlay(analysis.map_ms, analysis.segmentation.myocardium_mask,
                                    analysis.segmentation.myocardium_mask, {"Dice": 1.0}, "expert1", "consensus")]
    for index, image in enumerate(images):
        read = _check_capture(image, source, tmp_path / f"sc{index}.dcm")
        if image.in_image_plane:
            assert list(read.PatientOrientation) == ["PL", "FRP"]  # the map's row and column directions
        else:
            assert not read.PatientOrientation  # the bullseye is not an image of the patient
    timings_ms = []
    for _ in range(3):
        started = time.perf_counter()
        build_secondary_capture(images[0], source, series_instance_uid=generate_uid(),
                                sop_instance_uid=generate_uid(), series_number=1005, instance_number=1)
        timings_ms.append(1000.0 * (time.perf_counter() - started))
    assert min(timings_ms) < 200.0, timings_ms


@pytest.mark.slow
@pytest.mark.parametrize("vendor", [Vendor.SIEMENS, Vendor.ENHANCED], ids=lambda v: v.value)
def test_secondary_captures_of_scanner_maps(vendor: Vendor, phantom_folders: dict[Vendor, Path],
                                            tmp_path: Path) -> None:
    source, analysis = phantom_map_slice(phantom_folders[vendor], motion_segments=(9, 10))
    images = render_console_images(analysis)
    assert images[0].banner == "Motion artefact in segments 9, 10 - consider repeating the breath-hold"
    for index, image in enumerate(images):
        read = _check_capture(image, source, tmp_path / f"sc{index}.dcm")
        assert read.PatientName == source.PatientName


def test_doubtful_contours_show_no_values_and_say_so(slices: list) -> None:
    """When the quality model doubts the contours the console must not show numbers as if they could be trusted."""
    basal, mid, _, _ = (analysis for _, analysis in slices)
    doubtful = dataclasses.replace(mid, quality=dataclasses.replace(mid.quality, predicted_dice=0.55))
    assert banner_text(doubtful) == "No motion artefact detected; automatic contours uncertain - check before use"
    moving = dataclasses.replace(basal, quality=dataclasses.replace(basal.quality, predicted_dice=0.55))
    assert banner_text(moving).startswith("Motion artefact in segments 1, 4, 5 - consider repeating the breath-hold;")
    trusted, uncertain = render_console_images(mid), render_console_images(doubtful)
    assert all(image.banner.endswith("automatic contours uncertain - check before use") for image in uncertain)
    # The banner is amber, not the green of a clean verdict; the images differ where the values were written.
    assert _count(uncertain[0].rgb, GOOD) == 0 and _count(trusted[0].rgb, GOOD) > 0
    for before, after in zip(trusted[:2], uncertain[:2], strict=True):
        assert before.rgb.shape != after.rgb.shape or not np.array_equal(before.rgb, after.rgb)


def test_an_implausible_contour_is_doubtful_whatever_the_predicted_dice(slices: list) -> None:
    """A plausibility doubt (inference/plausibility.py) alone makes the console withhold the values."""
    _, mid, _, _ = (analysis for _, analysis in slices)
    assert not mid.segmentation_doubtful
    implausible = dataclasses.replace(mid, quality=dataclasses.replace(
        mid.quality, predicted_dice=0.93, doubts=("mean wall thickness 2.1 mm is outside 3-20 mm",)))
    assert implausible.segmentation_doubtful
    assert banner_text(implausible) == "No motion artefact detected; automatic contours uncertain - check before use"
    trusted, uncertain = render_console_images(mid), render_console_images(implausible)
    assert _count(uncertain[0].rgb, GOOD) == 0 and _count(trusted[0].rgb, GOOD) > 0


# --- banners that name what they show ------------------------------------------------------------------------------


def test_segments_are_named_with_their_grammatical_number() -> None:
    assert segment_list([6]) == "segment 6"
    assert segment_list([10, 7, 7]) == "segments 7, 10"
    assert segment_list([]) == ""
    assert motion_text([6]) == "Motion artefact in segment 6 - consider repeating the breath-hold"
    assert motion_text([10, 7]) == "Motion artefact in segments 7, 10 - consider repeating the breath-hold"
    assert motion_text([]) == "Motion artefact in the image - consider repeating the breath-hold"


MOLLI_MID = ConsoleLabel(title="MOLLI 5(3)3, mid", source_line="T1 map, source series 12 (MOLLI_5(3)3_SAX_MID)")


def test_the_banner_names_sequence_and_level_before_the_verdict(slices: list) -> None:
    basal, mid, _, mid_t2 = (analysis for _, analysis in slices)
    motion = basal.motion
    two = dataclasses.replace(motion, segment_probabilities={
        s: (0.9 if s in (1, 4) else 0.1) for s in motion.segment_probabilities})
    labelled = render_console_images(dataclasses.replace(basal, motion=two), MOLLI_MID)
    assert {image.banner for image in labelled} == {
        "MOLLI 5(3)3, mid: motion artefact in segments 1, 4 - consider repeating the breath-hold"}
    one = dataclasses.replace(motion, segment_probabilities={
        s: (0.9 if s == 6 else 0.1) for s in motion.segment_probabilities})
    assert render_console_images(dataclasses.replace(basal, motion=one), MOLLI_MID)[0].banner == \
        "MOLLI 5(3)3, mid: motion artefact in segment 6 - consider repeating the breath-hold"
    assert render_console_images(mid, MOLLI_MID)[0].banner == "MOLLI 5(3)3, mid: no motion artefact detected"
    assert render_failure_image("the fit failed", None, MOLLI_MID).banner == \
        "MOLLI 5(3)3, mid: analysis not possible: the fit failed"
    assert labelled_banner("No motion check (no raw images)", None) == "No motion check (no raw images)"
    # The colours stay the verdict's: red for motion, green for none, grey without a check, amber when doubtful.
    assert tuple(labelled[0].rgb[4, 4]) == ALERT
    assert tuple(render_console_images(mid, MOLLI_MID)[0].rgb[4, 4]) == GOOD
    assert tuple(render_console_images(mid_t2, MOLLI_MID)[0].rgb[4, 4]) == NEUTRAL
    doubtful = dataclasses.replace(mid, quality=dataclasses.replace(mid.quality, predicted_dice=0.55))
    uncertain = render_console_images(doubtful, MOLLI_MID)
    assert tuple(uncertain[0].rgb[4, 4]) == CAUTION
    assert uncertain[0].banner == \
        "MOLLI 5(3)3, mid: no motion artefact detected; automatic contours uncertain - check before use"
    # The sub-line under the banner adds height: the labelled image is taller than the plain one.
    assert labelled[0].rgb.shape[0] > render_console_images(basal)[0].rgb.shape[0]


def test_not_for_diagnostic_use_line_only_where_the_site_says_so(slices: list) -> None:
    mid = slices[1][1]
    plain = render_console_images(mid, MOLLI_MID)
    marked = render_console_images(mid, dataclasses.replace(MOLLI_MID, not_for_diagnostic_use=True))
    assert _count(plain[0].rgb, NOT_FOR_DIAGNOSIS) == 0
    assert _count(marked[0].rgb, NOT_FOR_DIAGNOSIS) > 300 and _count(marked[1].rgb, NOT_FOR_DIAGNOSIS) > 300
    assert NOT_FOR_DIAGNOSTIC_USE == "Not for diagnostic use"
    assert load_settings().console.not_for_diagnostic_use is False  # off unless the site's configuration says so


def test_series_descriptions_name_the_unit_within_64_characters() -> None:
    label = unit_label(["MOLLI_5(3)3_SAX_MID", "MOLLI_5(3)3_SAX_MID_T1MAP"], kind=MapKind.T1,
                       scheme=MappingScheme.MOLLI, n_images=8, source_series_number=12)
    assert (label.sequence, label.title) == ("MOLLI 5(3)3", "MOLLI 5(3)3, mid")
    assert label.source_line == "T1 map, source series 12 (MOLLI_5(3)3_SAX_MID)"
    assert [label.series_description(s) for s in ("SC", "SR", "SEG", "T1MAP")] == [
        "myomap T1 MOLLI mid SC", "myomap T1 MOLLI mid SR", "myomap T1 MOLLI mid SEG", "myomap T1 MOLLI mid T1MAP"]
    shmolli = unit_label(["ShMOLLI_SAX_APICAL"], kind=MapKind.T1, scheme=MappingScheme.SHMOLLI, n_images=7,
                         source_series_number=33)
    assert shmolli.title == "ShMOLLI, apical" and shmolli.series_description("SC") == "myomap T1 ShMOLLI apical SC"
    t2 = unit_label(["T2prep_SAX_BASAL_T2MAP"], kind=MapKind.T2, scheme=None, n_images=None, source_series_number=11)
    assert t2.title == "T2-prep, basal" and t2.series_description("SR") == "myomap T2 T2-prep basal SR"
    by_count = unit_label(["T1 SAX"], kind=MapKind.T1, scheme=MappingScheme.MOLLI, n_images=9, source_series_number=5)
    assert by_count.title == "MOLLI 4(1)3(1)2, mid (assumed)"
    assert by_count.series_description("SC") == "myomap T1 MOLLI series 5 SC"  # no level named: the series is
    unnamed = unit_label(["cine"], kind=MapKind.T1, scheme=None, n_images=None, source_series_number=None)
    assert unnamed.title == "T1 map, mid (assumed)" and unnamed.series_description("SC") == "myomap T1 SC"
    long = unit_label(["MOLLI " + "x" * 80 + " MID"], kind=MapKind.T1, scheme=MappingScheme.MOLLI, n_images=8,
                      source_series_number=1)
    assert all(len(long.series_description(s)) <= 64 for s in ("SC", "float T1MAP"))
    assert long.series_description("float T1MAP").endswith(" float T1MAP")


# --- the study bullseye --------------------------------------------------------------------------------------------


def _study(**changes: object) -> StudyBullseye:
    levels = {
        AhaLevel.BASAL: StudyLevel(AhaLevel.BASAL, {s: 1000.0 + s for s in range(1, 7)}, True, (), False,
                                   source="series 3"),
        AhaLevel.MID: StudyLevel(AhaLevel.MID, {s: 1000.0 + s for s in range(7, 13)}, True, (7, 10), True,
                                 source="series 17"),
        AhaLevel.APICAL: StudyLevel(AhaLevel.APICAL, {s: 1000.0 + s for s in range(13, 17)}, True, (), False,
                                    doubtful=True, source="series 31"),
    }
    for level, change in changes.items():
        levels[AhaLevel(level)] = change  # type: ignore[assignment]
    return StudyBullseye("T1", "MOLLI 5(3)3", tuple(v for v in levels.values() if v is not None))


def test_study_bullseye_marks_motion_and_doubt_and_withholds_doubtful_values() -> None:
    study = _study()
    verdict, colour = study_verdict(study)
    assert verdict == ("Motion artefact in segments 7, 10 - consider repeating the breath-hold; "
                       "automatic contours uncertain - check before use (apical slice)")
    assert colour == ALERT
    image = render_study_bullseye(study)
    assert image.banner == f"Study bullseye, MOLLI 5(3)3: m{verdict[1:]}"
    assert tuple(image.rgb[4, 4]) == ALERT and image.rgb.shape[1] >= 512 and not image.in_image_plane
    motion_px, doubtful_px = _count(image.rgb, MOTION_COLOUR), _count(image.rgb, DOUBTFUL_COLOUR)
    assert motion_px > 2 * 3000 and doubtful_px > 4 * 3000
    # Without the doubt the apical ring holds values: the images differ, and no amber is left.
    trusted = render_study_bullseye(_study(apical=dataclasses.replace(study.levels[2], doubtful=False)))
    assert _count(trusted.rgb, DOUBTFUL_COLOUR) == 0
    # A level without a slice is dark grey and said so; a study without motion is green.
    still = _study(mid=None, apical=dataclasses.replace(study.levels[2], doubtful=False))
    assert study_verdict(still) == ("No motion artefact detected", GOOD)
    no_mid = render_study_bullseye(still)
    assert _count(no_mid.rgb, NO_SLICE_COLOUR) > 6 * 3000
    one = _study(mid=dataclasses.replace(study.levels[1], motion_segments=(8,)))
    assert study_verdict(one)[0].startswith("Motion artefact in segment 8 - ")
    unchecked = StudyBullseye("T2", "T2-prep", tuple(dataclasses.replace(level, motion_checked=False,
                                                                         motion_segments=(), whole_image_motion=False,
                                                                         doubtful=False)
                                                     for level in study.levels))
    assert study_verdict(unchecked) == ("No motion check (no raw images)", NEUTRAL)


@pytest.mark.slow
def test_study_bullseye_secondary_capture_passes_dciodvfy(slices: list, tmp_path: Path) -> None:
    source = slices[1][0]
    image = render_study_bullseye(dataclasses.replace(_study(), not_for_diagnostic_use=True))
    assert _count(image.rgb, NOT_FOR_DIAGNOSIS) > 300
    read = _check_capture(image, source, tmp_path / "study.dcm", "myomap T1 MOLLI study bullseye SC")
    assert not read.PatientOrientation
    Image.fromarray(image.rgb).save("/tmp/study_bullseye.png")


def test_a_series_description_longer_than_dicom_allows_is_refused(slices: list) -> None:
    source, analysis = slices[1]
    with pytest.raises(ValueError):
        build_secondary_capture(render_console_images(analysis)[0], source, series_instance_uid=generate_uid(),
                                sop_instance_uid=generate_uid(), series_number=1, instance_number=1,
                                series_description="x" * 65)
