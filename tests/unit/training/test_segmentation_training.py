"""Segmentation training pieces: the network's shapes, the augmented crops and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.segmentation import (
    TrainingConfig,
    augmented_batch,
    grid_dice,
    heart_boxes,
    segmentation_loss,
)
from training.unet import UNet


def _labels(n: int, size: int = 128) -> np.ndarray:
    rows, columns = np.mgrid[0:size, 0:size]
    labels = np.zeros((n, size, size), dtype=np.uint8)
    for index in range(n):
        centre_row, centre_column = 30 + 17 * index, 90 - 13 * index
        radius = np.hypot(rows - centre_row, columns - centre_column)
        labels[index][radius < 18] = 2
        labels[index][radius < 11] = 1
        labels[index][centre_row, centre_column + 19] = 2  # asymmetric, so a wrong turn shows
    return labels


def test_unet_keeps_the_grid_and_gives_class_logits() -> None:
    torch.manual_seed(100000)
    model = UNet(base_channels=4, levels=3).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 64, 48))
    assert out.shape == (2, 3, 64, 48)
    with pytest.raises(ValueError, match="levels"):
        UNet(levels=1)


def test_heart_boxes_bound_cavity_and_myocardium() -> None:
    labels = _labels(3)
    boxes = heart_boxes(labels)
    for label, (row_min, row_max, column_min, column_max) in zip(labels, boxes, strict=True):
        rows, columns = np.nonzero(label)
        assert (row_min, row_max, column_min, column_max) == (rows.min(), rows.max(), columns.min(), columns.max())


def test_augmented_crops_hold_the_whole_heart_and_move_map_and_labels_together() -> None:
    labels = _labels(4)
    maps = (labels * 0.5).astype(np.float16)  # the map mirrors the labels, so any mismatch shows
    config = TrainingConfig(crop_px=96, intensity_scale=0.0, intensity_shift=0.0)
    rng = np.random.default_rng(100001)
    seen_turns = set()
    for _ in range(10):
        inputs, target = augmented_batch(maps, labels, heart_boxes(labels), np.arange(4), config, rng)
        assert inputs.shape == (4, 1, 96, 96) and target.shape == (4, 96, 96)
        assert torch.equal(inputs[:, 0], target.float() * 0.5)
        for index in range(4):
            for label in (1, 2):
                assert int((target[index] == label).sum()) == int((labels[index] == label).sum())
        seen_turns.add(tuple(np.argwhere(target[0].numpy() == 2).mean(axis=0).round(1)))
    assert len(seen_turns) > 1  # the orientation changes


def test_loss_is_lowest_for_the_right_answer() -> None:
    target = torch.from_numpy(_labels(2)[:, :64, 64:].astype(np.int64))
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20.0
    wrong = right.roll(1, dims=1)
    assert float(segmentation_loss(right, target)) < 0.01
    assert float(segmentation_loss(wrong, target)) > 1.0


def test_grid_dice_counts_the_class_overlap() -> None:
    labels = np.zeros((2, 8, 8), dtype=np.uint8)
    labels[:, :4] = 2
    predicted = labels.copy()
    predicted[1, :2] = 0
    assert np.allclose(grid_dice(predicted, labels), [1.0, 2 * 16 / (16 + 32)])
