"""Simulated readers: expert agreement and trainee error modes."""

import itertools

import numpy as np
import pytest
from skimage.draw import polygon2mask

from inference.trainee_scoring import ErrorMode
from phantom.anatomy import make_heart_geometry, make_slice_anatomy
from phantom.model import FieldStrength, SliceLevel
from phantom.readers import (
    ReaderError,
    dice,
    expert_contours,
    myocardium_mask,
    trainee_contours,
    trainee_with_mode,
)


@pytest.fixture(scope="module")
def slices():
    out = []
    for seed in range(4):
        rng = np.random.default_rng(seed + 50)
        geometry = make_heart_geometry(rng)
        out += [make_slice_anatomy(rng, level, FieldStrength.T1_5, geometry=geometry) for level in SliceLevel]
    return out


def _area(anatomy, contour):
    return int(polygon2mask(anatomy.label_map.shape, contour[:, ::-1]).sum())


def test_expert_pairwise_dice_in_published_range(slices):
    scores = []
    for index, anatomy in enumerate(slices):
        experts = expert_contours(anatomy, np.random.default_rng(index), n_experts=3)
        assert [e.reader for e in experts] == ["expert1", "expert2", "expert3"]
        assert all(e.role == "expert" and e.error_mode is None for e in experts)
        scores += [dice(a.myocardium_mask, b.myocardium_mask) for a, b in itertools.combinations(experts, 2)]
    assert 0.88 <= np.mean(scores) <= 0.92


def test_reader_mask_is_the_rasterised_contours(slices):
    anatomy = slices[1]
    expert = expert_contours(anatomy, np.random.default_rng(1), n_experts=1)[0]
    expected = myocardium_mask(anatomy.label_map.shape, expert.endo_contour_px, expert.epi_contour_px)
    assert np.array_equal(expert.myocardium_mask, expected)


@pytest.mark.parametrize("level_index", [0, 1])  # basal and mid slices (papillary muscles present)
def test_each_error_mode_changes_the_mask_as_expected(slices, level_index):
    anatomy = slices[level_index]
    truth_endo, truth_epi = _area(anatomy, anatomy.endo_contour_px), _area(anatomy, anatomy.epi_contour_px)
    truth_mask = anatomy.myocardium_mask
    for seed in range(3):
        contours = {
            mode: trainee_with_mode(anatomy, np.random.default_rng(seed), mode, skill=0.2) for mode in ErrorMode
        }
        # The same seed gives the same base variability, so each mode is compared with the GOOD contour.
        good = contours[ErrorMode.GOOD]
        good_endo, good_epi = _area(anatomy, good.endo_contour_px), _area(anatomy, good.epi_contour_px)
        for mode, contour in contours.items():
            assert contour.error_mode == mode.value and contour.role == "trainee"
            assert contour.parameters["skill"] == 0.2
        fat = contours[ErrorMode.EPICARDIAL_FAT]
        assert _area(anatomy, fat.epi_contour_px) > good_epi and fat.parameters["mean_added_mm"] > 1.0
        blood = contours[ErrorMode.BLOOD_POOL]
        assert _area(anatomy, blood.endo_contour_px) < good_endo and blood.parameters["depth_mm"] > 1.5
        papillary = contours[ErrorMode.PAPILLARY]
        assert _area(anatomy, papillary.endo_contour_px) < good_endo
        assert papillary.parameters["papillary_sector_deg"] > 5
        missed = contours[ErrorMode.PART_MISSED]
        assert missed.myocardium_mask.sum() < good.myocardium_mask.sum()
        assert _area(anatomy, missed.endo_contour_px) == good_endo
        shifted = contours[ErrorMode.SHIFTED]
        assert dice(shifted.myocardium_mask, truth_mask) < dice(good.myocardium_mask, truth_mask)
        assert abs(_area(anatomy, shifted.epi_contour_px) - good_epi) < 0.1 * good_epi
        jagged = contours[ErrorMode.JAGGED]
        smooth = contours[ErrorMode.TOO_SMOOTH]

        def roughness(contour):
            radius = np.hypot(*(contour.endo_contour_px - np.array(anatomy.lv_centre_px)).T)
            return np.abs(np.diff(radius, 2)).mean()

        assert roughness(jagged) > 2 * roughness(good) > 2 * roughness(smooth)
        assert truth_endo > 0 and truth_epi > truth_endo


def test_trainee_skill_drives_error_rate_and_recorded_parameters(slices):
    anatomy = slices[4]
    novices = trainee_contours(anatomy, np.random.default_rng(0), n_trainees=60, skill=0.0)
    experts = trainee_contours(anatomy, np.random.default_rng(0), n_trainees=60, skill=1.0)
    good_novice = sum(c.error_mode == ErrorMode.GOOD.value for c in novices)
    good_expert = sum(c.error_mode == ErrorMode.GOOD.value for c in experts)
    assert good_novice < good_expert
    assert len({c.error_mode for c in novices}) >= 6
    assert all("sigma_mm" in c.parameters for c in novices)
    truth = anatomy.myocardium_mask
    assert np.mean([dice(c.myocardium_mask, truth) for c in novices]) < np.mean(
        [dice(c.myocardium_mask, truth) for c in experts]
    )
    with pytest.raises(ReaderError):
        trainee_contours(anatomy, np.random.default_rng(0), n_trainees=3, skill=1.5)


def test_papillary_mode_falls_back_at_apex(slices):
    apical = slices[2]
    contour = trainee_with_mode(apical, np.random.default_rng(0), ErrorMode.PAPILLARY)
    assert contour.error_mode == ErrorMode.BLOOD_POOL.value
