"""Benchmark: contour fitting and every measurement of one phantom slice, against a 20 ms target per slice.

Per slice: fit_contours on the truth masks, Dice and IoU of the fitted myocardium, contour Hausdorff and mean
surface distance of both borders, mask surface distances, AHA segments, wall thickness and segment T1 values.
The median over many slices is reported, on one core.

Run: .venv/bin/python benchmarks/bench_slice_metrics.py
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from inference.aha import aha_segments, wall_thickness_mm  # noqa: E402
from inference.contour_fit import contour_mask, fit_contours  # noqa: E402
from inference.metrics import dice, hausdorff_mm, iou, mask_surface_distances_mm, mean_surface_distance_mm  # noqa: E402
from inference.myocardium_values import segment_values  # noqa: E402
from phantom.anatomy import LEVELS, make_slice_anatomy  # noqa: E402
from phantom.model import FieldStrength, SliceAnatomy  # noqa: E402

TARGET_MS = 20.0


def measure_slice(anatomy: SliceAnatomy) -> float:
    """Seconds to fit and measure one slice."""
    spacing = anatomy.geometry.pixel_spacing_mm
    level = anatomy.geometry.level.value
    anterior, inferior = anatomy.rv_insertion_px
    start = time.perf_counter()
    fitted = fit_contours(anatomy.cavity_mask, anatomy.myocardium_mask, spacing)
    shape = anatomy.label_map.shape
    myocardium = contour_mask(fitted.epi_px, shape) & ~contour_mask(fitted.endo_px, shape)
    dice(myocardium, anatomy.myocardium_mask)
    iou(myocardium, anatomy.myocardium_mask)
    for ours, truth in ((fitted.endo_px, anatomy.endo_contour_px), (fitted.epi_px, anatomy.epi_contour_px)):
        hausdorff_mm(ours, truth, spacing)
        mean_surface_distance_mm(ours, truth, spacing)
    mask_surface_distances_mm(myocardium, anatomy.myocardium_mask, spacing)
    segments = aha_segments(
        myocardium, anatomy.lv_centre_px, anterior, level, inferior_insertion_px=inferior, pixel_spacing_mm=spacing
    )
    wall_thickness_mm(fitted, spacing, anatomy.lv_centre_px, anterior, level, inferior_insertion_px=inferior)
    segment_values(anatomy.t1_ms, segments, pixel_spacing_mm=spacing, erode_mm=spacing[0])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=30, help="phantom slices to measure")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per slice")
    args = parser.parse_args()
    anatomies = [
        make_slice_anatomy(np.random.default_rng(seed), LEVELS[seed % 3], FieldStrength.T1_5)
        for seed in range(args.slices)
    ]
    measure_slice(anatomies[0])  # warm caches and imports
    per_slice_ms = [1000.0 * min(measure_slice(a) for _ in range(args.repeats)) for a in anatomies]
    median_ms = statistics.median(per_slice_ms)
    verdict = "meets" if median_ms <= TARGET_MS else "misses"
    print(
        f"fit + all metrics: median {median_ms:.1f} ms per slice, max {max(per_slice_ms):.1f} ms "
        f"over {len(per_slice_ms)} slices; {verdict} the {TARGET_MS:.0f} ms target"
    )


if __name__ == "__main__":
    main()
