"""Phantom training cases: what the models learn from agrees with the phantom's own truth."""

from __future__ import annotations

import numpy as np
import pytest

from inference.grids import CROP_SIZE, SEGMENTATION_SIZE
from training.datasets import MAX_IR_IMAGES, motion_image_stack, pack_case, segment_positions
from training.phantom_slices import CAVITY, MYOCARDIUM, study_cases


@pytest.fixture(scope="module")
def cases():
    return study_cases(seed=907, study_index=0, motion_rate=1.0)


def test_one_study_gives_every_level_and_sequence_with_consistent_truth(cases) -> None:
    assert len(cases) == 9
    assert {case.level.value for case in cases} == {"basal", "mid", "apical"}
    for case in cases:
        assert case.map_ms.shape == case.labels.shape == case.r2.shape == case.images.shape[1:]
        assert case.images.shape[0] == case.times_ms.size >= 3
        assert set(np.unique(case.aha_segments)) - {0} == set(case.segments)
        assert np.array_equal(case.aha_segments > 0, case.labels == MYOCARDIUM)
        assert set(case.motion_by_segment) == set(case.segments)
        assert case.reader_masks.shape == (7, *case.labels.shape)
        myocardium_t1 = np.median(case.map_ms[case.labels == MYOCARDIUM])
        blood_t1 = np.median(case.map_ms[case.labels == CAVITY])
        assert blood_t1 > myocardium_t1 > 0  # blood has the longer T1 and T2


def test_packing_puts_every_case_on_the_model_grids(cases) -> None:
    rng = np.random.default_rng(0)
    for case in cases:
        packed = pack_case(case, rng)
        assert packed["seg_map"].shape == (SEGMENTATION_SIZE, SEGMENTATION_SIZE)
        assert packed["crop_images"].shape == (MAX_IR_IMAGES, CROP_SIZE, CROP_SIZE)
        myocardium_fraction = (packed["crop_labels"] == MYOCARDIUM).mean()
        assert 0.02 < myocardium_fraction < 0.4  # the crop holds the whole LV
        assert (packed["seg_labels"] == MYOCARDIUM).sum() > 0
        assert set(np.unique(packed["crop_segments"])) - {0} == set(range(1, len(case.segments) + 1))
        expected_motion = [int(case.motion_by_segment[s]) for s in case.segments]
        assert list(packed["motion"][: len(case.segments)]) == expected_motion
        assert (packed["motion"][len(case.segments):] == -1).all()
        if not case.is_t1:
            assert not packed["crop_images"].any()


def test_image_stack_is_sorted_by_inversion_time_and_padded() -> None:
    images = np.arange(3)[:, None, None] * np.ones((3, 2, 2))
    stack = motion_image_stack(images, np.array([300.0, 100.0, 200.0]))
    assert stack.shape == (MAX_IR_IMAGES, 2, 2)
    assert [stack[i, 0, 0] for i in range(3)] == [1.0, 2.0, 0.0]
    assert not stack[3:].any()


def test_segment_positions_count_within_the_level() -> None:
    segments = np.array([[0, 1, 6], [7, 12, 13], [16, 0, 0]])
    assert segment_positions(segments).tolist() == [[0, 1, 6], [1, 6, 1], [4, 0, 0]]
