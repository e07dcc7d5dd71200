"""Benchmark: generate phantom studies (all sequences, 3 slices, experts and trainees) against the 3-minute target.

The target is 50 studies in 3 minutes on the project's 2-core machine; for another number of studies it scales
linearly (3.6 s of wall time per study). The ratio printed is target time / measured time (above 1: faster than
the target). CPU seconds per study are measured over the worker processes.

Run: .venv/bin/python benchmarks/bench_phantom.py [--studies 50] [--workers N] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from phantom.study import SequenceChoice, StudyRequest, generate_studies

TARGET_SECONDS_PER_50 = 180.0


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=50, help="number of studies")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (below 100000: test seeds)")
    parser.add_argument("--out", type=Path, default=None, help="keep the studies here (default: a temporary folder)")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_phantom_"))
    request = StudyRequest(seed=args.seed, sequence=SequenceChoice.ALL, n_slices=3)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    outcomes = generate_studies(request, out, n_studies=args.studies, workers=args.workers)
    elapsed_s = time.perf_counter() - started
    cpu_s = _cpu_seconds() - cpu_before
    n_files = sum(outcome.n_dicom_files for outcome in outcomes)
    size_mb = sum(path.stat().st_size for path in out.rglob("*") if path.is_file()) / 1e6
    if args.out is None:
        shutil.rmtree(out)

    target_s = TARGET_SECONDS_PER_50 * args.studies / 50.0
    print(f"studies: {args.studies}, workers: {args.workers}, DICOM files: {n_files}, {size_mb:.0f} MB")
    print(f"wall time: {elapsed_s:.1f} s ({60.0 * args.studies / elapsed_s:.1f} studies/min)")
    print(f"CPU time: {cpu_s / args.studies:.2f} s per study")
    print(f"target: {target_s:.0f} s ({50.0 / 3.0:.1f} studies/min); ratio target/measured: {target_s / elapsed_s:.2f}")


if __name__ == "__main__":
    main()
