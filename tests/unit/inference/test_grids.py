"""The models' sampling grids: resampling to the grid and back keeps geometry, masks and values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from inference.grids import (
    CROP_SIZE,
    GRID_SPACING_MM,
    SEGMENTATION_SIZE,
    image_centre_grid,
    lv_grid,
    mask_centre_px,
    normalise_images,
    normalise_map,
    sample,
    sample_mask,
    to_source,
)


def _disc(shape: tuple[int, int], centre_xy: tuple[float, float], radius_px: float) -> np.ndarray:
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]]
    return (columns - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2 <= radius_px**2


@pytest.mark.parametrize("spacing_mm", [(1.25, 1.25), (1.8, 1.8), (1.4, 1.6)])
def test_a_disc_keeps_its_size_in_mm_on_the_grid(spacing_mm: tuple[float, float]) -> None:
    shape = (200, 240)
    radius_mm = 30.0
    mask = np.zeros(shape, dtype=bool)
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]]
    mask[((columns - 130) * spacing_mm[1]) ** 2 + ((rows - 95) * spacing_mm[0]) ** 2 <= radius_mm**2] = True
    grid = lv_grid(mask_centre_px(mask), spacing_mm)
    on_grid = sample_mask(mask, grid)
    area_mm2 = on_grid.sum() * GRID_SPACING_MM**2
    assert area_mm2 == pytest.approx(np.pi * radius_mm**2, rel=0.03)
    centre = mask_centre_px(on_grid)
    assert centre == pytest.approx(((CROP_SIZE - 1) / 2, (CROP_SIZE - 1) / 2), abs=0.6)


def test_to_source_inverts_sample_where_the_grid_covers_the_image() -> None:
    shape = (144, 192)
    spacing = (1.5, 1.5)
    mask = _disc(shape, (100.0, 70.0), 14.0)
    grid = image_centre_grid(shape, spacing)
    assert grid.size == SEGMENTATION_SIZE
    back = to_source(sample(mask.astype(np.float32), grid), grid, shape) >= 0.5
    disagreement = np.logical_xor(back, mask).sum() / mask.sum()
    assert disagreement < 0.08
    stack = to_source(np.stack([sample(mask.astype(np.float32), grid)] * 3), grid, shape)
    assert stack.shape == (3, *shape)


def test_grid_points_map_back_to_source_points() -> None:
    grid = lv_grid((50.0, 60.0), (2.0, 2.0))
    centre = (CROP_SIZE - 1) / 2
    assert grid.to_grid_px(np.array([50.0, 60.0])) == pytest.approx([centre, centre])
    assert grid.to_grid_px(np.array([[51.0, 60.0]]))[0] == pytest.approx([centre + 2.0 / GRID_SPACING_MM, centre])


def test_normalisation_maps_percentiles_and_ignores_background() -> None:
    rng = np.random.default_rng(3)
    values = np.zeros((64, 64), dtype=np.float32)
    values[16:48, 16:48] = rng.uniform(800, 1600, size=(32, 32))
    scaled = normalise_map(values)
    inside = scaled[16:48, 16:48]
    assert np.percentile(inside, 1) == pytest.approx(0.0, abs=0.02)
    assert np.percentile(inside, 99) == pytest.approx(1.0, abs=0.02)
    # T2-sized values give the same picture: the models read both.
    np.testing.assert_allclose(normalise_map(values / 25.0), scaled, atol=1e-4)
    assert not normalise_map(np.zeros((8, 8))).any()
    images = normalise_images(np.stack([values, 2 * values]))
    assert np.percentile(np.abs(images), 99) == pytest.approx(1.0, abs=0.01)


def test_an_empty_mask_has_no_centre() -> None:
    with pytest.raises(ValueError, match="empty"):
        mask_centre_px(np.zeros((4, 4), dtype=bool))


@pytest.mark.parametrize("centre_px", [(110.3, 120.7), (3.0, 5.0), (215.0, 250.2), (-40.0, 20.0)])
def test_bilinear_sampling_of_a_stack_equals_map_coordinates_frame_by_frame(centre_px) -> None:
    stack = np.random.default_rng(3).random((4, 256, 218)).astype(np.float32)
    stack[0, 10, 10] = np.nan  # NaN reads as 0, as the maps' invalid pixels do
    grid = lv_grid(centre_px, (1.4, 1.3))
    rows, columns = grid.source_coordinates()
    expected = np.stack([ndimage.map_coordinates(np.nan_to_num(frame), np.stack([rows, columns]), order=1,
                                                 mode="constant", cval=0.0, prefilter=False) for frame in stack])
    sampled = sample(stack, grid)
    assert sampled.shape == (4, grid.size, grid.size)
    np.testing.assert_allclose(sampled, expected, atol=1e-6)
    np.testing.assert_allclose(sample(stack[1], grid), expected[1], atol=1e-6)


def test_back_to_the_source_equals_map_coordinates_over_the_covered_pixels() -> None:
    grid = lv_grid((60.5, 70.2), (1.6, 1.5))
    probabilities = np.random.default_rng(4).random((3, grid.size, grid.size)).astype(np.float32)
    shape = (150, 140)
    back = to_source(probabilities, grid, shape)
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    centre = (grid.size - 1) / 2.0
    coordinates = np.stack([centre + (rows - 70.2) * 1.6 / grid.spacing_mm,
                            centre + (columns - 60.5) * 1.5 / grid.spacing_mm])
    expected = np.stack([ndimage.map_coordinates(frame, coordinates, order=1, mode="constant", cval=0.0,
                                                 prefilter=False) for frame in probabilities])
    np.testing.assert_allclose(back, expected, atol=1e-6)
