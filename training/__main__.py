"""Retrain every shipped model from the phantom: ``python -m training [--studies 400] [--out inference/models]``.

Builds the phantom v1 and v2 training and validation sets (training seeds 100000 and 120000, validation 200000 and
220000; tests use seeds below 100000), trains segmentation (with the real Sunnybrook slices of
../shared/data/sunnybrook), consensus, motion and the QC VAE one after the other, exports each to ONNX with its
model card, makes the segmentation model's int8 copy for the CPU (training/quantise.py), calibrates the T2 motion
check (its constants are printed for inference/t2_motion.py) and rewrites docs/models.md and its figure. Needs the
``[train]`` extra (PyTorch, onnx).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from training.datasets import build
from training.phantom_slices import TRAINING_SEED, TRAINING_SEED_V2, VALIDATION_SEED, VALIDATION_SEED_V2

DATA_FOLDER = Path("data/training")
TRAINERS = ("training.segmentation", "training.consensus", "training.motion", "training.quality")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400, help="training studies (9 slices x sequences each)")
    parser.add_argument("--validation-studies", type=int, default=40)
    parser.add_argument("--studies-v2", type=int, default=160, help="phantom v2 training studies")
    parser.add_argument("--validation-studies-v2", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("inference/models"))
    parser.add_argument("--workers", type=int, default=None, help="phantom processes; the CPU count by default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    sets = (("validation.npz", VALIDATION_SEED, args.validation_studies, "v1"),
            ("train.npz", TRAINING_SEED, args.studies, "v1"),
            ("validation_v2.npz", VALIDATION_SEED_V2, args.validation_studies_v2, "v2"),
            ("train_v2.npz", TRAINING_SEED_V2, args.studies_v2, "v2"))
    for name, seed, n_studies, anatomy in sets:
        if not (DATA_FOLDER / name).exists():
            build(DATA_FOLDER / name, seed=seed, n_studies=n_studies, workers=args.workers, anatomy=anatomy)
    for trainer in TRAINERS:
        subprocess.run([sys.executable, "-m", trainer, "--out", str(args.out)], check=True)
    for step in ("training.quantise", "training.t2_motion", "training.sunnybrook_figure", "training.model_docs"):
        subprocess.run([sys.executable, "-m", step], check=True)
    print(f"all models trained in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
