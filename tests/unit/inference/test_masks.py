"""Hole filling in the mask's box is scipy's binary_fill_holes, also for masks that reach the image's edge."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from inference.masks import enclosed, fill_holes, mask_window


def test_fill_holes_is_binary_fill_holes_on_random_masks_rings_and_edges() -> None:
    rng = np.random.default_rng(7)
    for case in range(600):
        shape = tuple(int(n) for n in rng.integers(1, 30, 2))
        mask = rng.random(shape) < rng.random()
        if case % 3 == 0:  # thin rings and loops, the masks that have holes
            mask = ndimage.binary_dilation(mask) ^ mask
        expected = ndimage.binary_fill_holes(mask)
        assert np.array_equal(fill_holes(mask), expected), case
        assert np.array_equal(enclosed(mask), expected & ~mask), case


def test_a_ring_in_a_large_image_and_a_ring_cut_by_the_edge() -> None:
    image = np.zeros((200, 300), dtype=bool)
    rows, columns = np.ogrid[:200, :300]
    radius = np.hypot(rows - 100, columns - 150)
    image[(radius >= 10) & (radius < 14)] = True
    assert np.count_nonzero(enclosed(image)) == np.count_nonzero(radius < 10)
    cut = image[:, :150]  # the ring reaches the image's edge: open, nothing enclosed
    assert not enclosed(cut).any()
    assert mask_window(np.zeros((4, 4), dtype=bool)) is None
    assert mask_window(image) == (slice(86, 115), slice(136, 165))
