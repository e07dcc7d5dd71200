"""Analysis throughput: 100 mapping slices through segmentation, contour fitting, AHA metrics, motion and QC.

The slices are T1 maps (plain MOLLI/ShMOLLI fit) of fresh phantom studies (seed 51, never used in training), with
their raw IR images and R2 for the motion model, on the CPU with the shipped models and the node's settings (BLAS
limited to one thread, one onnxruntime thread per model). The phantom generation is not timed. Four ways, each
run ``--repeats`` times in turn and the best kept (the machine may be shared: the load average is printed):

- batched, one thread: the node's :func:`dicomnode.analysis.slices.analyse_slices` with one worker, every model
  run once per batch of slices and the QC's latent searches advanced together; with the time of each part;
- the earlier path: one :func:`inference.slice_analysis.analyse_slice` per slice, one slice per CPU core at a time,
  with the earlier latent search (L-BFGS-B, 71-77 decoded latents per slice; :func:`earlier_search_latents`);
- batched, one thread per CPU core, each with its share of the slices (the node before its helper processes);
- the node: batched, this process and one forked helper process per further CPU core, each with its share
  (dicomnode/analysis/slice_helper.py).

Printed: the breakdown per slice, seconds for all slices, the ratios of the node to the earlier path and to the
threads (the robust figures on a shared machine: they ran under the same load) and the design's target of 100
slices in under 3 s on this 2-core machine. The node's peak RSS with every model loaded is printed by
benchmarks/bench_console_latency.py.

Usage: ``python benchmarks/bench_analysis.py [--slices 100] [--threads 1] [--workers 0] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from scipy import optimize  # noqa: E402

from config import Settings  # noqa: E402
from dicomnode.analysis.slices import (  # noqa: E402
    SliceInput,
    analyse_slices,
    slice_workers,
    start_slice_helpers,
    stop_slice_helpers,
)
from inference import motion, quality, segmentation  # noqa: E402
from inference.mapping import MapKind  # noqa: E402
from inference.model_set import ModelSet, load_models  # noqa: E402
from inference.runtime import Model, limit_blas_threads  # noqa: E402
from inference.slice_analysis import RawImages, SliceAnalysis, analyse_slice  # noqa: E402
from training.phantom_slices import SliceCase, study_cases  # noqa: E402

PHANTOM_SEED = 51
TARGET_S_PER_100 = 3.0
EARLIER_MAX_ITERATIONS = 6
EARLIER_MAX_EVALUATIONS = 10


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
        self.module = module
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

    def restore(self) -> None:
        setattr(self.module, self.name, self.function)


def slice_inputs(cases: Sequence[SliceCase]) -> dict[str, list[SliceInput]]:
    """The cases' slice inputs per AHA level (a series' description gives its level)."""
    return {level: [SliceInput(map_ms=c.map_ms, map_kind=MapKind.T1, pixel_spacing_mm=c.pixel_spacing_mm,
                               mr_map=Dataset(),  # no outputs are written here
                               raw=RawImages(c.images, c.times_ms, c.r2)) for c in cases if c.level.value == level]
            for level in sorted({case.level.value for case in cases})}


def analyse_all(series: dict[str, list[SliceInput]], models: ModelSet, workers: int, *, helpers: bool = True) -> float:
    """Seconds to analyse every series with the node's function in ``workers`` shares: the slice helpers and this
    process, or (``helpers`` False) threads only."""
    started = time.perf_counter()
    for level, inputs in series.items():
        outcomes = analyse_slices(inputs, f"T1 map {level}", lambda: models, workers=workers, helpers=helpers)
        failed = [o.failure for o in outcomes if o.analysis is None]
        if failed:
            raise SystemExit(f"{len(failed)} slices were not analysed: {failed[:3]}")
    return time.perf_counter() - started


class _BudgetSpentError(Exception):
    """The earlier search used its objective evaluations (L-BFGS-B may overrun ``maxfun`` in a line search)."""


def earlier_search_latents(pairs: np.ndarray, encoder: Model, decoder: Model) -> list[quality.SearchResult]:
    """The QC's earlier latent search, one pair at a time: L-BFGS-B from the encoder's mean, of at most 6 iterations
    and 10 objective evaluations, each with a forward-difference gradient (the latent and its 8 perturbed copies
    decoded in one run)."""
    return [earlier_search(pair, encoder.run({"pair": pair[np.newaxis]}, ["mean"])["mean"][0].astype(np.float64),
                           decoder) for pair in pairs]


def earlier_search(pair: np.ndarray, start: np.ndarray, decoder: Model) -> quality.SearchResult:
    size = start.size
    weights = np.stack([quality.IMAGE_WEIGHT * quality.image_window(pair.shape[-1], quality.IMAGE_WINDOW_SIGMA_PX),
                        np.full(pair.shape[-2:], quality.MASK_WEIGHT, dtype=np.float32)])
    steps = np.vstack([np.zeros(size), quality.DIFFERENCE_STEP * np.eye(size)])
    best: dict[str, Any] = {"objective": np.inf}
    calls = 0

    def objective_and_gradient(latent: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        if calls >= EARLIER_MAX_EVALUATIONS:
            raise _BudgetSpentError
        calls += 1
        latents = latent[np.newaxis] + steps
        decoded = decoder.run({"latent": latents.astype(np.float32)}, ["reconstruction"])["reconstruction"]
        errors = np.mean(weights * (decoded - pair[np.newaxis]) ** 2, axis=(2, 3)).sum(axis=1)
        values = errors.astype(np.float64) + quality.PRIOR_WEIGHT * np.mean(latents**2, axis=1)
        if values[0] < best["objective"]:
            best.update(objective=float(values[0]), latent=latent.copy(), reconstruction=decoded[0])
        return float(values[0]), (values[1:] - values[0]) / quality.DIFFERENCE_STEP

    with contextlib.suppress(_BudgetSpentError):
        optimize.minimize(objective_and_gradient, start, jac=True, method="L-BFGS-B",
                          options={"maxiter": EARLIER_MAX_ITERATIONS, "maxfun": EARLIER_MAX_EVALUATIONS})
    return quality.SearchResult(latent=best["latent"], reconstruction=best["reconstruction"],
                                objective=float(best["objective"]), evaluations=calls * steps.shape[0])


def analyse_one_by_one(series: dict[str, list[SliceInput]], models: ModelSet, workers: int) -> float:
    """Seconds to analyse every series the earlier way: one ``analyse_slice`` per slice, ``workers`` at a time,
    with the earlier latent search."""
    search = quality.search_latents
    quality.search_latents = earlier_search_latents
    try:
        return _analyse_one_by_one(series, models, workers)
    finally:
        quality.search_latents = search


def _analyse_one_by_one(series: dict[str, list[SliceInput]], models: ModelSet, workers: int) -> float:
    started = time.perf_counter()
    for level, inputs in series.items():
        def one(item: SliceInput, level: str = level) -> SliceAnalysis:
            return analyse_slice(item.map_ms, item.map_kind, item.pixel_spacing_mm, level, models, raw=item.raw)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, inputs))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model; 0: its default")
    parser.add_argument("--workers", type=int, default=0, help="slices at once; 0: one per CPU core (the node's)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the best is kept")
    args = parser.parse_args()
    cases = t1_cases(args.slices)
    series = slice_inputs(cases)
    workers = args.workers or slice_workers(Settings())
    limit_blas_threads()
    models = load_models(device="cpu", threads=args.threads)
    analyse_all(slice_inputs(cases[:4]), models, 1)  # warm-up: arenas, caches
    load_before = os.getloadavg()
    parts = [_Timed(segmentation, "segment_maps"), _Timed(segmentation, "mirrored_segmentations"),
             _Timed(motion, "detect_motions"), _Timed(quality, "predict_dices")]
    batched_s = analyse_all(series, models, 1)
    for part in parts:
        part.restore()
    # Forks of this process, as the node's workers fork them (onnxruntime's thread pools do not survive a fork).
    helper_count = start_slice_helpers(models, workers - 1) if args.threads == 1 else 0
    analyse_all(slice_inputs(cases[:4]), models, workers)  # the helpers' warm-up
    earlier_s, threads_s, node_s = [], [], []
    for _ in range(args.repeats):
        earlier_s.append(analyse_one_by_one(series, models, workers))
        threads_s.append(analyse_all(series, models, workers, helpers=False))
        node_s.append(analyse_all(series, models, workers))
    stop_slice_helpers()
    load_after = os.getloadavg()
    n = len(cases)
    print(f"analysis of {n} T1 slices (matrices {sorted({c.map_ms.shape for c in cases})}), CPU "
          f"({len(os.sched_getaffinity(0))} cores, load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
          f"after), providers {sorted(set(models.providers.values()))}, "
          f"onnxruntime threads {args.threads or 'default'}, segmentation model "
          f"{'int8 copy' if models.segmentation.int8 else 'float'}")
    print(f"  batched, one thread: {batched_s:.2f} s; {1000 * batched_s / n:.1f} ms per slice")
    labels = {"segment_maps": "segmentation of the map",
              "mirrored_segmentations": "segmentation of its left-right mirrored copy (the QC's agreement)",
              "detect_motions": "motion", "predict_dices": "QC (crop, latent searches, calibration)"}
    for part in parts:
        print(f"    {1000 * part.seconds / n:6.1f} ms per slice  {labels[part.name]}")
    rest_s = batched_s - sum(part.seconds for part in parts)
    print(f"    {1000 * rest_s / n:6.1f} ms per slice  the rest (heart check, contour fit, AHA, values, "
          "wall thickness)")
    best_earlier, best_node = min(earlier_s), min(node_s)
    print(f"  earlier path, one slice at a time, {workers} at once: best {best_earlier:.2f} s of "
          f"{', '.join(f'{s:.2f}' for s in earlier_s)}")
    print(f"  batched, {workers} threads (the node before its helper processes): best {min(threads_s):.2f} s of "
          f"{', '.join(f'{s:.2f}' for s in threads_s)}")
    print(f"  the node, batched, this process and {helper_count} forked helper process(es): best {best_node:.2f} s of "
          f"{', '.join(f'{s:.2f}' for s in node_s)}; {1000 * best_node / n:.1f} ms per slice")
    ratios = [node / earlier for node, earlier in zip(node_s, earlier_s, strict=True)]
    print(f"  ratio node / earlier path, run by run: {', '.join(f'{r:.2f}' for r in ratios)}")
    ratios = [node / threads for node, threads in zip(node_s, threads_s, strict=True)]
    print(f"  ratio node / {workers} threads, run by run: {', '.join(f'{r:.2f}' for r in ratios)}")
    per_100_s = best_node * 100.0 / n
    print(f"100 slices in {per_100_s:.2f} s; target {TARGET_S_PER_100:.1f} s: ratio {per_100_s / TARGET_S_PER_100:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
