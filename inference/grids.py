"""The sampling grids the models see, and the way back to the image's own pixels.

Every model works on a square grid of fixed pixel size, so that one network serves the matrices and pixel
spacings scanners use (1.2-2.0 mm, 144-384 pixels):

- segmentation: 128 x 128 pixels of 1.25 mm (160 mm) centred on the image centre, where the operator puts the
  heart;
- the other models (consensus, motion, segmentation QC): 96 x 96 pixels of 1.25 mm (120 mm) centred on the LV
  centre that segmentation found.

Maps are normalised per image (robust percentiles), so the same network reads T1 and T2 maps, with or without
the scanner's bias correction. The model cards in docs/models.md state the same contract.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SEGMENTATION_SIZE = 128
CROP_SIZE = 96
GRID_SPACING_MM = 1.25
#: Percentiles of the map's values inside the grid that are scaled to 0 and 1.
NORMALISATION_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class Grid:
    """A square grid of ``size`` pixels of ``spacing_mm`` centred on ``centre_px`` of a source image.

    ``centre_px`` is (x, y) = (column, row) in source pixels; ``source_spacing_mm`` is (row spacing, column
    spacing) as in PixelSpacing.
    """

    centre_px: tuple[float, float]
    source_spacing_mm: tuple[float, float]
    size: int
    spacing_mm: float = GRID_SPACING_MM

    def source_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) in source pixels of the grid's rows and of its columns, each of shape (size,): the grid
        is aligned with the image's axes."""
        offsets_mm = (np.arange(self.size) - (self.size - 1) / 2.0) * self.spacing_mm
        return (self.centre_px[1] + offsets_mm / self.source_spacing_mm[0],
                self.centre_px[0] + offsets_mm / self.source_spacing_mm[1])

    def source_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) in source pixels of each grid pixel centre, each of shape (size, size)."""
        return np.meshgrid(*self.source_axes(), indexing="ij")

    def to_grid_px(self, points_px: np.ndarray) -> np.ndarray:
        """Source (x, y) points to grid (x, y) points."""
        points = np.asarray(points_px, dtype=np.float64)
        centre = (self.size - 1) / 2.0
        x = centre + (points[..., 0] - self.centre_px[0]) * self.source_spacing_mm[1] / self.spacing_mm
        y = centre + (points[..., 1] - self.centre_px[1]) * self.source_spacing_mm[0] / self.spacing_mm
        return np.stack([x, y], axis=-1)


def image_centre_grid(shape: tuple[int, int], pixel_spacing_mm: tuple[float, float],
                      size: int = SEGMENTATION_SIZE) -> Grid:
    """The segmentation grid: centred on the image."""
    rows, columns = shape
    return Grid(((columns - 1) / 2.0, (rows - 1) / 2.0), _spacing(pixel_spacing_mm), size)


def lv_grid(centre_px: tuple[float, float], pixel_spacing_mm: tuple[float, float] | float,
            size: int = CROP_SIZE) -> Grid:
    """The crop grid of the consensus, motion and QC models: centred on the LV centre (x, y)."""
    return Grid((float(centre_px[0]), float(centre_px[1])), _spacing(pixel_spacing_mm), size)


def finite_or_zero(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 with NaN and infinite pixels set to 0 (no pixel without a value reaches a model); the
    array itself, not a copy, when it is already float32 and finite: callers do not write to it."""
    array = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(array)
    return array if finite.all() else np.where(finite, array, np.float32(0.0))


def sample(image: np.ndarray, grid: Grid, *, order: int = 1) -> np.ndarray:
    """Resample a 2-D image (or a stack, leading axes kept) onto ``grid``; zero outside the image.

    ``order`` 1 is bilinear, 0 nearest; both as ``scipy.ndimage.map_coordinates`` with ``mode="constant"``.
    """
    values = np.asarray(image, dtype=np.float32)
    flat = values.reshape(-1, *values.shape[-2:])
    if order == 1 and min(flat.shape[-2:]) >= 2:
        axes = grid.source_axes()
        out = _bilinear(flat, *axes)
        # A pixel without a value that a sample used made it NaN (also at weight 0): sample again with those
        # pixels 0. Checked on the grid's samples rather than the whole image (a stack of large frames).
        if not np.isfinite(out).all():
            out = _bilinear(finite_or_zero(flat), *axes)
    else:
        flat = finite_or_zero(flat)
        coordinates = np.stack(grid.source_coordinates())
        out = np.stack([ndimage.map_coordinates(frame, coordinates, order=order, mode="constant", cval=0.0,
                                                prefilter=False) for frame in flat])
    return out.reshape(*values.shape[:-2], grid.size, grid.size)


def _bilinear(frames: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Bilinear samples of every frame (k, n, m) at the points (rows[i], columns[j]) of an axis-aligned grid, zero
    outside [0, n-1] x [0, m-1]: interpolated along the rows, then along the columns (the same weights as the 2-D
    formula, applied once per row and per column rather than at every point, for the whole stack at once)."""
    n, m = frames.shape[-2:]
    row0, row_weight, row_inside = _axis_weights(rows, n)
    column0, column_weight, column_inside = _axis_weights(columns, m)
    # Only the columns the samples read are interpolated along the rows (a small grid in a large matrix).
    first = int(column0.min())
    frames = frames[:, :, first:int(column0.max()) + 2]
    column0 = column0 - first
    along_rows = (frames[:, row0] * (1 - row_weight)[:, np.newaxis]
                  + frames[:, row0 + 1] * row_weight[:, np.newaxis])
    out = along_rows[:, :, column0] * (1 - column_weight) + along_rows[:, :, column0 + 1] * column_weight
    out *= row_inside[:, np.newaxis] & column_inside
    return out


def _axis_weights(positions: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per position along an axis of ``length`` pixels: the pixel below it, the weight of the pixel above (float32)
    and whether the position is inside [0, length - 1]."""
    below = np.clip(np.floor(positions).astype(np.intp), 0, length - 2)
    return below, (positions - below).astype(np.float32), (positions >= 0) & (positions <= length - 1)


def sample_mask(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """Resample a boolean mask onto ``grid`` (linear weights, then half)."""
    return sample(np.asarray(mask, dtype=np.float32), grid, order=1) >= 0.5


def to_source(grid_values: np.ndarray, grid: Grid, shape: tuple[int, int],
              box: tuple[slice, slice] | None = None) -> np.ndarray:
    """Resample values on ``grid`` (leading axes kept, e.g. class probabilities) back onto the source pixels;
    zero where the grid does not reach. With ``box`` (a window of the source image) only its pixels, in an array
    of its shape."""
    values = np.asarray(grid_values, dtype=np.float32)
    frames = values.reshape(-1, grid.size, grid.size)
    top, bottom = (0, shape[0]) if box is None else (box[0].start, box[0].stop)
    left, right = (0, shape[1]) if box is None else (box[1].start, box[1].stop)
    out = np.zeros((len(frames), bottom - top, right - left), dtype=np.float32)
    # Only the source pixels the grid covers are interpolated (the grid is small beside a large matrix).
    half_extent_mm = (grid.size / 2.0 + 1.0) * grid.spacing_mm
    row_range = _covered(grid.centre_px[1], half_extent_mm / grid.source_spacing_mm[0], (top, bottom))
    column_range = _covered(grid.centre_px[0], half_extent_mm / grid.source_spacing_mm[1], (left, right))
    if row_range is not None and column_range is not None:
        rows = np.arange(*row_range, dtype=np.float64)
        columns = np.arange(*column_range, dtype=np.float64)
        centre = (grid.size - 1) / 2.0
        grid_rows = centre + (rows - grid.centre_px[1]) * grid.source_spacing_mm[0] / grid.spacing_mm
        grid_columns = centre + (columns - grid.centre_px[0]) * grid.source_spacing_mm[1] / grid.spacing_mm
        out[:, row_range[0] - top:row_range[1] - top, column_range[0] - left:column_range[1] - left] = _bilinear(
            frames, grid_rows, grid_columns)
    return out.reshape(*values.shape[:-2], bottom - top, right - left)


def _covered(centre_px: float, half_extent_px: float, bounds: tuple[int, int]) -> tuple[int, int] | None:
    """The range of source pixels within ``half_extent_px`` of ``centre_px``, clipped to [start, stop)."""
    start = max(int(np.floor(centre_px - half_extent_px)), bounds[0])
    stop = min(int(np.ceil(centre_px + half_extent_px)) + 1, bounds[1])
    return (start, stop) if start < stop else None


def normalise_map(values: np.ndarray) -> np.ndarray:
    """Scale a map on its grid so that its 1st and 99th percentiles (of finite, non-zero pixels) become 0 and 1;
    clipped to [-0.5, 1.5]."""
    finite = finite_or_zero(values)
    selected = finite[finite != 0]
    if selected.size < 16:
        return np.zeros_like(finite)
    low, high = np.percentile(selected, NORMALISATION_PERCENTILES)
    scale = float(high - low) if high > low else 1.0
    return np.clip((finite - low) / scale, -0.5, 1.5).astype(np.float32)


def normalise_images(images: np.ndarray) -> np.ndarray:
    """Scale raw magnitude images (a stack on one grid) by their common 99th percentile."""
    stack = finite_or_zero(images)
    high = float(np.percentile(np.abs(stack), 99.0)) if stack.size else 0.0
    return (stack / high if high > 0 else stack).clip(-0.5, 2.0).astype(np.float32)


def mask_centre_px(mask: np.ndarray) -> tuple[float, float]:
    """Centroid (x, y) of a mask, in pixels."""
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("the mask is empty; it has no centre")
    return float(columns.mean()), float(rows.mean())


def _spacing(pixel_spacing_mm: tuple[float, float] | float) -> tuple[float, float]:
    if np.isscalar(pixel_spacing_mm):
        return (float(pixel_spacing_mm), float(pixel_spacing_mm))  # type: ignore[arg-type]
    row_mm, column_mm = pixel_spacing_mm  # type: ignore[misc]
    return (float(row_mm), float(column_mm))
