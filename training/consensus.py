"""Train, validate and export the consensus model: (map, one reader's myocardium) -> the expert-consensus myocardium.

``python -m training.consensus --out inference/models`` writes ``consensus.onnx`` and its card.

Target: in the phantom the experts' contours are smooth random perturbations of the truth, so the contour they
converge to is the truth itself; the model learns the truth myocardium from every reader's contour (3 experts and
4 trainees per slice).

Crops: the packed data sets (training/datasets.py) centre each crop on the truth heart plus a small jitter, while
at run time the crop is centred on the reader's filled myocardium (inference/expert_consensus.py). Training
therefore re-centres every (slice, reader) pair on that reader's own centroid, with a sub-millimetre jitter, by
cutting an 80 x 80 window from the 96 x 96 crop (the network is fully convolutional and runs on the whole crop at
run time; the myocardium lies within 36 pixels of the centre).

Held-out figures: the packed validation set on the model grid while training, then the validation studies (seed
200000) at the image's own resolution through the ONNX model and the runtime's own pre- and post-processing.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional

from inference.expert_consensus import INPUT_NAME, OUTPUT_NAME, expert_consensus_mask
from inference.grids import CROP_SIZE, GRID_SPACING_MM
from inference.runtime import Model
from phantom.readers import dice
from training.consensus_net import WIDTHS, ConsensusNet, parameter_count
from training.datasets import load
from training.model_card import export_onnx, tensor, write_card
from training.phantom_slices import MYOCARDIUM, VALIDATION_SEED, iter_cases

LOGGER = logging.getLogger(__name__)

NAME = "consensus"
VERSION = "1.0.0"
SEED = 100_001
PATCH_SIZE = 80
CENTRE_JITTER_PX = 0.8
BATCH_SIZE = 16
STEPS = 1800
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
VALIDATE_EVERY = 600
VALIDATION_STRIDE = 4
EXPERTS = 3  # readers 0-2 of the packed sets; 3-6 are trainees
ONNX_TOLERANCE = 1e-3


class PairSet:
    """(slice, reader) pairs of a packed data set, each with the crop-grid centroid of the reader's filled
    myocardium (row, column)."""

    def __init__(self, path: Path) -> None:
        data = load(path)
        self.maps = data["crop_map"].astype(np.float32)
        self.readers = data["crop_readers"]
        self.truth = data["crop_labels"] == MYOCARDIUM
        self.modes = data["reader_modes"]
        self.n_studies = int(np.unique(data["study"]).size)
        pairs, centres = [], []
        for case in range(self.readers.shape[0]):
            for reader in range(self.readers.shape[1]):
                mask = self.readers[case, reader]
                if not mask.any():
                    continue
                rows, columns = np.nonzero(ndimage.binary_fill_holes(mask))
                pairs.append((case, reader))
                centres.append((rows.mean(), columns.mean()))
        self.pairs = np.array(pairs, dtype=np.int64)
        self.centres = np.array(centres, dtype=np.float64)
        LOGGER.info("%s: %d slices, %d reader contours", path, self.readers.shape[0], len(self.pairs))

    def window(self, index: int, size: int, jitter_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input (2, size, size) and target (size, size) of pair ``index``, centred on the reader's centroid
        plus ``jitter_px`` (row, column); edge values fill what lies outside the packed crop."""
        case, reader = self.pairs[index]
        start = np.rint(self.centres[index] + jitter_px - (size - 1) / 2.0).astype(int)
        margin = CROP_SIZE
        rows = slice(start[0] + margin, start[0] + margin + size)
        columns = slice(start[1] + margin, start[1] + margin + size)
        map_padded = np.pad(self.maps[case], margin, mode="edge")
        mask_padded = np.pad(self.readers[case, reader], margin)
        truth_padded = np.pad(self.truth[case], margin)
        pair = np.stack([map_padded[rows, columns], mask_padded[rows, columns].astype(np.float32)])
        return pair, truth_padded[rows, columns]

    def batch(self, indices: Iterable[int], size: int, rng: np.random.Generator | None) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
        inputs, targets = [], []
        for index in indices:
            jitter = rng.normal(0.0, CENTRE_JITTER_PX, 2) if rng is not None else np.zeros(2)
            pair, truth = self.window(int(index), size, jitter)
            inputs.append(pair)
            targets.append(truth)
        return (torch.from_numpy(np.stack(inputs)),
                torch.from_numpy(np.stack(targets)[:, np.newaxis].astype(np.float32)))


def loss_function(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice: the Dice term keeps the thin ring from being traded for background."""
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum(dim=(1, 2, 3))
    soft_dice = (2.0 * intersection + 1.0) / (probability.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
    return functional.binary_cross_entropy_with_logits(logits, target) + (1.0 - soft_dice).mean()


def grid_dice(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice per item of (N, H, W) boolean stacks."""
    intersection = np.logical_and(prediction, truth).sum(axis=(1, 2))
    total = prediction.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))
    return np.where(total > 0, 2.0 * intersection / np.maximum(total, 1), 1.0)


def validate_on_grid(net: ConsensusNet, pairs: PairSet, *, stride: int = VALIDATION_STRIDE,
                     batch_size: int = 64) -> dict[str, float]:
    """Dice to the truth of the reader's crop and of the model's, on the full 96 x 96 crop grid, for every
    ``stride``-th pair (a stride prime to the 7 readers of a slice visits every reader)."""
    net.eval()
    selected = np.arange(0, len(pairs.pairs), stride)
    inputs_dice, outputs_dice = [], []
    with torch.no_grad():
        for start in range(0, selected.size, batch_size):
            inputs, targets = pairs.batch(selected[start:start + batch_size], CROP_SIZE, None)
            predicted = (net(inputs) > 0).numpy()[:, 0]
            truth = targets.numpy()[:, 0] > 0.5
            inputs_dice.append(grid_dice(inputs.numpy()[:, 1] > 0.5, truth))
            outputs_dice.append(grid_dice(predicted, truth))
    net.train()
    reader_dice, model_dice = np.concatenate(inputs_dice), np.concatenate(outputs_dice)
    trainee = pairs.pairs[selected, 1] >= EXPERTS
    return {
        "mean_dice_input": float(reader_dice.mean()),
        "mean_dice_consensus": float(model_dice.mean()),
        "trainee_fraction_closer_to_truth": float((model_dice[trainee] > reader_dice[trainee]).mean()),
    }


def train(train_path: Path, validation_path: Path, *, steps: int = STEPS, seed: int = SEED) -> tuple[
        ConsensusNet, dict[str, Any]]:
    """Train on ``train_path``; keep the weights that do best on ``validation_path`` (mean Dice on the grid)."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    training_pairs = PairSet(train_path)
    validation_pairs = PairSet(validation_path)
    net = ConsensusNet()
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LEARNING_RATE, total_steps=steps,
                                                   pct_start=0.1)
    best_score, best_state, history = -1.0, copy.deepcopy(net.state_dict()), []
    started = time.monotonic()
    running = 0.0
    for step in range(1, steps + 1):
        indices = rng.integers(0, len(training_pairs.pairs), BATCH_SIZE)
        inputs, targets = training_pairs.batch(indices, PATCH_SIZE, rng)
        loss = loss_function(net(inputs), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item()
        if step % 100 == 0:
            LOGGER.info("step %d/%d loss %.4f (%.2f s per batch)", step, steps, running / 100,
                        (time.monotonic() - started) / step)
            running = 0.0
        if step % VALIDATE_EVERY == 0 or step == steps:
            scores = validate_on_grid(net, validation_pairs)
            history.append({"step": step, **{key: round(value, 4) for key, value in scores.items()}})
            LOGGER.info("validation at step %d: %s", step, scores)
            if scores["mean_dice_consensus"] > best_score:
                best_score, best_state = scores["mean_dice_consensus"], copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    summary = {
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "training_pairs": int(len(training_pairs.pairs)),
        "training_slices": int(training_pairs.readers.shape[0]),
        "training_studies": training_pairs.n_studies,
        "validation_history": history,
        "best_validation_grid": max(history, key=lambda item: item["mean_dice_consensus"]),
        "training_seconds": round(time.monotonic() - started, 1),
    }
    return net, summary


def onnx_matches_torch(net: ConsensusNet, onnx_path: Path, pairs: PairSet, n: int = 32) -> float:
    """Largest absolute difference of the logits of onnxruntime and torch on ``n`` validation inputs."""
    import onnxruntime as ort

    inputs, _ = pairs.batch(range(min(n, len(pairs.pairs))), CROP_SIZE, None)
    with torch.no_grad():
        expected = net(inputs).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0]
    return float(np.abs(got - expected).max())


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    reader = np.array([row["dice_input"] for row in rows])
    model = np.array([row["dice_consensus"] for row in rows])
    return {
        "n": len(rows),
        "fraction_closer_to_truth": round(float((model > reader).mean()), 4),
        "mean_dice_input": round(float(reader.mean()), 4),
        "mean_dice_consensus": round(float(model.mean()), 4),
    }


def _grouped(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    return {name: _summarise(items) for name, items in sorted(groups.items())}


def evaluate_native(model: Model, *, seed: int = VALIDATION_SEED, n_studies: int = 40,
                    workers: int = 1) -> dict[str, Any]:
    """Held-out figures at the image's own resolution: every reader's contour of every slice of ``n_studies``
    studies of ``seed`` through :func:`expert_consensus_mask`."""
    rows = []
    seconds = 0.0
    for case in iter_cases(seed, n_studies, workers=workers):
        truth = case.myocardium_mask
        for role, mode, mask in zip(case.reader_roles, case.reader_error_modes, case.reader_masks, strict=True):
            started = time.perf_counter()
            consensus = expert_consensus_mask(case.map_ms, mask, case.pixel_spacing_mm, model)
            seconds += time.perf_counter() - started
            rows.append({
                "role": role,
                "error_mode": mode or "expert",
                "field_t": case.field_t,
                "sequence": case.sequence.value,
                "level": case.level.value,
                "dice_input": dice(mask, truth),
                "dice_consensus": dice(consensus, truth),
            })
    result: dict[str, Any] = {"seed": seed, "studies": n_studies, "ms_per_call": round(1000 * seconds / len(rows), 2)}
    for role in ("trainee", "expert"):
        selected = [row for row in rows if row["role"] == role]
        summary = _summarise(selected)
        if role == "trainee":
            summary["by_error_mode"] = _grouped(selected, "error_mode")
        summary |= {f"by_{key}": _grouped(selected, key) for key in ("field_t", "sequence", "level")}
        result[f"{role}s"] = summary
    return result


def _card(onnx_path: Path, training: dict[str, Any], metrics: dict[str, Any]) -> Path:
    return write_card(
        onnx_path,
        name=NAME,
        version=VERSION,
        task=("Expert-consensus myocardium from a T1 or T2 map and one reader's myocardium contour: the contour the "
              "experts converge to, for scoring and teaching trainees."),
        architecture=(f"U-Net, fully convolutional: widths {list(WIDTHS)}, 3 max-poolings, bilinear upsampling, "
                      "two 3x3 conv + batch norm + ReLU per level, 1x1 head; "
                      f"{parameter_count(ConsensusNet())} parameters"),
        inputs=[tensor(INPUT_NAME, [None, 2, CROP_SIZE, CROP_SIZE],
                       meaning="channel 0: map on the crop grid, normalise_map; channel 1: reader's myocardium 0/1")],
        outputs=[tensor(OUTPUT_NAME, [None, 1, CROP_SIZE, CROP_SIZE],
                        meaning="myocardium logit on the crop grid")],
        preprocessing=(f"Crop grid (inference.grids.lv_grid): {CROP_SIZE} x {CROP_SIZE} pixels of {GRID_SPACING_MM} "
                       "mm centred on the centroid of the reader's filled myocardium (scipy.ndimage."
                       "binary_fill_holes: the ring and its cavity). Channel 0: the map sampled linearly, then "
                       "normalise_map (1st and 99th percentiles of the non-zero crop to 0 and 1, clipped to "
                       "[-0.5, 1.5]). Channel 1: the reader's mask sampled linearly, then >= 0.5."),
        postprocessing=("Sigmoid, back to the map's pixels with inference.grids.to_source (linear), >= 0.5, largest "
                        "8-connected component (inference.expert_consensus.expert_consensus_mask)."),
        training=training,
        metrics=metrics,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("inference/models"))
    parser.add_argument("--train", type=Path, default=Path("data/training/train.npz"))
    parser.add_argument("--validation", type=Path, default=Path("data/training/validation.npz"))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--eval-studies", type=int, default=40)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    net, summary = train(arguments.train, arguments.validation, steps=arguments.steps)
    onnx_path = export_onnx(net, (torch.zeros(1, 2, CROP_SIZE, CROP_SIZE),), arguments.out / f"{NAME}.onnx",
                            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    difference = onnx_matches_torch(net, onnx_path, PairSet(arguments.validation))
    LOGGER.info("onnxruntime vs torch: largest logit difference %.2e", difference)
    if difference > ONNX_TOLERANCE:
        raise SystemExit(f"onnxruntime and torch disagree by {difference:.2e} (tolerance {ONNX_TOLERANCE})")

    training = {
        "data": (f"{arguments.train} (phantom seed 100000, {summary['training_studies']} studies; every reader of "
                 "every slice: 3 experts and 4 trainees of drawn error modes); model selection on "
                 f"{arguments.validation} (seed 200000)"),
        "target": ("The truth myocardium. In the phantom the experts' contours scatter around the truth, so the truth "
                   "is the consensus the experts converge to."),
        "recentring": (f"{PATCH_SIZE} x {PATCH_SIZE} windows of the packed crops centred on the reader's filled "
                       f"myocardium (as at run time) with a {CENTRE_JITTER_PX} pixel jitter"),
        "loss": "binary cross-entropy + soft Dice",
        "optimiser": f"AdamW, one-cycle learning rate to {LEARNING_RATE}, weight decay {WEIGHT_DECAY}",
        "seed": SEED,
        "threads": 1,
        **summary,
    }
    _card(onnx_path, training, {"status": "evaluation pending"})  # the runtime needs a card to load the model
    started = time.monotonic()
    native = evaluate_native(Model(onnx_path, threads=1), n_studies=arguments.eval_studies)
    LOGGER.info("native-resolution evaluation took %.0f s", time.monotonic() - started)
    metrics = {
        "held_out": ("Validation studies (seed 200000) at each image's own resolution: Dice to the truth of each "
                     "reader's contour (input) and of the consensus drawn from it"),
        "native_resolution": native,
        "validation_grid": summary["best_validation_grid"],
        "onnx_vs_torch_max_abs_logit": difference,
    }
    card = _card(onnx_path, training, metrics)
    LOGGER.info("wrote %s and %s: trainees %s, experts %s", onnx_path, card,
                {key: native["trainees"][key] for key in ("fraction_closer_to_truth", "mean_dice_input",
                                                          "mean_dice_consensus")},
                {key: native["experts"][key] for key in ("fraction_closer_to_truth", "mean_dice_input",
                                                         "mean_dice_consensus")})


if __name__ == "__main__":
    main()
