"""Hole filling of 2-D masks as scipy's ``binary_fill_holes`` gives it, in one labelling of the mask's box.

``binary_fill_holes`` dilates the complement from the image border until it stops, a pass over the whole image per
pixel of the longest path; masks here are a small ring in a large matrix, run through it several times per slice.
Labelling the complement (4-connected, as binary_fill_holes) inside the mask's bounding box with a margin of one
pixel gives the same holes: outside the box every pixel is complement and reaches the image border, and so does
any complement component that reaches the box's edge.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def mask_window(mask: np.ndarray, margin: int = 1) -> tuple[slice, slice] | None:
    """The bounding box of ``mask``'s pixels, ``margin`` pixels wider on each side within the image; None when
    the mask is empty."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, mask.shape[0])),
            slice(max(int(columns[0]) - margin, 0), min(int(columns[-1]) + margin + 1, mask.shape[1])))


def enclosed(mask: np.ndarray) -> np.ndarray:
    """The pixels outside ``mask`` that it encloses: ``binary_fill_holes(mask) & ~mask`` for a 2-D mask."""
    mask = np.asarray(mask, dtype=bool)
    holes = np.zeros(mask.shape, dtype=bool)
    window = mask_window(mask)
    if window is not None:
        holes[window] = _enclosed_in(mask[window])
    return holes


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(mask)`` of a 2-D mask."""
    mask = np.asarray(mask, dtype=bool)
    return mask | enclosed(mask)


def _enclosed_in(mask: np.ndarray) -> np.ndarray:
    outside, _ = ndimage.label(~mask)
    edge = np.unique(np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]]))
    return (outside > 0) & ~np.isin(outside, edge)
