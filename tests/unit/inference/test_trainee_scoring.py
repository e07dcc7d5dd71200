"""Tests of trainee scoring and error-mode classification, on hand-built rings and phantom trainees."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import polygon2mask

from inference.errors import ShapeMismatchError
from inference.trainee_scoring import (
    ErrorMode,
    ScoringError,
    classify_error_mode,
    error_features,
    score_trainee,
)
from phantom import readers
from phantom.anatomy import make_slice_anatomy
from phantom.model import FieldStrength, SliceAnatomy, SliceLevel

SHAPE = (96, 96)
CENTRE = (48.0, 46.0)


def disc(radius_px: float, centre: tuple[float, float] = CENTRE) -> np.ndarray:
    rows, columns = np.indices(SHAPE)
    return np.hypot(rows - centre[0], columns - centre[1]) <= radius_px


def ring(inner_px: float, outer_px: float, centre: tuple[float, float] = CENTRE) -> tuple[np.ndarray, np.ndarray]:
    """(myocardium, cavity) of a circular ring."""
    cavity = disc(inner_px, centre)
    return disc(outer_px, centre) & ~cavity, cavity


def t1_map(myocardium: np.ndarray, cavity: np.ndarray) -> np.ndarray:
    """Blood 1600 ms, myocardium 1000 ms, everything else fat-like 300 ms."""
    map_ms = np.full(SHAPE, 300.0)
    map_ms[cavity] = 1600.0
    map_ms[myocardium] = 1000.0
    return map_ms


def reader_cavity(anatomy: SliceAnatomy, contour: readers.ReaderContour) -> np.ndarray:
    return polygon2mask(anatomy.label_map.shape, contour.endo_contour_px[:, ::-1])


def test_the_phantom_readers_draw_the_error_modes_the_node_scores():
    assert readers.ErrorMode is ErrorMode


def test_a_perfect_trainee_scores_perfectly():
    myocardium, cavity = ring(14.0, 22.0)
    map_ms = t1_map(myocardium, cavity)
    score = score_trainee(myocardium, cavity, myocardium, cavity, map_ms, (1.5, 1.5), reference_name="gold_standard")
    assert score.dice_myocardium == 1.0 and score.iou_myocardium == 1.0 and score.dice_cavity == 1.0
    assert score.hausdorff_mm == 0.0 and score.mean_surface_distance_mm == 0.0
    assert score.t1_difference_ms == 0.0 and score.wall_thickness_difference_mm == 0.0
    assert score.error_mode is ErrorMode.GOOD
    assert score.reference == "gold_standard"
    assert score.error_features["centroid_shift_mm"] == 0.0
    assert score.error_features["missed_wall_gap_deg"] == 0.0


def test_thicker_wall_and_its_t1_are_measured():
    reference_myo, reference_cavity = ring(14.0, 22.0)
    trainee_myo, trainee_cavity = ring(14.0, 25.0)  # 3 px thicker, into fat-like tissue
    map_ms = t1_map(reference_myo, reference_cavity)
    spacing = (1.5, 1.5)
    score = score_trainee(
        trainee_myo, trainee_cavity, reference_myo, reference_cavity, map_ms, spacing, reference_name="staple"
    )
    assert score.wall_thickness_difference_mm == pytest.approx(3 * 1.5, abs=0.3)
    # The trainee's mean mixes 1000 ms wall with 300 ms fat in proportion to the areas.
    added = trainee_myo & ~reference_myo
    expected = (reference_myo.sum() * 1000.0 + added.sum() * 300.0) / trainee_myo.sum() - 1000.0
    assert score.t1_difference_ms == pytest.approx(expected)
    assert score.hausdorff_mm == pytest.approx(3 * 1.5, abs=1.5)
    assert score.error_features["epi_offset_mm"] == pytest.approx(3 * 1.5, abs=0.5)
    assert score.error_features["added_outside_t1_position"] == pytest.approx((300 - 1000) / 600)
    assert score.error_mode is ErrorMode.EPICARDIAL_FAT


def test_a_translated_contour_is_shifted():
    reference_myo, reference_cavity = ring(14.0, 22.0)
    trainee_myo, trainee_cavity = ring(14.0, 22.0, centre=(CENTRE[0] + 2.0, CENTRE[1] - 2.0))
    features = error_features(
        trainee_myo, trainee_cavity, reference_myo, reference_cavity, t1_map(reference_myo, reference_cavity), 1.5
    )
    assert features["centroid_shift_mm"] == pytest.approx(np.hypot(2, 2) * 1.5, abs=0.1)
    assert features["shift_agreement"] > 0.99
    assert classify_error_mode(features) is ErrorMode.SHIFTED


def test_a_missing_sector_is_measured_in_degrees():
    reference_myo, reference_cavity = ring(14.0, 22.0)
    rows, columns = np.indices(SHAPE)
    angle_deg = np.degrees(np.arctan2(-(rows - CENTRE[0]), columns - CENTRE[1])) % 360.0
    trainee_myo = reference_myo & ~((angle_deg >= 30.0) & (angle_deg < 120.0))
    features = error_features(
        trainee_myo, reference_cavity, reference_myo, reference_cavity, t1_map(reference_myo, reference_cavity), 1.5
    )
    assert features["missed_wall_gap_deg"] == pytest.approx(90.0, abs=3.0)
    assert classify_error_mode(features) is ErrorMode.PART_MISSED


def test_bad_input_is_rejected():
    myocardium, cavity = ring(14.0, 22.0)
    map_ms = t1_map(myocardium, cavity)
    with pytest.raises(ShapeMismatchError, match="trainee_myocardium"):
        error_features(myocardium[:90], cavity, myocardium, cavity, map_ms, 1.5)
    with pytest.raises(ScoringError, match="trainee_cavity is empty"):
        error_features(myocardium, np.zeros_like(cavity), myocardium, cavity, map_ms, 1.5)
    with pytest.raises(ScoringError, match="positive"):
        error_features(myocardium, cavity, myocardium, cavity, map_ms, (1.5, -1.0))
    with pytest.raises(ScoringError, match="missing"):
        classify_error_mode({"centroid_shift_mm": 0.0})


def test_score_of_a_phantom_trainee_against_the_truth():
    rng = np.random.default_rng(4242)
    anatomy = make_slice_anatomy(rng, SliceLevel.MID, FieldStrength.T1_5)
    trainee = readers.trainee_with_mode(anatomy, rng, ErrorMode.BLOOD_POOL, skill=0.2)
    score = score_trainee(
        trainee.myocardium_mask,
        reader_cavity(anatomy, trainee),
        anatomy.myocardium_mask,
        anatomy.cavity_mask,
        anatomy.t1_ms,
        anatomy.geometry.pixel_spacing_mm,
        reference_name="truth",
    )
    assert 0.5 < score.dice_myocardium < 0.95
    assert score.iou_myocardium < score.dice_myocardium
    assert score.t1_difference_ms > 20.0  # blood (high T1) taken into the wall
    assert score.wall_thickness_difference_mm > 0.5
    # The blood-pool sector of this trainee crosses the papillary muscles, so part of what was added is muscle:
    # either name points the trainee at the endocardial border.
    assert score.error_mode in (ErrorMode.BLOOD_POOL, ErrorMode.PAPILLARY)
    assert score.error_features["endo_offset_mm"] < -1.0


def confusion_text(confusion: np.ndarray, modes: list[str]) -> str:
    header = "recorded \\ classified".ljust(22) + " ".join(f"{m[:8]:>8s}" for m in modes)
    lines = [header] + [f"{m:22s}" + " ".join(f"{v:8d}" for v in row) for m, row in zip(modes, confusion, strict=True)]
    return "\n".join(lines)


@pytest.mark.slow
def test_classifier_recovers_the_recorded_error_mode():
    """128 phantom trainees (16 slices x 8 modes, all levels, both fields, skill 0-0.8) scored against the truth."""
    modes = [m.value for m in ErrorMode]
    confusion = np.zeros((len(modes), len(modes)), dtype=int)
    levels = list(SliceLevel)
    for index in range(16):
        rng = np.random.default_rng(500 + index)
        field = FieldStrength.T1_5 if index % 2 == 0 else FieldStrength.T3
        anatomy = make_slice_anatomy(rng, levels[index % 3], field)
        for mode in ErrorMode:
            trainee = readers.trainee_with_mode(anatomy, rng, mode, skill=float(rng.uniform(0.0, 0.8)))
            features = error_features(
                trainee.myocardium_mask,
                reader_cavity(anatomy, trainee),
                anatomy.myocardium_mask,
                anatomy.cavity_mask,
                anatomy.t1_ms,
                anatomy.geometry.pixel_spacing_mm,
            )
            # The phantom records what it drew (a papillary error on a slice without papillary muscles is drawn
            # and recorded as blood pool).
            confusion[modes.index(trainee.error_mode), modes.index(classify_error_mode(features).value)] += 1
    accuracy = np.trace(confusion) / confusion.sum()
    assert confusion.sum() == 128
    assert accuracy >= 0.8, f"accuracy {accuracy:.1%}\n{confusion_text(confusion, modes)}"
