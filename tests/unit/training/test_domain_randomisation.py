"""Domain randomisation and geometric augmentation of the segmentation grids, and the partial-label loss."""

from __future__ import annotations

import numpy as np
import torch

from training.domain_randomisation import (
    BACKGROUND,
    CAVITY,
    MYOCARDIUM,
    NOT_CAVITY,
    AppearanceRange,
    intensity_classes,
    random_appearance,
    random_geometry,
    random_intensity,
    renormalise,
)
from training.segmentation import TrainingConfig, learning_rate, robust_batch, segmentation_loss


def _heart(size: int = 128, centre: tuple[float, float] = (60.0, 70.0)) -> np.ndarray:
    rows, columns = np.mgrid[0:size, 0:size]
    radius = np.hypot(rows - centre[0], columns - centre[1])
    labels = np.zeros((size, size), dtype=np.uint8)
    labels[radius < 22] = MYOCARDIUM
    labels[radius < 14] = CAVITY
    labels[(rows - centre[0] > 0) & (np.abs(columns - centre[1]) < 2) & (radius < 22) & (radius >= 14)] = BACKGROUND
    return labels


def test_geometry_moves_image_and_labels_together_and_changes_the_size() -> None:
    labels = _heart()
    image = labels.astype(np.float32) * 0.4 + 0.1  # the image mirrors the labels
    rng = np.random.default_rng(100010)
    areas = []
    for _ in range(12):
        warped, warped_labels = random_geometry(image, labels, rng)
        assert warped.shape == warped_labels.shape == labels.shape and warped_labels.dtype == np.uint8
        inside = warped > 0  # 0 only where the transform left the grid
        expected = warped_labels.astype(np.float32) * 0.4 + 0.1
        agree = np.isclose(warped, expected, atol=0.05)[inside]
        assert agree.mean() > 0.9  # bilinear image and nearest labels differ only along borders
        assert set(np.unique(warped_labels)) <= {BACKGROUND, CAVITY, MYOCARDIUM}
        areas.append(int((warped_labels > 0).sum()))
    assert max(areas) > 1.3 * min(areas)  # scale 0.7-1.4


def test_intensity_classes_split_the_background_by_quantile() -> None:
    labels = _heart()
    image = np.tile(np.linspace(0.0, 1.0, 128, dtype=np.float32), (128, 1))
    classes = intensity_classes(image, labels, 4)
    assert set(np.unique(classes[labels == BACKGROUND])) == {0, 1, 2, 3}
    assert (classes[labels == CAVITY] == 4).all() and (classes[labels == MYOCARDIUM] == 5).all()
    # Unknown pixels are treated as background.
    unknown = np.where(labels == MYOCARDIUM, NOT_CAVITY, labels).astype(np.uint8)
    assert intensity_classes(image, unknown, 4).max() == 4


def test_random_appearance_keeps_the_outside_zero_and_mostly_bright_blood() -> None:
    labels = _heart()
    image = np.where(labels == CAVITY, 1.0, np.where(labels == MYOCARDIUM, 0.3, 0.5)).astype(np.float32)
    image[:, :10] = 0.0  # outside the source image
    labels[:, :10] = BACKGROUND
    rng = np.random.default_rng(100011)
    brighter = []
    for _ in range(40):
        out = random_appearance(image, labels, rng)
        assert out.dtype == np.float32 and out.min() >= -0.5 and out.max() <= 1.5
        # Outside the source image the value is that of a map's missing pixels after normalise_map: one value,
        # at or below the image's own.
        assert np.ptp(out[:, :10]) == 0 and out[0, 0] <= np.percentile(out[:, 10:], 1) + 1e-6
        brighter.append(out[labels == CAVITY].mean() > out[labels == MYOCARDIUM].mean())
    assert 0.7 < np.mean(brighter) < 1.0  # reversed contrast occasionally


def test_random_appearance_can_be_fixed_to_blood_bright() -> None:
    labels = _heart()
    rng = np.random.default_rng(100012)
    ranges = AppearanceRange(reversed_polarity=0.0, noise_sd=(0.0, 0.0), blur_sigma_px=(0.0, 0.0))
    for _ in range(10):
        out = random_appearance(np.full(labels.shape, 0.5, np.float32), labels, rng, ranges)
        assert out[labels == CAVITY].mean() > out[labels == MYOCARDIUM].mean()


def test_random_intensity_and_renormalise_follow_the_grid_normalisation() -> None:
    rng = np.random.default_rng(100013)
    image = rng.uniform(0.0, 1.0, (128, 128)).astype(np.float32)
    image[:5] = 0.0
    out = random_intensity(image, rng)
    assert np.ptp(out[:5]) == 0 and out.min() >= -0.5 and out.max() <= 1.5
    values = renormalise(np.linspace(1.0, 101.0, 128 * 128, dtype=np.float32).reshape(128, 128))
    assert abs(np.percentile(values, 1)) < 0.01 and abs(np.percentile(values, 99) - 1.0) < 0.01
    assert not renormalise(np.zeros((8, 8), np.float32)).any()


def test_robust_batch_gives_crops_of_known_labels() -> None:
    labels = np.stack([_heart(), np.where(_heart() == MYOCARDIUM, NOT_CAVITY, _heart())]).astype(np.uint8)
    maps = (labels * 0.3).astype(np.float16)
    config = TrainingConfig(crop_px=96)
    inputs, target = robust_batch(maps, labels, np.array([0, 1, 0, 1]), config, np.random.default_rng(100014))
    assert inputs.shape == (4, 1, 96, 96) and target.shape == (4, 96, 96)
    assert torch.isfinite(inputs).all()
    assert (target[0] == CAVITY).any() and not (target[1] == MYOCARDIUM).any()


def test_unknown_pixels_count_as_background_or_myocardium() -> None:
    target = torch.from_numpy(np.where(_heart() == MYOCARDIUM, NOT_CAVITY, _heart())[None, :64, 40:104]
                              .astype(np.int64))
    as_myocardium = torch.nn.functional.one_hot(torch.where(target == NOT_CAVITY, MYOCARDIUM, target), 3)
    as_background = torch.nn.functional.one_hot(torch.where(target == NOT_CAVITY, BACKGROUND, target), 3)
    as_cavity = torch.nn.functional.one_hot(torch.where(target == NOT_CAVITY, CAVITY, target), 3)
    for right in (as_myocardium, as_background):
        assert float(segmentation_loss(right.permute(0, 3, 1, 2).float() * 20.0, target)) < 0.01
    assert float(segmentation_loss(as_cavity.permute(0, 3, 1, 2).float() * 20.0, target)) > 1.0


def test_the_learning_rate_warms_up_then_decays() -> None:
    assert learning_rate(0.0, 1.0) < 0.1 and learning_rate(0.1, 1.0) == 1.0
    assert learning_rate(0.55, 1.0) < 0.6 and abs(learning_rate(1.0, 1.0) - 0.01) < 1e-9
