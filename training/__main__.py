"""Retrain every shipped model from the phantom: ``python -m training [--studies 400] [--out inference/models]``.

Builds the training and validation sets (training seeds from 100000, validation 200000; tests use seeds below
100000), trains segmentation, consensus, motion and the QC VAE one after the other, exports each to ONNX with its
model card, and rewrites docs/models.md. Needs the ``[train]`` extra (PyTorch, onnx).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from training.datasets import build
from training.phantom_slices import TRAINING_SEED, VALIDATION_SEED

DATA_FOLDER = Path("data/training")
TRAINERS = ("training.segmentation", "training.consensus", "training.motion", "training.quality")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400, help="training studies (9 slices x sequences each)")
    parser.add_argument("--validation-studies", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("inference/models"))
    parser.add_argument("--workers", type=int, default=None, help="phantom processes; the CPU count by default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    train, validation = DATA_FOLDER / "train.npz", DATA_FOLDER / "validation.npz"
    if not validation.exists():
        build(validation, seed=VALIDATION_SEED, n_studies=args.validation_studies, workers=args.workers)
    if not train.exists():
        build(train, seed=TRAINING_SEED, n_studies=args.studies, workers=args.workers)
    for trainer in TRAINERS:
        subprocess.run([sys.executable, "-m", trainer, "--out", str(args.out)], check=True)
    subprocess.run([sys.executable, "-m", "training.model_docs"], check=True)
    print(f"all models trained in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
