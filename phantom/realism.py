"""How close a phantom's images look to real ones: tissue intensities, edge sharpness and noise texture.

The reference is the Sunnybrook Cardiac Data (:mod:`phantom.sunnybrook`): real 1.5 T cine SSFP short-axis images
with expert contours. Those are cine images, not T1 maps, so only *normalised appearance* is compared: intensities
relative to the blood pool, the spread of each tissue, how sharp the endocardial border is and how the noise is
grained. Tissue contrast of a T1 map and of a cine image differ by physics (in both the blood pool is brighter than
the myocardium, but by other factors), which the table says; sharpness and texture come from image formation
(resolution, interpolation, partial volume, motion, noise) and compare directly.

The same regions and the same code serve both sides. The endocardial border is the boundary of the cavity mask
(the expert's endocardial polygon on Sunnybrook, the truth SEG's "Left ventricle cavity" on the phantom), smoothed
in polar form; the myocardium is the mask between the borders (Sunnybrook images with a usable epicardium only).

Per slice:

- **blood**: the cavity eroded by 2 mm; **myocardium**: the myocardial mask; **surroundings**: the ring 2-12 mm
  outside the epicardium. Intensities are divided by the median of the blood.
- **contrast**: median myocardium / median blood (and surroundings / blood); **CV**: robust coefficient of
  variation (1.4826 MAD / median) of each region.
- **edge 10-90 %**: along the outward normals of the endocardial border (every 3 deg), profiles from 5 mm inside to
  4 mm outside; each is scaled between its blood level (median 2.5-5 mm inside) and myocardial level (median
  1.5-3.5 mm outside), aligned at its own 50 % crossing and averaged; the distance (mm) between the 90 % and 10 %
  crossings of the mean profile. Profiles with less than 20 % contrast are left out. On Gaussian-blurred steps
  this reads within 15 % from about 2 to 4 mm; wider edges read short (their plateaus lie beyond the profile).
- **texture** of the blood pool (cavity eroded by 3 mm, local mean removed with a 4 mm Gaussian):
  autocorrelation at a lag of one pixel, correlation length (mm where the autocorrelation falls to 0.5, by linear
  interpolation between lags), and the fraction of the residual's power in the upper half of the image's own
  frequency band (max(|kx|, |ky|) > Nyquist / 2; 0.75 for white noise, near 0 after two-fold zero-filling).

A dataset is summarised by the median over its slices, and its pooled normalised intensities of each region are
compared with the reference by the Wasserstein-1 distance (in units of the blood median).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ParametricMapStorage
from rich.console import Console
from rich.table import Table
from scipy import ndimage
from scipy.stats import wasserstein_distance
from skimage.draw import polygon2mask
from skimage.measure import find_contours

from phantom.dicom_contours import CAVITY_LABEL, MYOCARDIUM_LABEL, read_seg_masks
from phantom.sidecar import MANIFEST_NAME, SIDECAR_NAME
from phantom.sunnybrook import SunnybrookError, load_sunnybrook

LOGGER = logging.getLogger(__name__)

BLOOD_EROSION_MM = 2.0
TEXTURE_EROSION_MM = 3.0
TEXTURE_SMOOTHING_MM = 4.0
SURROUNDINGS_MM = (2.0, 12.0)
PROFILE_RANGE_MM = (-5.0, 4.0)
PROFILE_STEP_MM = 0.25
PROFILE_ANGLE_STEP_DEG = 3.0
BLOOD_LEVEL_MM = (-5.0, -2.5)
MYOCARDIUM_LEVEL_MM = (1.5, 3.5)
MIN_EDGE_CONTRAST = 0.2
_MAX_POOLED_VALUES = 20000
_BORDER_ORDERS = 10  # Fourier orders kept of the polar endocardial border


class RealismError(ValueError):
    """A folder that holds no usable slice, or an image kind the comparison does not know."""


@dataclass(frozen=True)
class ImageRegions:
    """One image with its LV regions, ready to measure."""

    source: str  # what it is, for logs: "<patient> <instance>" or "<study>/<level>"
    pixels: np.ndarray  # (rows, columns) float64
    pixel_spacing_mm: tuple[float, float]
    cavity: np.ndarray  # bool, blood pool with papillary muscles and trabeculae
    myocardium: np.ndarray | None  # bool; None where no usable epicardium exists


@dataclass(frozen=True)
class SliceMeasures:
    """The measures of one image (NaN where a region is missing or too small)."""

    myocardium_contrast: float
    surroundings_contrast: float
    cv_blood: float
    cv_myocardium: float
    cv_surroundings: float
    edge_10_90_mm: float
    acf_lag1: float
    correlation_length_mm: float
    high_frequency_fraction: float
    values: dict[str, np.ndarray]  # normalised intensities per region: blood, myocardium, surroundings


MEASURE_NAMES: tuple[tuple[str, str], ...] = (
    ("myocardium_contrast", "myocardium / blood (median)"),
    ("surroundings_contrast", "surroundings / blood (median)"),
    ("cv_blood", "CV blood pool"),
    ("cv_myocardium", "CV myocardium"),
    ("cv_surroundings", "CV surroundings"),
    ("edge_10_90_mm", "endocardial edge 10-90 % (mm)"),
    ("acf_lag1", "blood texture: autocorrelation at 1 pixel"),
    ("correlation_length_mm", "blood texture: correlation length (mm)"),
    ("high_frequency_fraction", "blood texture: high-frequency power fraction"),
)
REGIONS = ("blood", "myocardium", "surroundings")


@dataclass(frozen=True)
class DatasetSummary:
    """Median measures of a dataset's slices and its pooled normalised intensities."""

    label: str
    n_slices: int
    n_myocardium_slices: int
    medians: dict[str, float]
    pooled: dict[str, np.ndarray] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "n_slices": self.n_slices,
            "n_myocardium_slices": self.n_myocardium_slices,
            "medians": {name: _finite_or_none(value) for name, value in self.medians.items()},
        }


@dataclass(frozen=True)
class RealismComparison:
    """Phantom datasets against the reference, with the histogram distances to it."""

    reference: DatasetSummary
    datasets: tuple[DatasetSummary, ...]
    image_kind: str
    distances: dict[str, dict[str, float]]  # dataset label -> region -> Wasserstein-1 distance to the reference

    def to_json(self) -> dict[str, Any]:
        return {
            "image_kind": self.image_kind,
            "reference": self.reference.to_json(),
            "datasets": [summary.to_json() for summary in self.datasets],
            "wasserstein_to_reference": {
                label: {region: _finite_or_none(value) for region, value in by_region.items()}
                for label, by_region in self.distances.items()
            },
            "note": REFERENCE_NOTE,
        }


REFERENCE_NOTE = (
    "Sunnybrook images are 1.5 T cine SSFP, not T1 maps: tissue contrast differs by physics; edge sharpness and "
    "noise texture come from image formation and compare directly."
)


# --- measures -------------------------------------------------------------------------------------------------


def measure(image: ImageRegions) -> SliceMeasures:
    """Every measure of one image (see the module docstring)."""
    pixels = np.asarray(image.pixels, dtype=np.float64)
    spacing = float(np.mean(image.pixel_spacing_mm))
    blood = ndimage.binary_erosion(image.cavity, _disk(BLOOD_EROSION_MM / spacing))
    nan = float("nan")
    if blood.sum() < 10:
        raise RealismError(f"{image.source}: the blood pool is too small to measure ({int(blood.sum())} pixels)")
    scale = float(np.median(pixels[blood]))
    if not scale > 0:
        raise RealismError(f"{image.source}: the blood pool has no signal (median {scale})")
    normalised = pixels / scale
    values = {"blood": normalised[blood]}
    contrast = surroundings_contrast = cv_myocardium = cv_surroundings = nan
    if image.myocardium is not None and image.myocardium.any():
        heart = image.cavity | image.myocardium
        outer = ndimage.binary_dilation(heart, _disk(SURROUNDINGS_MM[1] / spacing))
        inner = ndimage.binary_dilation(heart, _disk(SURROUNDINGS_MM[0] / spacing))
        surroundings = outer & ~inner
        values["myocardium"] = normalised[image.myocardium]
        values["surroundings"] = normalised[surroundings]
        contrast = float(np.median(values["myocardium"]))
        surroundings_contrast = float(np.median(values["surroundings"]))
        cv_myocardium = _robust_cv(values["myocardium"])
        cv_surroundings = _robust_cv(values["surroundings"])
    acf1, length, high = blood_texture(normalised, image.cavity, image.pixel_spacing_mm)
    return SliceMeasures(
        myocardium_contrast=contrast,
        surroundings_contrast=surroundings_contrast,
        cv_blood=_robust_cv(values["blood"]),
        cv_myocardium=cv_myocardium,
        cv_surroundings=cv_surroundings,
        edge_10_90_mm=edge_width_mm(normalised, image.cavity, image.pixel_spacing_mm),
        acf_lag1=acf1,
        correlation_length_mm=length,
        high_frequency_fraction=high,
        values=values,
    )


def endocardial_border_px(cavity: np.ndarray, *, orders: int = _BORDER_ORDERS) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed boundary of the cavity mask: (N, 2) (x, y) points every 3 deg and their outward unit normals."""
    contours = find_contours(np.pad(cavity.astype(np.float64), 1), 0.5)
    if not contours:
        raise RealismError("the cavity mask is empty")
    outline = max(contours, key=len)[:, ::-1] - 1.0  # (x, y), undo the padding
    centre = outline.mean(axis=0)
    offsets = outline - centre
    theta = np.arctan2(offsets[:, 1], offsets[:, 0])
    radius = np.hypot(offsets[:, 0], offsets[:, 1])
    order = np.argsort(theta)
    grid = np.radians(np.arange(0.0, 360.0, PROFILE_ANGLE_STEP_DEG)) - np.pi
    sampled = np.interp(grid, theta[order], radius[order], period=2 * np.pi)
    spectrum = np.fft.rfft(sampled)
    spectrum[orders + 1 :] = 0.0
    smooth = np.fft.irfft(spectrum, n=grid.size)
    points = centre + np.stack([smooth * np.cos(grid), smooth * np.sin(grid)], axis=1)
    tangent = np.roll(points, -1, axis=0) - np.roll(points, 1, axis=0)
    normals = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normals /= np.hypot(normals[:, 0], normals[:, 1])[:, None]
    outward = np.sign(np.sum(normals * (points - centre), axis=1))
    return points, normals * outward[:, None]


def edge_width_mm(normalised: np.ndarray, cavity: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> float:
    """10-90 % distance (mm) of the mean aligned endocardial profile (blood inside, myocardium outside)."""
    row_spacing, column_spacing = pixel_spacing_mm
    points, normals = endocardial_border_px(cavity)
    s_mm = np.arange(PROFILE_RANGE_MM[0], PROFILE_RANGE_MM[1] + 1e-9, PROFILE_STEP_MM)
    # Normals are in pixel axes; scale the step per axis so that s is in mm.
    direction_mm = normals * [column_spacing, row_spacing]
    direction_mm /= np.hypot(direction_mm[:, 0], direction_mm[:, 1])[:, None]
    x = points[:, None, 0] + s_mm[None, :] * direction_mm[:, None, 0] / column_spacing
    y = points[:, None, 1] + s_mm[None, :] * direction_mm[:, None, 1] / row_spacing
    profiles = ndimage.map_coordinates(normalised, [y.ravel(), x.ravel()], order=1, mode="nearest")
    profiles = profiles.reshape(x.shape)
    blood = np.median(profiles[:, (s_mm >= BLOOD_LEVEL_MM[0]) & (s_mm <= BLOOD_LEVEL_MM[1])], axis=1)
    myocardium = np.median(profiles[:, (s_mm >= MYOCARDIUM_LEVEL_MM[0]) & (s_mm <= MYOCARDIUM_LEVEL_MM[1])], axis=1)
    usable = (blood - myocardium) > MIN_EDGE_CONTRAST * np.abs(blood)
    if usable.sum() < 10:
        return float("nan")
    scaled = (profiles[usable] - myocardium[usable, None]) / (blood[usable] - myocardium[usable])[:, None]
    common = np.arange(-3.0, 3.0 + 1e-9, PROFILE_STEP_MM)
    aligned = []
    for profile in scaled:
        crossing = _crossing_nearest(s_mm, profile, 0.5, 0.0)
        if crossing is None or abs(crossing) > 2.5:
            continue
        aligned.append(np.interp(common + crossing, s_mm, profile))
    if len(aligned) < 10:
        return float("nan")
    mean = np.mean(aligned, axis=0)
    upper = _crossing_nearest(common, mean, 0.9, 0.0, side=-1)
    lower = _crossing_nearest(common, mean, 0.1, 0.0, side=1)
    if upper is None or lower is None:
        return float("nan")
    return float(lower - upper)


def blood_texture(normalised: np.ndarray, cavity: np.ndarray,
                  pixel_spacing_mm: tuple[float, float]) -> tuple[float, float, float]:
    """(autocorrelation at one pixel, correlation length in mm, high-frequency power fraction) of the blood pool."""
    spacing = float(np.mean(pixel_spacing_mm))
    region = ndimage.binary_erosion(cavity, _disk(TEXTURE_EROSION_MM / spacing))
    nan = float("nan")
    if region.sum() < 30:
        return nan, nan, nan
    sigma = TEXTURE_SMOOTHING_MM / spacing
    weight = ndimage.gaussian_filter(region.astype(np.float64), sigma)
    local = ndimage.gaussian_filter(np.where(region, normalised, 0.0), sigma) / np.maximum(weight, 1e-9)
    residual = np.where(region, normalised - local, 0.0)
    variance = float(np.sum(residual**2) / region.sum())
    if variance <= 0:
        return nan, nan, nan
    acf = [1.0]
    for lag in range(1, 6):
        pairs_x = region[:, lag:] & region[:, :-lag]
        pairs_y = region[lag:, :] & region[:-lag, :]
        products = np.sum((residual[:, lag:] * residual[:, :-lag])[pairs_x])
        products += np.sum((residual[lag:, :] * residual[:-lag, :])[pairs_y])
        count = int(pairs_x.sum() + pairs_y.sum())
        acf.append(float(products / count / variance) if count else nan)
    length = nan
    for lag in range(1, len(acf)):
        if acf[lag] <= 0.5:
            fraction = (acf[lag - 1] - 0.5) / (acf[lag - 1] - acf[lag])
            length = (lag - 1 + fraction) * spacing
            break
    power = np.abs(np.fft.fft2(residual)) ** 2
    ky = np.abs(np.fft.fftfreq(residual.shape[0]))[:, None]
    kx = np.abs(np.fft.fftfreq(residual.shape[1]))[None, :]
    high = np.maximum(kx, ky) > 0.25  # half of the Nyquist frequency (0.5 cycles per pixel)
    total = float(power.sum() - power[0, 0])
    fraction = float(power[high].sum() / total) if total > 0 else nan
    return acf[1], length, fraction


def _crossing_nearest(s: np.ndarray, profile: np.ndarray, level: float, near: float, *,
                      side: int = 0) -> float | None:
    """Position where ``profile`` crosses ``level`` nearest to ``near`` (side -1: at or below it, +1: above)."""
    above = profile >= level
    changes = np.nonzero(above[:-1] != above[1:])[0]
    if changes.size == 0:
        return None
    positions = []
    for index in changes:
        p0, p1 = profile[index], profile[index + 1]
        positions.append(s[index] + (level - p0) / (p1 - p0) * (s[index + 1] - s[index]))
    candidates = np.asarray(positions)
    if side < 0:
        candidates = candidates[candidates <= near + PROFILE_STEP_MM]
    elif side > 0:
        candidates = candidates[candidates >= near - PROFILE_STEP_MM]
    if candidates.size == 0:
        return None
    return float(candidates[np.argmin(np.abs(candidates - near))])


def _robust_cv(values: np.ndarray) -> float:
    if values.size < 5:
        return float("nan")
    median = float(np.median(values))
    if median == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - median)) / abs(median))


def _disk(radius_px: float) -> np.ndarray:
    radius = max(float(radius_px), 0.5)
    extent = int(np.ceil(radius))
    yy, xx = np.mgrid[-extent : extent + 1, -extent : extent + 1]
    return (xx**2 + yy**2) <= radius**2 + 1e-9


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


# --- datasets -------------------------------------------------------------------------------------------------


def summarise(label: str, images: Iterable[ImageRegions]) -> DatasetSummary:
    """Median measures over ``images`` and their pooled normalised intensities (images that fail are logged)."""
    measures: list[SliceMeasures] = []
    for image in images:
        try:
            measures.append(measure(image))
        except RealismError as error:
            LOGGER.warning("passed over: %s", error)
    if not measures:
        raise RealismError(f"{label}: no slice could be measured")
    medians = {}
    for name, _ in MEASURE_NAMES:
        column = np.array([getattr(item, name) for item in measures], dtype=np.float64)
        finite = column[np.isfinite(column)]
        medians[name] = float(np.median(finite)) if finite.size else float("nan")
    rng = np.random.default_rng(0)
    pooled = {}
    for region in REGIONS:
        parts = [item.values[region] for item in measures if region in item.values]
        if not parts:
            pooled[region] = np.zeros(0)
            continue
        joined = np.concatenate(parts)
        if joined.size > _MAX_POOLED_VALUES:
            joined = rng.choice(joined, _MAX_POOLED_VALUES, replace=False)
        pooled[region] = joined
    return DatasetSummary(
        label=label,
        n_slices=len(measures),
        n_myocardium_slices=sum("myocardium" in item.values for item in measures),
        medians=medians,
        pooled=pooled,
    )


def compare(reference: DatasetSummary, datasets: Sequence[DatasetSummary], image_kind: str) -> RealismComparison:
    """Histogram distances of every dataset's regions to the reference."""
    distances = {}
    for summary in datasets:
        by_region = {}
        for region in REGIONS:
            a, b = summary.pooled.get(region), reference.pooled.get(region)
            usable = a is not None and b is not None and a.size > 0 and b.size > 0
            by_region[region] = float(wasserstein_distance(a, b)) if usable else float("nan")
        distances[summary.label] = by_region
    return RealismComparison(reference, tuple(datasets), image_kind, distances)


def sunnybrook_regions(folder: Path | str) -> list[ImageRegions]:
    """Every contoured Sunnybrook image with its cavity and (where usable) myocardium masks."""
    try:
        slices = load_sunnybrook(folder)
    except SunnybrookError as error:
        raise RealismError(str(error)) from error
    regions = []
    for image in slices:
        shape = image.pixels.shape
        cavity = polygon2mask(shape, image.endo_px[:, ::-1])
        myocardium = None
        if image.epi_px is not None:
            myocardium = polygon2mask(shape, image.epi_px[:, ::-1]) & ~cavity
        regions.append(ImageRegions(f"{image.patient} {image.instance_number}", image.pixels,
                                    image.pixel_spacing_mm, cavity, myocardium))
    return regions


IMAGE_KINDS = ("map", "magnitude")


def phantom_regions(directory: Path | str, *, image_kind: str = "map") -> list[ImageRegions]:
    """The first T1 map (``map``) or its longest-TI raw magnitude image (``magnitude``) of every phantom slice,
    with the truth SEG's cavity and myocardium. Slices without an inversion-recovery sequence are passed over.

    Raises
    ------
    RealismError
        If ``image_kind`` is unknown or the folder holds no phantom slice.
    """
    if image_kind not in IMAGE_KINDS:
        raise RealismError(f"image kind must be one of {', '.join(IMAGE_KINDS)}, got {image_kind!r}")
    root = Path(directory)
    sidecars = sorted(root.rglob(SIDECAR_NAME))
    regions = []
    for sidecar_path in sidecars:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        if sidecar.get("study_kind") == "t1_vials":
            continue
        study = sidecar_path.parent.parent
        if not (study / MANIFEST_NAME).is_file():
            continue
        sequence = next((item for item in sidecar["sequences"] if item["scheme"]["inversion_times_ms"]), None)
        truth = next((entry for entry in sidecar["readers"] if entry["role"] == "truth"), None)
        if sequence is None or truth is None:
            continue
        masks = read_seg_masks(pydicom.dcmread(study / truth["seg"]["paths"][0]))
        series = sequence["series"]
        try:
            if image_kind == "map":
                pixels = read_map_values(pydicom.dcmread(study / series["map"]["paths"][0]))
            else:
                times = sequence["scheme"]["inversion_times_ms"]
                pixels = _magnitude_image(study, series, int(np.argmax(times)))
        except (KeyError, IndexError) as error:
            LOGGER.warning("%s: no plain %s series (%s); passed over", sidecar_path, image_kind, error)
            continue
        spacing = tuple(float(v) for v in sidecar["slice"]["pixel_spacing_mm"])
        regions.append(ImageRegions(
            f"{study.name}/{sidecar_path.parent.name}", pixels, (spacing[0], spacing[1]),
            masks[CAVITY_LABEL], masks[MYOCARDIUM_LABEL],
        ))
    if not regions:
        raise RealismError(f"no phantom heart slice with a T1 sequence under {root}")
    return regions


def read_map_values(ds: Dataset) -> np.ndarray:
    """A map's values (ms, or R2) whatever the vendor's encoding."""
    if ds.SOPClassUID == ParametricMapStorage:
        mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        pixels = ds.pixel_array.reshape(int(ds.Rows), int(ds.Columns)).astype(np.float64)
        return pixels * float(mapping.RealWorldValueSlope) + float(mapping.get("RealWorldValueIntercept", 0.0))
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    return ds.pixel_array.astype(np.float64) * slope + intercept


def _magnitude_image(study: Path, series: dict[str, Any], index: int) -> np.ndarray:
    """Image ``index`` (acquisition order) of the plain magnitude series: one file per image or one Enhanced file."""
    paths = series["magnitude"]["paths"]
    if series["magnitude"].get("image_components"):
        raise KeyError("mixed GE components")
    if len(paths) == 1:
        return pydicom.dcmread(study / paths[0]).pixel_array[index].astype(np.float64)
    return pydicom.dcmread(study / paths[index]).pixel_array.astype(np.float64)


def dataset_label(directory: Path | str) -> str:
    """``phantom v1`` / ``phantom v2`` from the folder's manifests (their ``anatomy`` key), else the folder name."""
    versions = set()
    for manifest in sorted(Path(directory).rglob(MANIFEST_NAME)):
        versions.add(json.loads(manifest.read_text(encoding="utf-8")).get("anatomy", "v1"))
    if len(versions) == 1:
        return f"phantom {versions.pop()}"
    return Path(directory).name


def default_sunnybrook_folder() -> Path | None:
    """$MYOMAP_SHARED_DATA/sunnybrook, else ``../shared/data/sunnybrook`` beside the checkout, else
    /work/shared/data/sunnybrook; None when none exists."""
    candidates = [Path(p) / "sunnybrook" for p in (os.environ.get("MYOMAP_SHARED_DATA"),) if p]
    candidates += [Path(__file__).resolve().parents[2] / "shared" / "data" / "sunnybrook",
                   Path("/work/shared/data/sunnybrook")]
    return next((candidate for candidate in candidates if (candidate / "link.csv").is_file()), None)


def compare_with_sunnybrook(directories: Sequence[Path | str], sunnybrook: Path | str, *,
                            image_kind: str = "map") -> RealismComparison:
    """Summaries of each phantom folder and of the Sunnybrook images, and their distances.

    Raises
    ------
    RealismError
        If a folder holds no usable slice or the Sunnybrook folder is not readable.
    """
    reference = summarise("Sunnybrook", sunnybrook_regions(sunnybrook))
    labels: list[str] = []
    summaries = []
    for directory in directories:
        label = dataset_label(directory)
        if label in labels:
            label = f"{label} ({Path(directory).name})"
        labels.append(label)
        summaries.append(summarise(label, phantom_regions(directory, image_kind=image_kind)))
    return compare(reference, summaries, image_kind)


def render_comparison(comparison: RealismComparison, console: Console | None = None) -> None:
    """Print the comparison as one table: a column per phantom folder, then Sunnybrook."""
    kind = "T1 map" if comparison.image_kind == "map" else "longest-TI magnitude image"
    table = Table(title=f"Realism: phantom {kind} vs Sunnybrook cine SSFP (medians over slices)",
                  caption=REFERENCE_NOTE)
    table.add_column("measure", justify="left")
    for summary in comparison.datasets:
        table.add_column(summary.label, justify="right")
    table.add_column(comparison.reference.label, justify="right")
    everything = (*comparison.datasets, comparison.reference)
    table.add_row("slices (with myocardium)", *(f"{s.n_slices} ({s.n_myocardium_slices})" for s in everything))
    for name, title in MEASURE_NAMES:
        table.add_row(title, *(_format(s.medians[name]) for s in everything))
    for region in REGIONS:
        cells = [_format(comparison.distances[s.label][region]) for s in comparison.datasets]
        table.add_row(f"Wasserstein-1 to Sunnybrook: {region}", *cells, "0")
    (console or Console(width=160)).print(table)


def _format(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "-"
