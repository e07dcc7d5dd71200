"""Benchmark: how well the node's segmentation QC predicts the Dice it cannot see, on the phantom and on real images.

The QC judges the contours the node draws itself, so every case here is the shipped segmentation's myocardium
(``--segmentation`` for a candidate) against the truth:

- real: every Sunnybrook slice with an expert myocardium (../shared/data/sunnybrook, cine SSFP, 5 patients), as
  given and degraded the ways a map unlike the training data differs (Rician-like noise of 15 % of the 99th
  percentile, Gaussian blur of 2 pixels, gamma 2.5, inverted contrast), so that the segmentation fails on some of
  them as it would on an unfamiliar scanner; the held-out patient of the segmentation (SC-HF-I-1) is reported
  apart. These images are not maps, so the value check of inference/plausibility.py is left out.
- phantom: the T1 and T2 maps of held-out phantom v2 studies (validation seed 220000) with every check.

For each case it prints the predicted Dice of the latent search alone (``autoencoder``), of the agreement under
mirroring alone (``agreement``), and the node's prediction (the lower of the two), against the true Dice: mean
absolute error, Pearson r, how many slices with a true Dice below 0.7 the node flags (predicted < 0.80, a
plausibility doubt, or no left ventricle found) and how many with a true Dice of 0.8 or more it flags needlessly.
Aims (issue "Models that hold on real patients' images"): MAE <= 0.03 and r >= 0.97 on the phantom, MAE <= 0.08 on
the real held-out patient, every slice below 0.7 flagged. Fixed seeds: the output is reproducible. About 5 minutes
on the 2-core machine.

Run: .venv/bin/python -m benchmarks.qc_accuracy [--phantom-studies 6] [--segmentation FILE.onnx] [--qc FOLDER]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from inference import quality
from inference.heart_check import check_left_ventricle
from inference.mapping import MapKind
from inference.metrics import dice
from inference.model_set import ModelSet, load_models
from inference.myocardium_values import has_value
from inference.plausibility import contour_doubts
from inference.runtime import Device, load_model, shipped_model_path
from inference.segmentation import segment_maps
from inference.slice_analysis import QC_DOUBTFUL_DICE, QC_NOT_A_HEART_DICE
from phantom.model import SequenceKind
from training import sunnybrook
from training.phantom_slices import VALIDATION_SEED_V2, iter_cases

SUNNYBROOK_ROOT = sunnybrook.SUNNYBROOK_ROOT
POOR_DICE = 0.7
GOOD_DICE = 0.8
DEGRADATIONS = ("none", "noise", "blur", "gamma", "invert")


@dataclass(frozen=True)
class Judged:
    """One segmentation, its true Dice and what the QC made of it."""

    group: str
    true_dice: float
    autoencoder: float
    agreement: float
    predicted: float
    flagged: bool
    doubts: tuple[str, ...]


def degrade(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``image`` that a model trained elsewhere finds unfamiliar (see the module docstring)."""
    image = np.asarray(image, dtype=np.float32)
    top = float(np.percentile(image, 99))
    if kind == "none":
        return image
    if kind == "noise":
        return np.abs(image + rng.normal(0.0, 0.15 * top, image.shape)).astype(np.float32)
    if kind == "blur":
        return ndimage.gaussian_filter(image, 2.0).astype(np.float32)
    if kind == "gamma":
        return (top * np.clip(image / top, 0.0, None) ** 2.5).astype(np.float32)
    if kind == "invert":
        return np.clip(top - image, 0.0, None).astype(np.float32)
    raise ValueError(f"unknown degradation {kind!r}; expected one of {DEGRADATIONS}")


def judge(group: str, values: np.ndarray, truth: np.ndarray, myocardium: np.ndarray, cavity: np.ndarray,
          spacing: tuple[float, float], models: ModelSet,
          doubts_of: Callable[..., tuple[str, ...]]) -> Judged:
    """Run the node's QC on one segmentation, as inference/slice_analysis.py does."""
    check = check_left_ventricle(myocardium, cavity, spacing)
    estimate = quality.predict_dice(values, myocardium, spacing, models.qc_encoder, models.qc_decoder,
                                    segmentation_model=models.segmentation)
    doubts = doubts_of(check, myocardium) if check.passed else (check.reason or "no left ventricle found",)
    flagged = (not check.passed or estimate.autoencoder_dice < QC_NOT_A_HEART_DICE
               or estimate.predicted_dice < QC_DOUBTFUL_DICE or bool(doubts))
    return Judged(group, dice(myocardium, truth), estimate.autoencoder_dice, estimate.augmentation_agreement,
                  estimate.predicted_dice, flagged, doubts)


def real_cases(models: ModelSet, root: Path, seed: int) -> list[Judged]:
    slices = [item for item in sunnybrook.load_sunnybrook(root) if item.myocardium_mask is not None
              and item.patient not in sunnybrook.CAVITY_ONLY_PATIENTS]
    rng = np.random.default_rng(seed)
    judged = []
    for kind in DEGRADATIONS:
        images = [degrade(item.image, kind, rng) for item in slices]
        found = segment_maps(images, [item.pixel_spacing_mm for item in slices], models.segmentation)
        for item, image, segmentation in zip(slices, images, found, strict=True):
            held_out = "held-out" if item.patient == sunnybrook.HELD_OUT_PATIENT else "training"
            assert item.myocardium_mask is not None
            judged.append(judge(
                f"{held_out}/{kind}", image, item.myocardium_mask, segmentation.myocardium_mask,
                segmentation.cavity_mask, item.pixel_spacing_mm, models,
                lambda check, _mask: contour_doubts(check, float("nan"), MapKind.T1)))
    return judged


def phantom_cases(models: ModelSet, n_studies: int) -> list[Judged]:
    cases = list(iter_cases(VALIDATION_SEED_V2, n_studies, motion_rate=0.0, workers=1, anatomy="v2"))
    found = segment_maps([case.map_ms for case in cases], [case.pixel_spacing_mm for case in cases],
                         models.segmentation)
    judged = []
    for case, segmentation in zip(cases, found, strict=True):
        kind = MapKind.T2 if case.sequence is SequenceKind.T2PREP else MapKind.T1
        field_t = float(case.field_t)
        valued = segmentation.myocardium_mask & has_value(case.map_ms)
        median_ms = float(np.median(case.map_ms[valued])) if valued.any() else float("nan")
        judged.append(judge(
            f"v2/{kind.value.lower()}", case.map_ms, case.myocardium_mask, segmentation.myocardium_mask,
            segmentation.cavity_mask, case.pixel_spacing_mm, models,
            lambda check, _mask, m=median_ms, k=kind, f=field_t: contour_doubts(check, m, k, f)))
    return judged


def summary_row(name: str, judged: Iterable[Judged]) -> str:
    items = list(judged)
    true = np.array([item.true_dice for item in items])
    columns = []
    for estimate in (np.array([item.autoencoder for item in items]), np.array([item.agreement for item in items]),
                     np.array([item.predicted for item in items])):
        known = np.isfinite(estimate)  # no agreement where the segmentation is empty
        error = float(np.mean(np.abs(estimate - true)[known])) if known.any() else float("nan")
        r = (float(np.corrcoef(estimate[known], true[known])[0, 1]) if known.sum() > 2 and true[known].std() > 0
             else float("nan"))
        columns.append(f"{error:.3f} / {r:.2f}")
    flagged = np.array([item.flagged for item in items], dtype=bool)
    poor, good = true < POOR_DICE, true >= GOOD_DICE
    return (f"| {name} | {len(items)} | {true.mean():.3f} | " + " | ".join(columns)
            + f" | {int((flagged & poor).sum())} of {int(poor.sum())} | {int((flagged & good).sum())} of "
            f"{int(good.sum())} |")


def print_table(title: str, judged: list[Judged], groups: list[str]) -> None:
    print(f"\n{title}\n")
    print("| cases | n | true Dice | autoencoder MAE / r | agreement MAE / r | node MAE / r | flagged of Dice < 0.7 "
          "| flagged of Dice >= 0.8 |")
    print("|---|---|---|---|---|---|---|---|")
    for group in groups:
        print(summary_row(group, [item for item in judged if item.group.startswith(group)]))
    print(summary_row("all", judged))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantom-studies", type=int, default=6, help="held-out phantom v2 studies (12 maps each)")
    parser.add_argument("--segmentation", type=Path, default=shipped_model_path("segmentation.onnx"))
    parser.add_argument("--qc", type=Path, default=None, help="folder of candidate qc_encoder/qc_decoder .onnx")
    parser.add_argument("--sunnybrook", type=Path, default=SUNNYBROOK_ROOT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    models = replace(load_models(device=Device.CPU),
                     segmentation=load_model(args.segmentation, device=Device.CPU))
    if args.qc is not None:
        models = replace(models, qc_encoder=load_model(args.qc / "qc_encoder.onnx", device=Device.CPU),
                         qc_decoder=load_model(args.qc / "qc_decoder.onnx", device=Device.CPU))
    print(f"segmentation {args.segmentation.name} {models.segmentation.card.version}; QC "
          f"{models.qc_decoder.card.version}")
    started = time.perf_counter()
    real = real_cases(models, args.sunnybrook, args.seed)
    print_table("Real: Sunnybrook cine slices, the segmentation's own myocardium, MAE / Pearson r against the true "
                "Dice", real, [f"held-out/{kind}" for kind in DEGRADATIONS] + ["held-out", "training"])
    phantom = phantom_cases(models, args.phantom_studies)
    print_table(f"Phantom v2: {args.phantom_studies} held-out studies (seed {VALIDATION_SEED_V2})", phantom,
                ["v2/t1", "v2/t2"])
    reasons: dict[str, int] = {}
    for item in real + phantom:
        for doubt in item.doubts:
            key = re.sub(r"\d+(\.\d+)?", "N", doubt)
            reasons[key] = reasons.get(key, 0) + 1
    print("\nreasons given besides the predicted Dice (heart check, plausibility), cases:")
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        print(f"- {reason}: {count}")
    missed = [item for item in real + phantom if item.true_dice < POOR_DICE and not item.flagged]
    print("poor contours not flagged (cases, true Dice, predicted): "
          + (", ".join(f"{m.group} {m.true_dice:.2f} {m.predicted:.2f}" for m in missed) or "none"))
    print(f"{len(real) + len(phantom)} segmentations judged in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
