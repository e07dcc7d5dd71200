"""The T2 maps' motion check (inference/t2_motion.py) on fresh phantom studies and on made-up fits."""

from __future__ import annotations

import numpy as np
import pytest

from inference.t2_motion import THRESHOLD, detect_t2_motion, motion_probability
from phantom.model import SequenceKind
from tests.unit.inference.test_motion_model import default_aha_map, rank_auc
from training.phantom_slices import iter_cases

SEED = 4712  # below 100000: never used to calibrate the check
N_STUDIES = 24
MIN_IMAGE_AUC = 0.85  # calibration's held-out studies: 0.96
MIN_SEGMENT_AUC = 0.75  # 0.87 there: the check finds that a slice moved better than where


@pytest.fixture(scope="module")
def outcomes() -> list[tuple[dict[int, bool], object]]:
    cases = [case for case in iter_cases(SEED, N_STUDIES, motion_rate=0.5, workers=1)
             if case.sequence is SequenceKind.T2PREP]
    return [(case.motion_by_segment, detect_t2_motion(case.r2, default_aha_map(case)[0])) for case in cases]


def test_moving_t2_slices_score_above_still_ones(outcomes) -> None:
    labels = np.array([any(truth.values()) for truth, _ in outcomes])
    scores = np.array([result.whole_image_probability for _, result in outcomes])
    assert 8 <= labels.sum() <= len(labels) - 8, "too few slices of one kind for the test to mean anything"
    assert rank_auc(labels, scores) >= MIN_IMAGE_AUC


def test_moving_segments_score_above_still_ones(outcomes) -> None:
    labels, scores = [], []
    for truth, result in outcomes:
        for segment, moved in truth.items():
            if segment in result.segment_probabilities:
                labels.append(moved)
                scores.append(result.segment_probabilities[segment])
    assert rank_auc(np.array(labels), np.array(scores)) >= MIN_SEGMENT_AUC


def test_a_well_fitted_slice_has_no_motion_and_a_misfit_segment_has() -> None:
    segments = np.zeros((40, 40), dtype=np.uint8)
    segments[5:15, 5:35], segments[25:35, 5:35] = 7, 10
    still = detect_t2_motion(np.full((40, 40), 0.99, dtype=np.float32), segments)
    assert not still.has_motion and set(still.segment_probabilities) == {7, 10}
    r2 = np.full((40, 40), 0.99, dtype=np.float32)
    r2[25:35, 5:35] = 0.6
    moved = detect_t2_motion(r2, segments)
    assert moved.motion_segments == (10,) and moved.threshold == THRESHOLD
    assert moved.attention_maps[10][30, 20] == pytest.approx(0.4) and moved.attention_maps[10][10, 20] == 0.0


def test_the_probability_rises_with_the_misfit() -> None:
    assert motion_probability(0.0) < THRESHOLD < motion_probability(0.5)
    assert np.all(np.diff([motion_probability(m) for m in np.linspace(0, 1, 11)]) > 0)
