"""Analysis throughput: 100 mapping slices through segmentation, contour fitting, AHA metrics, motion and QC.

The slices are T1 maps (plain MOLLI/ShMOLLI fit) of fresh phantom studies (seed 51, never used in training), with
their raw IR images and R2 for the motion model. They go through the node's own
:func:`dicomnode.analysis.slices.analyse_slices` on the CPU with the shipped models and the node's settings (BLAS
limited to one thread, one onnxruntime thread per model): first one slice at a time (the reference run, with the
time of each part), then as the node runs them, one slice per CPU core at a time. The phantom generation is not
timed. Printed: seconds for all slices, ms per slice, the ratio of the two runs, the published segmentation
model's 0.123 s per slice on a V100 GPU (segmentation alone) and the design's target of 100 slices in under 3 s on
this 2-core machine. The node's peak RSS with every model loaded is printed by
benchmarks/bench_console_latency.py (this process holds the phantom images too).

Usage: ``python benchmarks/bench_analysis.py [--slices 100] [--threads 1] [--workers 0]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom.dataset import Dataset  # noqa: E402

from config import Settings  # noqa: E402
from dicomnode.analysis.slices import SliceInput, analyse_slices, slice_workers  # noqa: E402
from inference import motion, quality, segmentation  # noqa: E402
from inference.mapping import MapKind  # noqa: E402
from inference.model_set import ModelSet, load_models  # noqa: E402
from inference.runtime import limit_blas_threads  # noqa: E402
from inference.slice_analysis import RawImages  # noqa: E402
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


def analyse_all(cases: Sequence[SliceCase], models: ModelSet, workers: int) -> float:
    """Seconds to analyse every case with the node's function, ``workers`` slices at a time (one call per AHA
    level, as the level comes from a series' description)."""
    started = time.perf_counter()
    for level in sorted({case.level.value for case in cases}):
        inputs = [SliceInput(map_ms=c.map_ms, map_kind=MapKind.T1, pixel_spacing_mm=c.pixel_spacing_mm,
                             mr_map=Dataset(),  # no outputs are written here
                             raw=RawImages(c.images, c.times_ms, c.r2)) for c in cases if c.level.value == level]
        outcomes = analyse_slices(inputs, f"T1 map {level}", lambda: models, workers=workers)
        failed = [o.failure for o in outcomes if o.analysis is None]
        if failed:
            raise SystemExit(f"{len(failed)} slices were not analysed: {failed[:3]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model; 0: its default")
    parser.add_argument("--workers", type=int, default=0, help="slices at once; 0: one per CPU core (the node's)")
    args = parser.parse_args()
    cases = t1_cases(args.slices)
    workers = args.workers or slice_workers(Settings())
    limit_blas_threads()
    models = load_models(device="cpu", threads=args.threads)
    analyse_all(cases[:2], models, 1)  # warm-up: arenas, caches
    parts = [_Timed(segmentation, "segment_map"), _Timed(motion, "detect_motion"), _Timed(quality, "predict_dice")]
    sequential_s = analyse_all(cases, models, 1)
    n = len(cases)
    print(f"analysis of {n} T1 slices (matrices {sorted({c.map_ms.shape for c in cases})}), CPU, "
          f"providers {sorted(set(models.providers.values()))}, onnxruntime threads {args.threads or 'default'}")
    print(f"  one slice at a time: {sequential_s:.2f} s; {1000 * sequential_s / n:.1f} ms per slice")
    rest_s = sequential_s - sum(part.seconds for part in parts)
    for part in parts:
        print(f"    {part.name:<14} {1000 * part.seconds / n:6.1f} ms per slice")
    print(f"    {'the rest':<14} {1000 * rest_s / n:6.1f} ms per slice (contour fit, AHA, values, wall thickness)")
    parallel_s = analyse_all(cases, models, workers)
    print(f"  {workers} slices at a time (the node): {parallel_s:.2f} s; {1000 * parallel_s / n:.1f} ms per slice; "
          f"ratio to one at a time {parallel_s / sequential_s:.2f}")
    print(f"published segmentation model: {PUBLISHED_V100_S_PER_SLICE:.3f} s per slice on a V100 "
          f"(segmentation alone); here {parallel_s / n:.3f} s per slice for everything: ratio "
          f"{(parallel_s / n) / PUBLISHED_V100_S_PER_SLICE:.2f}")
    per_100_s = parallel_s * 100.0 / n
    print(f"100 slices in {per_100_s:.2f} s; target {TARGET_S_PER_100:.1f} s: ratio {per_100_s / TARGET_S_PER_100:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
