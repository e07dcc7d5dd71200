"""The motion model's operating point (training/motion.py): chosen for few false red banners."""

from __future__ import annotations

import numpy as np
import pytest

from training.motion import image_scores, specific_threshold


def test_the_threshold_keeps_the_wanted_share_of_motion_free_slices_below_it() -> None:
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(400, dtype=bool), np.ones(100, dtype=bool)]
    scores = np.r_[rng.beta(2, 8, 400), rng.beta(8, 2, 100)]
    threshold = specific_threshold(labels, scores, 0.95)
    specificity = (scores[~labels] < threshold).mean()
    assert 0.95 <= specificity < 0.95 + 2 / 400  # the lowest threshold that reaches it, not a safe high one
    assert specific_threshold(labels, scores, 0.99) > threshold


def test_all_negatives_below_when_asked_for_full_specificity() -> None:
    labels = np.array([False, False, False, True])
    scores = np.array([0.1, 0.3, 0.2, 0.9])
    threshold = specific_threshold(labels, scores, 1.0)
    assert 0.3 < threshold < 0.9


def test_a_slice_is_judged_by_its_highest_segment_or_the_whole_image() -> None:
    predicted = {"segment": np.array([[0.1, 0.7, 0.2, 0.1, 0.9, 0.9], [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]),
                 "whole": np.array([0.3, 0.6])}
    motion = np.array([[0, 1, 0, 0, -1, -1], [0, 0, 0, 0, 0, 0]])  # apical: positions 5-6 do not exist
    assert image_scores(predicted, motion) == pytest.approx([0.7, 0.6])


def test_no_motion_free_slices_no_operating_point() -> None:
    with pytest.raises(ValueError, match="no negative"):
        specific_threshold(np.ones(3, dtype=bool), np.array([0.2, 0.5, 0.9]), 0.95)
