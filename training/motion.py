"""Train the motion artefact model on the phantom, pick its decision threshold, export it and write its card.

    python -m training.motion --out inference/models

Data: the T1 cases (MOLLI 5(3)3, 5s(3s)3s, ShMOLLI) of the phantom v1 and v2 training sets (data/training/train.npz,
train_v2.npz); held out: validation.npz and validation_v2.npz. Labels are the phantom's motion rule per AHA segment
(phantom/motion.py); positions a level does not have (apical 5-6) are left out of the loss. The whole-image label
is "any segment has motion".

Operating point: a radiographer acts on a red banner, so false ones cost a repeated breath-hold each. The decision
threshold is the lowest at which the image-level specificity (no segment and not the whole image at or above it,
on slices without motion) is at least :data:`TARGET_IMAGE_SPECIFICITY`, chosen on the even-numbered validation
studies; every figure of the card is measured on the odd-numbered ones, which the choice never saw.

Augmentation: small changes of intensity (IR stack gain per image and per frame, map gain and offset, noise) and a
rotation of the AHA segment layout alone by up to 15 deg about the crop centre, since at run time the layout comes
from default RV insertion angles when no RV is known (inference/aha.py) and misses the true one by that much.
Images are never rotated: the breathing direction in the image is part of what the model learns.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch.nn import functional as nnf

from inference.grids import CROP_SIZE, GRID_SPACING_MM
from inference.runtime import MODELS_FOLDER, load_model
from training import model_card
from training.datasets import load
from training.motion_net import JACCARD_WEIGHT, N_IMAGES, N_POSITIONS, MotionNet, attention_loss
from training.phantom_slices import TRAINING_SEED

LOGGER = logging.getLogger(__name__)

TRAIN_PATHS = (Path("data/training/train.npz"), Path("data/training/train_v2.npz"))
VALIDATION_PATHS = (Path("data/training/validation.npz"), Path("data/training/validation_v2.npz"))
TARGET_IMAGE_SPECIFICITY = 0.95
SEED = TRAINING_SEED + 31
EPOCHS = 20
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
WHOLE_WEIGHT = 0.5
ATTENTION_WEIGHT = 0.2
LAYOUT_ROTATION_DEG = 15.0
LAYOUT_ROTATION_PROBABILITY = 0.75
ATTENTION_LEVEL = 0.5  # attention above it counts as "the model looks here" for the Jaccard index
VERSION = "1.1.0"
KEYS = ("crop_images", "crop_map", "crop_r2", "crop_segments", "motion", "level", "field_t", "vendor", "sequence",
        "study")


def t1_cases(*paths: Path) -> dict[str, np.ndarray]:
    """The T1 cases of packed data sets, with only the arrays the motion model needs and the phantom version
    (``anatomy``, "v1" for sets packed before v2 existed)."""
    parts = []
    for path in paths:
        data = load(path)
        keep = data["is_t1"]
        part = {key: data[key][keep] for key in KEYS}
        part["anatomy"] = data["anatomy"][keep] if "anatomy" in data else np.full(int(keep.sum()), "v1")
        parts.append(part)
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def subset(data: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[keep] for key, value in data.items()}


def image_scores(predicted: dict[str, np.ndarray], motion: np.ndarray) -> np.ndarray:
    """Per slice, the probability the verdict turns on: the largest of its segments' (positions it has) and the
    whole image's (inference/motion.py MotionResult.has_motion)."""
    segment = np.where(motion >= 0, predicted["segment"], 0.0)
    return np.maximum(segment.max(axis=1), predicted["whole"])


def specific_threshold(labels: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """The lowest threshold at which at least ``specificity`` of the negative ``scores`` lie below it."""
    negative = np.sort(np.asarray(scores)[~np.asarray(labels, dtype=bool)])
    if negative.size == 0:
        raise ValueError("no negative cases to set the operating point on")
    allowed = int(np.floor((1.0 - specificity) * negative.size))  # negatives that may reach the threshold
    above = negative[negative.size - allowed - 1]  # the highest negative that must stay below
    higher = negative[negative > above]
    threshold = (above + higher[0]) / 2.0 if higher.size else above + 1e-4
    return float(np.clip(threshold, 1e-4, 1 - 1e-4))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) statistic, ties counted half."""
    labels = np.asarray(labels, dtype=bool)
    n_positive, n_negative = int(labels.sum()), int((~labels).sum())
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The probability threshold with the largest sensitivity + specificity - 1 (midway between scores)."""
    labels = np.asarray(labels, dtype=bool)
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    best, best_j = 0.5, -1.0
    for threshold in candidates:
        predicted = scores >= threshold
        j = predicted[labels].mean() + (~predicted[~labels]).mean() - 1.0
        if j > best_j:
            best, best_j = float(threshold), float(j)
    return float(np.clip(best, 1e-4, 1 - 1e-4))


def one_hot_layout(positions: np.ndarray) -> np.ndarray:
    """(N, 96, 96) positions 0-6 to (N, 6, 96, 96) float32 one-hot layout."""
    return np.stack([positions == p for p in range(1, N_POSITIONS + 1)], axis=1).astype(np.float32)


_ROWS, _COLUMNS = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float64)
_CENTRE = (CROP_SIZE - 1) / 2.0
_ANGLE_BIN = np.floor(np.mod(np.degrees(np.arctan2(-(_ROWS - _CENTRE), _COLUMNS - _CENTRE)), 360.0)).astype(np.int64)


def rotate_layout(positions: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Turn a slice's segment layout by ``rotation_deg`` about the crop centre, keeping its myocardium pixels: each
    pixel takes the position found at its display angle minus the rotation (1-degree bins, by majority)."""
    inside = positions > 0
    bins = _ANGLE_BIN[inside]
    counts = np.zeros((360, N_POSITIONS + 1), dtype=np.int64)
    np.add.at(counts, (bins, positions[inside].astype(np.int64)), 1)
    known = counts[:, 1:].sum(axis=1) > 0
    by_angle = np.argmax(counts[:, 1:], axis=1) + 1
    # Angles with no myocardium pixel take the nearest known angle's position.
    known_angles = np.nonzero(known)[0]
    distance = np.abs((np.arange(360)[:, None] - known_angles[None, :] + 180) % 360 - 180)
    by_angle = by_angle[known_angles[np.argmin(distance, axis=1)]]
    shift = int(round(rotation_deg))
    out = np.zeros_like(positions)
    out[inside] = by_angle[(bins - shift) % 360]
    return out


class Batches:
    """Shuffled, augmented mini-batches of the training cases as torch tensors."""

    def __init__(self, data: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        self.data = data
        self.rng = rng

    def __len__(self) -> int:
        return int(np.ceil(len(self.data["motion"]) / BATCH_SIZE))

    def __iter__(self):
        order = self.rng.permutation(len(self.data["motion"]))
        for start in range(0, order.size, BATCH_SIZE):
            yield self.batch(np.sort(order[start:start + BATCH_SIZE]))

    def batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        rng, n = self.rng, index.size
        images = self.data["crop_images"][index].astype(np.float32)
        n_frames = (np.abs(images).reshape(n, N_IMAGES, -1).max(axis=2) > 0)
        gain = rng.uniform(0.85, 1.15, (n, 1)) * rng.uniform(0.96, 1.04, (n, N_IMAGES))
        images *= gain[:, :, None, None].astype(np.float32)
        images += (rng.normal(0.0, 0.01, images.shape) * n_frames[:, :, None, None]).astype(np.float32)
        t1 = self.data["crop_map"][index].astype(np.float32)
        t1 = t1 * rng.uniform(0.93, 1.07, (n, 1, 1)).astype(np.float32) + rng.uniform(-0.04, 0.04, (n, 1, 1))
        r2 = self.data["crop_r2"][index].astype(np.float32)
        positions = self.data["crop_segments"][index].copy()
        for i in range(n):
            if rng.random() < LAYOUT_ROTATION_PROBABILITY:
                positions[i] = rotate_layout(positions[i], rng.uniform(-LAYOUT_ROTATION_DEG, LAYOUT_ROTATION_DEG))
        return _tensors(images, t1.astype(np.float32), r2, positions, self.data["motion"][index])


def _tensors(images: np.ndarray, t1: np.ndarray, r2: np.ndarray, positions: np.ndarray,
             motion: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        "ir_images": torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
        "t1_map": torch.from_numpy(np.ascontiguousarray(t1, dtype=np.float32)[:, None]),
        "r2_map": torch.from_numpy(np.ascontiguousarray(r2, dtype=np.float32)[:, None]),
        "segments": torch.from_numpy(one_hot_layout(positions)),
        "motion": torch.from_numpy(motion.astype(np.int64)),
    }


def losses(net: MotionNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    segment_logits, whole_logit, _, cams, masks = net.forward_all(
        batch["ir_images"], batch["t1_map"], batch["r2_map"], batch["segments"])
    motion = batch["motion"]
    valid = (motion >= 0) & (masks.sum(dim=(2, 3)) > 0)
    segment = nnf.binary_cross_entropy_with_logits(segment_logits[valid], motion[valid].float())
    whole_label = (motion == 1).any(dim=1).float()[:, None]
    whole = nnf.binary_cross_entropy_with_logits(whole_logit, whole_label)
    attention = attention_loss(cams, masks, valid)
    total = segment + WHOLE_WEIGHT * whole + ATTENTION_WEIGHT * attention
    return total, {"segment": segment.item(), "whole": whole.item(), "attention": attention.item()}


def predict(net: MotionNet, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Probabilities (N, 6), whole-image probabilities (N,) and attention (N, 6, 96, 96) of unaugmented cases."""
    net.eval()
    segment, whole, attention = [], [], []
    with torch.no_grad():
        for start in range(0, len(data["motion"]), 64):
            part = slice(start, start + 64)
            batch = _tensors(data["crop_images"][part].astype(np.float32), data["crop_map"][part].astype(np.float32),
                             data["crop_r2"][part].astype(np.float32), data["crop_segments"][part],
                             data["motion"][part])
            s, w, a = net(batch["ir_images"], batch["t1_map"], batch["r2_map"], batch["segments"])
            segment.append(torch.sigmoid(s).numpy())
            whole.append(torch.sigmoid(w)[:, 0].numpy())
            attention.append(a.numpy().astype(np.float16))
    return {"segment": np.concatenate(segment), "whole": np.concatenate(whole),
            "attention": np.concatenate(attention)}


def train(train_data: dict[str, np.ndarray], validation: dict[str, np.ndarray], epochs: int) -> MotionNet:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    net = MotionNet()
    batches = Batches(train_data, rng)
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LEARNING_RATE, total_steps=epochs * len(batches),
                                                   pct_start=0.15)
    for epoch in range(epochs):
        net.train()
        sums: dict[str, float] = {}
        started, count = time.monotonic(), 0
        for batch in batches:
            loss, parts = losses(net, batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            count += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
        seconds = time.monotonic() - started
        predicted = predict(net, validation)
        valid = validation["motion"] >= 0
        auc = roc_auc(validation["motion"][valid] == 1, predicted["segment"][valid])
        LOGGER.info("epoch %d/%d %.0f s (%.2f s/batch) %s validation AUC %.4f", epoch + 1, epochs, seconds,
                    seconds / count, " ".join(f"{k} {v / count:.4f}" for k, v in sums.items()), auc)
    return net.eval()


def jaccard(attention: np.ndarray, positions: np.ndarray, motion: np.ndarray,
            only_positive: bool = False) -> float:
    """Mean Jaccard index of each segment's attention (above :data:`ATTENTION_LEVEL`) with its mask."""
    values = []
    for i in range(len(motion)):
        for p in range(N_POSITIONS):
            mask = positions[i] == p + 1
            if motion[i, p] < 0 or not mask.any() or (only_positive and motion[i, p] != 1):
                continue
            seen = attention[i, p].astype(np.float32) >= ATTENTION_LEVEL
            values.append((seen & mask).sum() / (seen | mask).sum())
    return float(np.mean(values))


def _image_figures(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    flagged = scores >= threshold
    return {"cases": int(labels.size), "with_motion": int(labels.sum()),
            "auc": round(roc_auc(labels, scores), 4),
            "specificity": round(float((~flagged[~labels]).mean()), 4) if (~labels).any() else None,
            "sensitivity": round(float(flagged[labels].mean()), 4) if labels.any() else None,
            "false_banners": int((flagged & ~labels).sum())}


def evaluate(validation: dict[str, np.ndarray], predicted: dict[str, np.ndarray], threshold: float,
             held_out: str) -> dict[str, Any]:
    """Held-out metrics: per-segment AUC overall and by group, accuracy at the threshold, the image-level verdict
    (specificity, sensitivity, false red banners) overall and by sequence, level and phantom version, whole-image
    AUC and the attention Jaccard index."""
    motion = validation["motion"]
    valid = motion >= 0
    labels, scores = motion == 1, predicted["segment"]

    def segment_auc(case_mask: np.ndarray) -> dict[str, Any]:
        selected = valid & case_mask[:, None]
        return {"auc": round(roc_auc(labels[selected], scores[selected]), 4),
                "segments": int(selected.sum()), "positive": int(labels[selected].sum())}

    every = np.ones(len(motion), dtype=bool)
    predicted_positive = scores >= threshold
    whole_labels = labels.any(axis=1)
    verdict_scores = image_scores(predicted, motion)
    groups = (("field_strength_t", "field_t"), ("sequence", "sequence"), ("vendor", "vendor"), ("level", "level"),
              ("phantom", "anatomy"))
    by_group = {
        name: {str(value): segment_auc(validation[key] == value) for value in sorted(set(validation[key].tolist()))}
        for name, key in groups
    }
    by_group["position"] = {str(p + 1): {
        "auc": round(roc_auc(labels[valid[:, p], p], scores[valid[:, p], p]), 4),
        "segments": int(valid[:, p].sum()), "positive": int(labels[valid[:, p], p].sum())}
        for p in range(N_POSITIONS)}
    verdict_by = {
        name: {str(value): _image_figures(whole_labels[validation[key] == value],
                                          verdict_scores[validation[key] == value], threshold)
               for value in sorted(set(validation[key].tolist()))}
        for name, key in (("sequence", "sequence"), ("level", "level"), ("phantom", "anatomy"))
    }
    verdict_by["phantom_and_sequence"] = {
        f"{version} {sequence}": _image_figures(whole_labels[chosen], verdict_scores[chosen], threshold)
        for version in sorted(set(validation["anatomy"].tolist()))
        for sequence in sorted(set(validation["sequence"].tolist()))
        if (chosen := (validation["anatomy"] == version) & (validation["sequence"] == sequence)).any()
    }
    return {
        "held_out": held_out,
        "segment": {**segment_auc(every),
                    "accuracy": round(float((predicted_positive[valid] == labels[valid]).mean()), 4),
                    "sensitivity": round(float(predicted_positive[valid & labels].mean()), 4),
                    "specificity": round(float((~predicted_positive[valid & ~labels]).mean()), 4)},
        "segment_auc_by": by_group,
        "verdict": {**_image_figures(whole_labels, verdict_scores, threshold), "by": verdict_by},
        "whole_image": {"auc": round(roc_auc(whole_labels, predicted["whole"]), 4), "cases": int(len(motion)),
                        "positive": int(whole_labels.sum()),
                        "accuracy": round(float(((predicted["whole"] >= threshold) == whole_labels).mean()), 4)},
        "attention_jaccard": {
            "all_segments": round(jaccard(predicted["attention"], validation["crop_segments"], motion), 4),
            "positive_segments": round(jaccard(predicted["attention"], validation["crop_segments"], motion,
                                               only_positive=True), 4),
            "attention_level": ATTENTION_LEVEL},
    }


INPUTS = [
    model_card.tensor("ir_images", [None, N_IMAGES, CROP_SIZE, CROP_SIZE], meaning=(
        "raw IR magnitude images sorted by inversion time, zero-padded to 11, sampled on the LV crop grid and "
        "divided by the stack's 99th percentile (grids.normalise_images)")),
    model_card.tensor("t1_map", [None, 1, CROP_SIZE, CROP_SIZE],
                      meaning="T1 map on the crop grid, grids.normalise_map (1st/99th percentiles to 0/1)"),
    model_card.tensor("r2_map", [None, 1, CROP_SIZE, CROP_SIZE], meaning="R2 (0..1) of the T1 fit on the crop grid"),
    model_card.tensor("segments", [None, N_POSITIONS, CROP_SIZE, CROP_SIZE], meaning=(
        "one-hot AHA segment layout by position within the level: channel k is AHA k+1 (basal), k+7 (mid), "
        "k+13 (apical, channels 5-6 empty)")),
]
OUTPUTS = [
    model_card.tensor("segment_logits", [None, N_POSITIONS], meaning="motion artefact logit per segment position"),
    model_card.tensor("whole_logit", [None, 1], meaning="motion artefact logit of the whole image"),
    model_card.tensor("attention", [None, N_POSITIONS, CROP_SIZE, CROP_SIZE],
                      meaning="class activation map of each segment output, scaled to 0..1 per map"),
]


def predict_onnx(path: Path, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`predict` with an exported model (the one a new model replaces), as onnxruntime runs it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    segment, whole, attention = [], [], []
    for start in range(0, len(data["motion"]), 64):
        part = slice(start, start + 64)
        batch = _tensors(data["crop_images"][part].astype(np.float32), data["crop_map"][part].astype(np.float32),
                         data["crop_r2"][part].astype(np.float32), data["crop_segments"][part], data["motion"][part])
        s, w, a = session.run(None, {t["name"]: batch[t["name"]].numpy() for t in INPUTS})
        segment.append(1.0 / (1.0 + np.exp(-s)))
        whole.append(1.0 / (1.0 + np.exp(-w[:, 0])))
        attention.append(a.astype(np.float16))
    return {"segment": np.concatenate(segment), "whole": np.concatenate(whole),
            "attention": np.concatenate(attention)}


def export(net: MotionNet, validation: dict[str, np.ndarray], out: Path) -> tuple[Path, float]:
    """Export to ONNX and return the largest difference between onnxruntime and torch outputs on 16 cases."""
    sample = _tensors(validation["crop_images"][:16].astype(np.float32), validation["crop_map"][:16].astype(np.float32),
                      validation["crop_r2"][:16].astype(np.float32), validation["crop_segments"][:16],
                      validation["motion"][:16])
    example = tuple(sample[t["name"]] for t in INPUTS)
    path = model_card.export_onnx(net, example, out / "motion.onnx", input_names=[t["name"] for t in INPUTS],
                                  output_names=[t["name"] for t in OUTPUTS])
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, {t["name"]: sample[t["name"]].numpy() for t in INPUTS})
    with torch.no_grad():
        torch_outputs = net(*example)
    difference = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(onnx_outputs, torch_outputs, strict=True))
    if difference > 1e-3:
        raise RuntimeError(f"onnxruntime and torch outputs differ by {difference}")
    return path, difference


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODELS_FOLDER)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--train", type=Path, nargs="+", default=list(TRAIN_PATHS))
    parser.add_argument("--validation", type=Path, nargs="+", default=list(VALIDATION_PATHS))
    parser.add_argument("--previous", type=Path, default=MODELS_FOLDER / "motion.onnx",
                        help="the model to compare with (measured on the same held-out cases)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    started = time.monotonic()
    train_data, validation = t1_cases(*arguments.train), t1_cases(*arguments.validation)
    LOGGER.info("%d training and %d validation T1 cases", len(train_data["motion"]), len(validation["motion"]))
    # The operating point is chosen on the even studies of the validation sets, every figure measured on the odd.
    choosing = validation["study"] % 2 == 0
    calibration, held_out = subset(validation, choosing), subset(validation, ~choosing)
    held_out_text = (f"odd-numbered studies of {', '.join(path.name for path in arguments.validation)}, T1 cases "
                     f"({len(held_out['motion'])} slices); the threshold was chosen on the even-numbered ones")
    previous = None
    if arguments.previous.is_file():  # measured before the export may overwrite it
        previous_threshold = float(json.loads(arguments.previous.with_suffix(".json").read_text())["metrics"][
            "decision_threshold"])
        previous = evaluate(held_out, predict_onnx(arguments.previous, held_out), previous_threshold, held_out_text)
        previous["decision_threshold"] = previous_threshold
    net = train(train_data, validation, arguments.epochs)
    threshold = specific_threshold(calibration["motion"].max(axis=1) == 1,
                                   image_scores(predict(net, calibration), calibration["motion"]),
                                   TARGET_IMAGE_SPECIFICITY)
    predicted = predict(net, held_out)
    metrics = evaluate(held_out, predicted, threshold, held_out_text)
    if previous is not None:
        metrics["previous_model"] = previous
    path, difference = export(net, validation, arguments.out)
    positives = int((train_data["motion"] == 1).sum())
    card = model_card.write_card(
        path, name="myomap-motion", version=VERSION,
        task="motion artefact per AHA segment and for the whole image, from a T1 mapping slice",
        architecture=(
            "multi-stream CNN: one residual stream per input kind (IR stack 24 channels, T1 map 8, R2 map 8, "
            "stride 2 to 2.5 mm on the central 80 x 80 pixels), fused by concatenation with the segment layout, "
            "a residual block, a 5 mm context branch (dilated residual block) added back; CAM head: features "
            "upsampled to 1.25 mm with the segment layout, 1x1 conv to 6 segment maps, segment logit = mean of its "
            "map over its segment; whole-image logit = linear layer on global mean and max pooled features. "
            "Attention supervision: cross-entropy of each map's spatial softmax against its segment mask plus "
            f"{JACCARD_WEIGHT} x soft Jaccard distance of the 0..1 scaled map to the mask (weight {ATTENTION_WEIGHT}). "
            f"{sum(p.numel() for p in net.parameters())} parameters."),
        inputs=INPUTS, outputs=OUTPUTS,
        preprocessing=(
            f"All inputs on the {CROP_SIZE} x {CROP_SIZE} crop grid of {GRID_SPACING_MM} mm centred on the LV centre "
            "(inference/grids.py lv_grid, linear interpolation; the segment layout nearest neighbour). IR images: "
            "sorted by inversion time, zero-padded to 11, sampled, then grids.normalise_images over the stack. T1: "
            "grids.normalise_map of the sampled map. R2: sampled as is. Segments: AHA numbers from "
            "inference/aha.py aha_segments to positions 1-6 within the level, one channel per position."),
        postprocessing=(
            "sigmoid of segment_logits and whole_logit; a segment (and the image) has a motion artefact when its "
            f"probability is at or above decision_threshold = {threshold:.4f} (metrics.decision_threshold: the "
            f"lowest with an image-level specificity of at least {TARGET_IMAGE_SPECIFICITY} on the even-numbered "
            "validation studies). Attention maps are resampled back onto the map's pixels (grids.to_source)."),
        training={
            "data": f"{', '.join(str(path) for path in arguments.train)}: phantom v1 and v2 studies, T1 cases only "
                    f"({len(train_data['motion'])} slices, {int((train_data['motion'] >= 0).sum())} segments, "
                    f"{positives} with motion), motion rate 0.5",
            "labels": "phantom motion rule per AHA segment (phantom/motion.py): border displacement across the "
                      "border above half the segment's wall thickness in any frame; whole image = any segment",
            "augmentation": "IR gain 0.85-1.15 per slice and 0.96-1.04 per frame, noise 0.01; map gain 0.93-1.07 "
                            f"and offset +-0.04; segment layout rotated by up to {LAYOUT_ROTATION_DEG:.0f} deg "
                            f"(probability {LAYOUT_ROTATION_PROBABILITY})",
            "epochs": arguments.epochs, "batch_size": BATCH_SIZE, "optimiser": f"AdamW one-cycle {LEARNING_RATE}",
            "loss": f"BCE per segment + {WHOLE_WEIGHT} BCE whole image + {ATTENTION_WEIGHT} attention",
            "seed": SEED, "validation": f"{', '.join(str(path) for path in arguments.validation)}",
            "command": "python -m training.motion --out inference/models --train " + " ".join(
                str(path) for path in arguments.train) + " --validation " + " ".join(
                str(path) for path in arguments.validation),
            "training_seconds": round(time.monotonic() - started),
            "onnx_vs_torch_max_difference": difference,
        },
        metrics={"decision_threshold": round(threshold, 4), **metrics},
    )
    load_model(path)  # the card's contract holds
    LOGGER.info("wrote %s and %s\n%s", path, card, json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
