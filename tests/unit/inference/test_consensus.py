"""Tests of STAPLE, the average contour and the choice of reference, on hand-built masks and phantom readers."""

from __future__ import annotations

import numpy as np
import pytest

from inference.consensus import (
    ConsensusError,
    ConsensusMethod,
    ReferenceKind,
    average_contour_mask,
    consensus,
    staple,
)
from inference.errors import ShapeMismatchError
from phantom.anatomy import make_slice_anatomy
from phantom.model import FieldStrength, SliceLevel
from phantom.readers import dice, expert_contours


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def disc(shape: tuple[int, int], centre: tuple[float, float], radius_px: float) -> np.ndarray:
    rows, columns = np.indices(shape)
    return np.hypot(rows - centre[0], columns - centre[1]) <= radius_px


def symmetric_readers() -> tuple[np.ndarray, list[np.ndarray]]:
    """A 20x20 square truth; reader k misses its own 2x20 strip inside and adds its own 2x20 strip outside."""
    truth = square((40, 40), 10, 10, 20)
    readers = []
    for k in range(3):
        mask = truth.copy()
        mask[10 + 2 * k : 12 + 2 * k, 10:30] = False  # 40 false negatives
        mask[2 * k : 2 * k + 2, 10:30] = True  # 40 false positives, above the square
        readers.append(mask)
    return truth, readers


def test_identical_masks_give_that_mask_with_perfect_performance():
    mask = disc((48, 48), (20.0, 25.0), 9.0)
    result = staple([mask, mask, mask])
    np.testing.assert_array_equal(result.consensus_mask, mask)
    np.testing.assert_allclose(result.sensitivity, 1.0, atol=1e-6)
    np.testing.assert_allclose(result.specificity, 1.0, atol=1e-6)
    assert result.converged
    assert result.prior == pytest.approx(mask.mean())


def test_symmetric_readers_give_majority_vote_at_a_fixed_point_of_em():
    truth, readers = symmetric_readers()
    result = staple(readers, max_iterations=500, tolerance=1e-13)
    majority = np.sum(readers, axis=0) >= 2
    np.testing.assert_array_equal(majority, truth)
    np.testing.assert_array_equal(result.consensus_mask, majority)
    # Readers err alike, so they are rated alike.
    np.testing.assert_allclose(result.sensitivity, result.sensitivity[0], rtol=1e-9)
    np.testing.assert_allclose(result.specificity, result.specificity[0], rtol=1e-9)
    # At convergence the estimates satisfy the M step (Warfield et al. eq. 18-19) ...
    w = result.posterior
    for k, reader in enumerate(readers):
        assert result.sensitivity[k] == pytest.approx((w * reader).sum() / w.sum(), rel=1e-8)
        assert result.specificity[k] == pytest.approx(((1 - w) * ~reader).sum() / (1 - w).sum(), rel=1e-8)
    # ... and the E step: Bayes' rule at a pixel with two votes of three and one with one vote.
    p, q, f = result.sensitivity[0], result.specificity[0], result.prior
    assert f == pytest.approx(sum(r.sum() for r in readers) / (3 * truth.size))
    for pixel, votes in (((12, 20), 2), ((1, 20), 1)):
        fg = f * p**votes * (1 - p) ** (3 - votes)
        bg = (1 - f) * (1 - q) ** votes * q ** (3 - votes)
        assert w[pixel] == pytest.approx(fg / (fg + bg), rel=1e-8)


def test_a_poor_reader_is_outvoted_and_rated_poorly():
    truth = disc((64, 64), (32.0, 32.0), 14.0)
    poor = disc((64, 64), (36.0, 38.0), 10.0)
    result = staple([truth, truth, poor])
    np.testing.assert_array_equal(result.consensus_mask, truth)
    assert result.sensitivity[2] < 0.6 < result.sensitivity[0]


def test_matches_simpleitk_staple():
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(11)
    truth = disc((64, 64), (30.0, 34.0), 15.0)
    readers = [truth ^ (rng.random(truth.shape) < rate) for rate in (0.03, 0.08, 0.15)]
    result = staple(readers, max_iterations=200, tolerance=1e-10)
    staple_filter = sitk.STAPLEImageFilter()
    staple_filter.SetForegroundValue(1)
    staple_filter.SetMaximumIterations(200)
    posterior = sitk.GetArrayFromImage(
        staple_filter.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in readers])
    )
    np.testing.assert_allclose(result.sensitivity, staple_filter.GetSensitivity(), atol=1e-4)
    np.testing.assert_allclose(result.specificity, staple_filter.GetSpecificity(), atol=1e-4)
    np.testing.assert_allclose(result.posterior, posterior, atol=1e-4)


def test_staple_rejects_bad_input():
    mask = disc((32, 32), (16.0, 16.0), 6.0)
    with pytest.raises(ConsensusError, match="at least one"):
        staple([])
    with pytest.raises(ShapeMismatchError, match=r"\(30, 32\)"):
        staple([mask, mask[:30]])
    with pytest.raises(ConsensusError, match="prior"):
        staple([np.zeros((8, 8), bool)] * 2)
    with pytest.raises(ConsensusError, match="prior"):
        staple([mask], prior=1.5)


@pytest.mark.slow
def test_staple_of_experts_beats_the_median_expert():
    """Over 24 phantom slices, STAPLE of three experts is closer to the truth than the median expert."""
    wins = 0
    staple_dice, median_dice = [], []
    levels = list(SliceLevel)
    for index in range(24):
        seed = 7000 + index
        rng = np.random.default_rng(seed)
        field = FieldStrength.T1_5 if index % 2 == 0 else FieldStrength.T3
        anatomy = make_slice_anatomy(rng, levels[index % 3], field)
        experts = expert_contours(anatomy, rng, n_experts=3)
        truth = anatomy.myocardium_mask
        combined = staple([e.myocardium_mask for e in experts]).consensus_mask
        staple_dice.append(dice(combined, truth))
        median_dice.append(float(np.median([dice(e.myocardium_mask, truth) for e in experts])))
        wins += staple_dice[-1] > median_dice[-1]
    fraction = wins / 24
    assert fraction >= 0.7, f"STAPLE beat the median expert on {fraction:.0%} of slices"
    assert np.mean(staple_dice) > np.mean(median_dice) + 0.005, (np.mean(staple_dice), np.mean(median_dice))


def test_average_of_identical_masks_is_that_mask():
    mask = disc((40, 50), (20.0, 22.0), 8.0) & ~disc((40, 50), (20.0, 22.0), 4.0)
    np.testing.assert_array_equal(average_contour_mask([mask, mask], (1.4, 1.4)), mask)


def test_average_of_concentric_discs_has_the_mean_radius():
    shape = (101, 101)
    small = disc(shape, (50.0, 50.0), 20.0)
    large = disc(shape, (50.0, 50.0), 30.0)
    average = average_contour_mask([small, large], 1.5)
    radius_px = np.sqrt(average.sum() / np.pi)
    assert radius_px == pytest.approx(25.0, abs=0.5)
    # Anisotropic pixels: distances are in mm, so an ellipse in pixels is a circle in mm.
    rows, columns = np.indices(shape)
    ellipse = lambda r_mm: np.hypot((rows - 50) * 1.0, (columns - 50) * 2.0) <= r_mm  # noqa: E731
    average = average_contour_mask([ellipse(20.0), ellipse(40.0)], (1.0, 2.0))
    np.testing.assert_array_equal(average, ellipse(30.0) | (average & ellipse(30.5)))
    assert np.all(ellipse(29.0) <= average)


def test_average_rejects_empty_masks_and_bad_spacing():
    mask = disc((32, 32), (16.0, 16.0), 6.0)
    with pytest.raises(ConsensusError, match="both foreground"):
        average_contour_mask([mask, np.zeros_like(mask)], 1.0)
    with pytest.raises(ConsensusError, match="positive"):
        average_contour_mask([mask], (0.0, 1.4))


def test_staple_and_average_consensus_of_the_readers():
    truth, readers = symmetric_readers()
    result = consensus(readers, method=ConsensusMethod.STAPLE)
    assert result.reference is ReferenceKind.STAPLE
    np.testing.assert_array_equal(result.mask, truth)
    assert result.n_readers == 3 and result.staple is not None
    average = consensus(readers, method="average", pixel_spacing_mm=(1.3, 1.3))
    assert average.reference is ReferenceKind.AVERAGE
    assert dice(average.mask, truth) > 0.9


def test_consensus_rejects_bad_requests():
    truth, readers = symmetric_readers()
    with pytest.raises(ConsensusError, match="method"):
        consensus(readers, method="vote")
    with pytest.raises(ConsensusError, match="pixel_spacing_mm"):
        consensus(readers, method="average")
    with pytest.raises(ConsensusError, match="no readers"):
        consensus([], method="staple")
    with pytest.raises(ShapeMismatchError):
        consensus([readers[0], truth[:30]])
