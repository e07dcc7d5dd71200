"""Calibrate the T2 maps' motion check (inference/t2_motion.py) and measure it on held-out phantom studies.

    python -m training.t2_motion

A T2-prep series has three or four images; when the heart moves between them, pixels at the moving borders mix
tissues across the images and the two-parameter fit explains them poorly. The check's score of an AHA segment is
the misfit ``1 - median R2`` of the fit over the segment's pixels. This script

1. fits P(motion | misfit) per segment by logistic regression on the T2 cases of the training sets (phantom v1
   and v2, data/training/train.npz and train_v2.npz; the phantom's motion rule per segment is the label);
2. chooses the decision threshold, the lowest probability at which the image-level specificity (no segment at or
   above it on slices without motion) is at least 0.95, on the even-numbered studies of the validation sets;
3. measures per-segment AUC and the image-level specificity and sensitivity on the odd-numbered ones, per phantom
   version and level;

and prints the constants inference/t2_motion.py holds, with the figures its docstring quotes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize

from training.datasets import load
from training.motion import roc_auc, specific_threshold

TRAIN_PATHS = (Path("data/training/train.npz"), Path("data/training/train_v2.npz"))
VALIDATION_PATHS = (Path("data/training/validation.npz"), Path("data/training/validation_v2.npz"))
MIN_SEGMENT_PIXELS = 5
TARGET_IMAGE_SPECIFICITY = 0.95
N_POSITIONS = 6


def segment_misfit(r2: np.ndarray, positions: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """(cases, 6) misfit ``1 - median R2`` per segment position; NaN where the level has no such segment or it has
    too few pixels."""
    misfit = np.full(motion.shape, np.nan)
    for case in range(len(motion)):
        for position in range(N_POSITIONS):
            inside = positions[case] == position + 1
            if motion[case, position] >= 0 and inside.sum() >= MIN_SEGMENT_PIXELS:
                misfit[case, position] = 1.0 - float(np.median(r2[case][inside]))
    return misfit


def t2_cases(*paths: Path) -> dict[str, np.ndarray]:
    """Misfit per segment, labels, study, level and phantom version of the T2 cases of packed sets."""
    parts = []
    for path in paths:
        data = load(path)
        keep = ~data["is_t1"]
        motion = data["motion"][keep]
        parts.append({
            "misfit": segment_misfit(data["crop_r2"][keep].astype(np.float32), data["crop_segments"][keep], motion),
            "motion": motion, "study": data["study"][keep], "level": data["level"][keep],
            "anatomy": data["anatomy"][keep] if "anatomy" in data else np.full(int(keep.sum()), "v1"),
        })
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def fit_logistic(score: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of P(label | score) = 1 / (1 + exp(-(intercept + slope * score))), maximum likelihood."""
    score, label = np.asarray(score, dtype=np.float64), np.asarray(label, dtype=np.float64)

    def negative_log_likelihood(parameters: np.ndarray) -> float:
        z = parameters[0] + parameters[1] * score
        return float(np.sum(np.logaddexp(0.0, z) - label * z))

    result = optimize.minimize(negative_log_likelihood, np.array([0.0, 1.0]), method="BFGS")
    return float(result.x[0]), float(result.x[1])


def probabilities(misfit: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(intercept + slope * misfit)))


def image_scores(probability: np.ndarray) -> np.ndarray:
    return np.nanmax(np.where(np.isfinite(probability), probability, -1.0), axis=1)


def figures(cases: dict[str, np.ndarray], probability: np.ndarray, threshold: float) -> dict[str, Any]:
    valid = np.isfinite(probability)
    labels = cases["motion"] == 1
    image_labels = (labels & valid).any(axis=1)
    image = image_scores(probability)
    flagged = image >= threshold
    return {
        "segment_auc": round(roc_auc(labels[valid], probability[valid]), 4),
        "segments": int(valid.sum()), "segments_with_motion": int((labels & valid).sum()),
        "image_auc": round(roc_auc(image_labels, image), 4),
        "slices": int(image_labels.size), "slices_with_motion": int(image_labels.sum()),
        "image_specificity": round(float((~flagged[~image_labels]).mean()), 4),
        "image_sensitivity": round(float(flagged[image_labels].mean()), 4),
    }


def calibrate(train_paths: tuple[Path, ...], validation_paths: tuple[Path, ...]) -> dict[str, Any]:
    train = t2_cases(*train_paths)
    valid = np.isfinite(train["misfit"])
    intercept, slope = fit_logistic(train["misfit"][valid], train["motion"][valid] == 1)
    validation = t2_cases(*validation_paths)
    probability = probabilities(validation["misfit"], intercept, slope)
    even = validation["study"] % 2 == 0
    choose = {key: value[even] for key, value in validation.items()}
    threshold = specific_threshold((choose["motion"] == 1).any(axis=1), image_scores(probability[even]),
                                   TARGET_IMAGE_SPECIFICITY)
    odd = {key: value[~even] for key, value in validation.items()}
    held_out = probability[~even]
    result: dict[str, Any] = {"intercept": round(intercept, 4), "slope": round(slope, 4),
                              "threshold": round(threshold, 4), "held_out": figures(odd, held_out, threshold)}
    for key in ("anatomy", "level"):
        result[f"held_out_by_{key}"] = {
            str(value): figures({k: v[odd[key] == value] for k, v in odd.items()}, held_out[odd[key] == value],
                                threshold) for value in sorted(set(odd[key].tolist()))}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, nargs="+", default=list(TRAIN_PATHS))
    parser.add_argument("--validation", type=Path, nargs="+", default=list(VALIDATION_PATHS))
    args = parser.parse_args(argv)
    print(json.dumps(calibrate(tuple(args.train), tuple(args.validation)), indent=1))


if __name__ == "__main__":
    main()
