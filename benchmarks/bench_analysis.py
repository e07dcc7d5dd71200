"""Analysis throughput: 100 mapping slices through segmentation, contour fitting, AHA metrics, motion and QC.

The slices are T1 maps (plain MOLLI/ShMOLLI fit) of fresh phantom studies (seed 51, never used in training), with
their raw IR images and R2 for the motion model. Each slice goes through
:func:`inference.slice_analysis.analyse_slice` on the CPU with the shipped models, as the node runs it; the
phantom generation is not timed. Printed: seconds for all slices, ms per slice and its parts (segmentation, QC,
motion, the rest), beside the published segmentation model's 0.123 s per slice on a V100 GPU (segmentation alone)
and the design's target of 100 slices in under 3 s on this 2-core machine. The node's peak RSS with every model
loaded is printed by benchmarks/bench_console_latency.py (this process holds the phantom images too).

Usage: ``python benchmarks/bench_analysis.py [--slices 100] [--threads 0]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference import motion, quality, segmentation  # noqa: E402
from inference.aha import AhaLevel  # noqa: E402
from inference.mapping import MapKind  # noqa: E402
from inference.model_set import load_models  # noqa: E402
from inference.slice_analysis import RawImages, analyse_slice  # noqa: E402
from training.phantom_slices import SliceCase, study_cases  # noqa: E402

PHANTOM_SEED = 51
PUBLISHED_V100_S_PER_SLICE = 0.123
TARGET_S_PER_100 = 3.0


def t1_cases(n_slices: int) -> list[SliceCase]:
    cases: list[SliceCase] = []
    study = 0
    while len(cases) < n_slices:
        cases.extend(case for case in study_cases(PHANTOM_SEED, study) if case.is_t1)
        study += 1
    return cases[:n_slices]


class _Timed:
    """Wraps a module's function and adds up the seconds spent in it."""

    def __init__(self, module: object, name: str) -> None:
        self.name = name
        self.function = getattr(module, name)
        self.seconds = 0.0
        setattr(module, name, self)

    def __call__(self, *args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads per model; 0: its default")
    args = parser.parse_args()
    cases = t1_cases(args.slices)
    models = load_models(device="cpu", threads=args.threads)
    first = cases[0]
    analyse_slice(first.map_ms, MapKind.T1, first.pixel_spacing_mm, AhaLevel(first.level.value), models,
                  raw=RawImages(first.images, first.times_ms, first.r2))  # warm-up: arenas, caches
    parts = [_Timed(segmentation, "segment_map"), _Timed(motion, "detect_motion"), _Timed(quality, "predict_dice")]
    per_slice = []
    started = time.perf_counter()
    for case in cases:
        slice_started = time.perf_counter()
        analyse_slice(case.map_ms, MapKind.T1, case.pixel_spacing_mm, AhaLevel(case.level.value), models,
                      raw=RawImages(case.images, case.times_ms, case.r2))
        per_slice.append(time.perf_counter() - slice_started)
    total_s = time.perf_counter() - started
    n = len(cases)
    print(f"analysis of {n} T1 slices (matrices {sorted({c.map_ms.shape for c in cases})}), CPU, "
          f"providers {sorted(set(models.providers.values()))}, threads {args.threads or 'default'}")
    median_ms = 1000 * statistics.median(per_slice)
    print(f"  total {total_s:.2f} s; {1000 * total_s / n:.1f} ms per slice (median {median_ms:.1f})")
    rest_s = total_s - sum(part.seconds for part in parts)
    for part in parts:
        print(f"  {part.name:<14} {1000 * part.seconds / n:6.1f} ms per slice")
    print(f"  {'the rest':<14} {1000 * rest_s / n:6.1f} ms per slice (contour fit, AHA, values, wall thickness)")
    per_100_s = total_s * 100.0 / n
    print(f"published segmentation model: {PUBLISHED_V100_S_PER_SLICE:.3f} s per slice on a V100 "
          f"(segmentation alone); here {total_s / n:.3f} s per slice for everything: ratio "
          f"{(total_s / n) / PUBLISHED_V100_S_PER_SLICE:.2f}")
    print(f"100 slices in {per_100_s:.2f} s; target {TARGET_S_PER_100:.1f} s: ratio {per_100_s / TARGET_S_PER_100:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
