"""Which map of a slice the node reports, and how its other maps compare with it.

A slice may have the scanner's own map, the node's reconstruction from the raw images, or both. The reported
values come from the scanner's map when there is one: sites' normal ranges were made with it. The node's
reconstruction is then a cross-check, summarised as the median difference (%) in the myocardium.

Without a scanner map the node reports its own reconstruction. For T1 that has two estimates: the plain fit, which
is what the vendor's MOLLI/ShMOLLI map would show ("scanner-comparable"), and the Bloch-corrected estimate, closer
to the true T1 and some 8-15 % higher in vivo. ``[mapping] report_t1`` chooses the primary one; the other is a
second, labelled measurement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.analysis.fitting import fit_slice
from dicomnode.io.unit_loader import UnitSlice
from inference.mapping import MapKind, MappingResult, T1Correction
from inference.slice_analysis import RawImages, SliceAnalysis
from reports.result_summary import CrossCheckFigures, SecondMeasurement, SliceFigures, rounded
from reports.sr_measurement import SliceComparison

SCANNER_MAP = "scanner map"
#: Fewer myocardial pixels valid in both maps than this give no cross-check figure.
MIN_CROSS_CHECK_PIXELS = 20


@dataclass(frozen=True)
class SliceMaps:
    """The maps of one slice as the node reports them.

    Attributes
    ----------
    primary_ms
        The reported map, NaN where it holds no value.
    source
        Where it comes from: :data:`SCANNER_MAP` or the node's reconstruction method and estimate.
    second_ms, second_label
        The other T1 estimate of the node (see the module), or None.
    cross_check_ms, cross_check_label
        The node's reconstruction compared with the scanner's map, or None.
    """

    primary_ms: np.ndarray
    source: str
    second_ms: np.ndarray | None = None
    second_label: str | None = None
    cross_check_ms: np.ndarray | None = None
    cross_check_label: str | None = None


def node_estimates(fit: MappingResult) -> tuple[tuple[np.ndarray, str], tuple[np.ndarray, str] | None]:
    """The node's scanner-comparable and corrected T1 (or its T2 and None), each NaN where not valid, labelled."""
    valid = np.asarray(fit.valid, dtype=bool)
    if fit.kind is MapKind.T2 or fit.plain_map_ms is None:
        return (_masked(fit.map_ms, valid), f"node reconstruction ({fit.method})"), None
    plain = (_masked(fit.plain_map_ms, valid), "node reconstruction, scanner-comparable (plain fit)")
    if fit.correction is T1Correction.BLOCH:
        return plain, (_masked(fit.map_ms, valid), "node reconstruction, Bloch-corrected")
    return plain, None


def choose_maps(scanner_ms: np.ndarray | None, fit: MappingResult | None, *, report_t1: str) -> SliceMaps:
    """The reported map of a slice and its companions (see the module).

    Parameters
    ----------
    scanner_ms
        The scanner's map of the slice (NaN where it has no value), or None.
    fit
        The node's reconstruction from the slice's raw images, or None; used only when on the scanner map's grid.
    report_t1
        ``"scanner"`` or ``"corrected"``: the primary T1 of a reconstruction.
    """
    if scanner_ms is None and fit is None:
        raise ValueError("a slice needs a scanner map or raw images")
    if scanner_ms is not None:
        if fit is None or np.shape(fit.map_ms) != np.shape(scanner_ms):
            return SliceMaps(scanner_ms, SCANNER_MAP)
        (plain, plain_label), corrected = node_estimates(fit)
        second = corrected if corrected is not None else (None, None)
        return SliceMaps(scanner_ms, SCANNER_MAP, second[0], second[1], plain, plain_label)
    assert fit is not None
    (plain, plain_label), corrected = node_estimates(fit)
    if corrected is None:
        return SliceMaps(plain, plain_label)
    if report_t1 == "corrected":
        return SliceMaps(corrected[0], corrected[1], plain, plain_label)
    return SliceMaps(plain, plain_label, corrected[0], corrected[1])


@dataclass(frozen=True)
class PreparedSlice:
    """One slice of a unit ready for the models: its maps, the node's fit, the raw images for motion detection."""

    unit_slice: UnitSlice
    kind: MapKind
    maps: SliceMaps
    fit: MappingResult | None  # the node's reconstruction, when the unit has raw images of the slice
    raw: RawImages | None  # raw images (IR or T2-prep) on the reported map's grid, with the fit's R2
    pixel_spacing_mm: tuple[float, float]
    notes: tuple[str, ...]


def prepare_slice(item: UnitSlice, kind: MapKind, *, report_t1: str) -> PreparedSlice:
    """Fit the slice's raw images (when there are any) and choose the reported map, as the node and
    ``myomap analyze`` both do."""
    notes = list(item.notes)
    fit = fit_slice(item.raw, item.stack) if item.raw is not None and item.stack is not None else None
    scanner = item.scanner_map
    if scanner is not None and fit is not None and np.shape(fit.map_ms) != np.shape(scanner.map_ms):
        notes.append("the raw images have another matrix than the scanner's map: no cross-check, no motion check")
    maps = choose_maps(scanner.map_ms if scanner is not None else None, fit, report_t1=report_t1)
    raw = None
    if fit is not None and item.stack is not None and np.shape(fit.map_ms) == np.shape(maps.primary_ms):
        raw = RawImages(item.stack.images, item.stack.times_ms, np.nan_to_num(fit.r2).astype(np.float32))
    if scanner is not None:
        spacing = scanner.pixel_spacing_mm
    else:
        assert item.stack is not None  # a unit slice has a scanner map or raw images
        spacing = item.stack.pixel_spacing_mm
    return PreparedSlice(item, kind, maps, fit, raw, spacing, tuple(notes))


def unit_description(series_descriptions: Iterable[str]) -> str:
    """The text a unit's slice level is read from: its series' descriptions, each once, in order."""
    return " ".join(dict.fromkeys(d for d in series_descriptions if d))


def reference_image(item: PreparedSlice) -> Dataset | None:
    """The image a slice's outputs reference when the node does not write its own map: the scanner's map."""
    return item.unit_slice.scanner_map.dataset if item.unit_slice.scanner_map is not None else None


def value_region_mask(analysis: SliceAnalysis) -> np.ndarray:
    """The pixels the slice's reported values are from (its mid-wall region)."""
    return np.asarray(analysis.value_mask, dtype=bool)


def compare_maps(maps: SliceMaps, analysis: SliceAnalysis) -> SliceComparison:
    """The node's reconstruction against the scanner's map and the second T1 estimate, over the region the slice's
    values are from."""
    region = value_region_mask(analysis)
    cross_check = None
    if maps.cross_check_ms is not None:
        cross_check = median_difference_percent(maps.cross_check_ms, maps.primary_ms, region)
    second_mean = second_median = None
    if maps.second_ms is not None:
        second = maps.second_ms[region & np.isfinite(maps.second_ms)]
        if second.size:
            second_mean, second_median = float(second.mean()), float(np.median(second))
    return SliceComparison(cross_check, maps.second_label, second_mean, second_median)


def add_source_figures(figures: SliceFigures, prepared: PreparedSlice, analysis: SliceAnalysis | None,
                       comparison: SliceComparison | None) -> None:
    """Say in a slice's figures where its map came from, what region its values are from, how the node's other
    maps compare, and the slice's notes."""
    maps = prepared.maps
    figures.map_source = maps.source
    figures.notes = list(prepared.notes)
    if analysis is None or comparison is None:
        return
    figures.value_region = analysis.value_region
    if maps.cross_check_label is not None:
        figures.cross_check = CrossCheckFigures(label=maps.cross_check_label,
                                                median_difference_percent=rounded(comparison.cross_check_percent, 2))
    if maps.second_label is not None:
        figures.second_measurement = SecondMeasurement(label=maps.second_label,
                                                       mean_ms=rounded(comparison.second_estimate_mean_ms),
                                                       median_ms=rounded(comparison.second_estimate_median_ms))


def median_difference_percent(other_ms: np.ndarray, reference_ms: np.ndarray, region: np.ndarray) -> float | None:
    """Median of (other - reference) / reference in % over the region's pixels valid in both; None if too few."""
    both = np.asarray(region, dtype=bool) & np.isfinite(other_ms) & np.isfinite(reference_ms) & (reference_ms > 0)
    if int(both.sum()) < MIN_CROSS_CHECK_PIXELS:
        return None
    return float(np.median((other_ms[both] - reference_ms[both]) / reference_ms[both]) * 100.0)


def _masked(map_ms: np.ndarray, valid: np.ndarray) -> np.ndarray:
    values = np.asarray(map_ms, dtype=np.float32)
    return np.where(valid & np.isfinite(values) & (values > 0), values, np.nan).astype(np.float32)
