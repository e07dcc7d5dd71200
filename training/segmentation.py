"""Train the myocardium segmentation model on the phantom and real Sunnybrook slices, export it to ONNX and write
its model card.

    python -m training.segmentation --out inference/models

The network (training/unet.py) sees the segmentation grid of inference/grids.py: the map sampled at 1.25 mm on
128 x 128 pixels around the image centre, normalised per image. It trains on random 96 x 96 crops of that grid that
hold the whole heart (a fully convolutional network reads the full grid at inference; the crops cost half the
time of full grids on a CPU), with the 8 flips and right-angle rotations.

Version 1 learnt the phantom's appearance and failed on in-vivo maps (endocardium inside the blood pool). Version 2
trains for transfer: every batch mixes phantom grids and real labelled cine short-axis slices of the Sunnybrook
Cardiac Data (training/sunnybrook.py, oversampled to :attr:`TrainingConfig.sunnybrook_fraction` of each batch,
one patient held out), with heavy geometric augmentation (rotation, scale 0.7-1.4, elastic deformation,
translation) and SynthSeg-style domain randomisation (training/domain_randomisation.py: random per-region
intensities, noise, blur, bias field, gamma, occasionally reversed blood/myocardium contrast) on part of the
samples, the rest keeping their own appearance with milder intensity changes.
Loss: cross-entropy plus the soft Dice of the myocardium, whose thin ring cross-entropy alone underweights. On
Sunnybrook images without a usable epicardial contour only the cavity is known: their other pixels count as
"background or myocardium" (the log of the summed probabilities) and they take no part in the Dice term.

The checkpoint with the best myocardium Dice on the phantom validation grids is exported, checked against
onnxruntime, and measured through the same code the node runs (inference/segmentation.py, contour fitting,
Hausdorff distances) on held-out phantom studies at each map's own resolution and on the held-out Sunnybrook
patient (Dice, Hausdorff distances and the coverage of the experts' mid-wall region); the card records it all,
beside the same figures of the model it replaces.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from inference.contour_fit import fit_contours
from inference.errors import AnalysisError
from inference.grids import GRID_SPACING_MM, NORMALISATION_PERCENTILES, SEGMENTATION_SIZE
from inference.metrics import dice, hausdorff_mm
from inference.runtime import Device, Model
from inference.segmentation import INPUT_NAME, OUTPUT_NAME, segment_maps
from phantom.sidecar import PHANTOM_VERSION
from training import sunnybrook
from training.domain_randomisation import random_appearance, random_geometry, random_intensity
from training.model_card import PHANTOM_AND_CINE, export_onnx, tensor, write_card
from training.phantom_slices import TRAINING_SEED, VALIDATION_SEED, VALIDATION_SEED_V2, SliceCase, iter_cases
from training.unet import ResidualBlock, UNet, count_parameters

LOGGER = logging.getLogger(__name__)

NAME = "segmentation"
VERSION = "2.0.0"
N_CLASSES = 3
MYOCARDIUM = 2
T2_SEQUENCE = "t2prep"
TRAIN_PATH = Path("data/training/train.npz")
VALIDATION_PATH = Path("data/training/validation.npz")
TRAIN_PATHS = (TRAIN_PATH, Path("data/training/train_v2.npz"))
VALIDATION_PATHS = (VALIDATION_PATH, Path("data/training/validation_v2.npz"))
CHECKPOINT_PATH = Path("data/training/segmentation_best.pt")
#: onnxruntime and torch compute the same graph in a different order; float32 rounding stays far below this.
MAX_EXPORT_DIFFERENCE = 1e-3
HELD_OUT_STUDIES = 40
HELD_OUT_STUDIES_V2 = 20
PUBLISHED_HAUSDORFF_MM = 2.65  # inter-expert agreement of endo/epi contours in T1/T2 maps
TARGET_DICE = 0.93
SUNNYBROOK_ROOT = sunnybrook.SUNNYBROOK_ROOT
TARGET_SUNNYBROOK_DICE = 0.85
TARGET_MID_WALL_COVERAGE = 0.95
NOT_CAVITY = sunnybrook.NOT_CAVITY
VALIDATION_STATEMENT = PHANTOM_AND_CINE

PREPROCESSING = (
    "Input 'map' float32 [N, 1, 128, 128]. The T1 or T2 map in ms (NaN and 0 mark pixels without a value, NaN read "
    f"as 0) is resampled bilinearly (zero outside the image) onto a {SEGMENTATION_SIZE} x {SEGMENTATION_SIZE} grid "
    f"of {GRID_SPACING_MM} mm pixels centred on the image centre ((columns - 1) / 2, (rows - 1) / 2), using the "
    "map's PixelSpacing (row, column); the grid is not rotated. The grid is then normalised on its own: the "
    f"percentiles {NORMALISATION_PERCENTILES[0]:g} and {NORMALISATION_PERCENTILES[1]:g} of its finite non-zero "
    "pixels become 0 and 1, values are clipped to [-0.5, 1.5], and a grid with fewer than 16 such pixels is all "
    "zeros (inference/grids.py image_centre_grid, sample, normalise_map)."
)
POSTPROCESSING = (
    "Softmax over the 3 classes of 'logits' (0 background, 1 LV cavity with papillary muscles, 2 myocardium); the "
    "probabilities are resampled bilinearly back onto the map's pixels (outside the grid the background takes the "
    "missing weight) and each pixel takes the most probable class. The largest 8-connected myocardium component is "
    "kept; of the holes it encloses, the one holding most predicted cavity is the cavity and the others join the "
    "myocardium; when the ring is open, the cavity is the largest predicted cavity component touching it "
    "(inference/segmentation.py segment_map)."
)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides a training run (recorded in the card)."""

    epochs: int = 40  # at most; the time budget ends training first
    steps_per_epoch: int = 300
    batch_size: int = 8
    crop_px: int = 96
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    base_channels: int = 16
    levels: int = 4
    seed: int = TRAINING_SEED
    t2_weight: float = 2.0  # T2 maps (a third of the cases, the noisier 3-point fits) are drawn this much more often
    intensity_scale: float = 0.1  # maps are multiplied by U(1 - s, 1 + s)
    intensity_shift: float = 0.05  # and shifted by U(-s, s)
    time_budget_s: float = 16 * 60.0  # the learning rate follows the time spent; training stops when it is spent
    sunnybrook_fraction: float = 0.375  # of each batch: real Sunnybrook slices (3 of 8)
    randomised_fraction: float = 0.5  # of the samples: SynthSeg-style random appearance instead of their own
    geometry_fraction: float = 0.8  # of the samples: random rotation, scale, translation, elastic deformation
    held_out_patient: str = sunnybrook.HELD_OUT_PATIENT
    initial_model: str = ""  # an exported model (.onnx) to fine-tune; from scratch when empty
    freeze_batch_norm: bool = False  # keep the batch norms' statistics (needed when fine-tuning an export)
    export_last: bool = False  # export the last checkpoint rather than the best on the phantom validation grids


@dataclass
class TrainingRun:
    """What a training run did."""

    config: TrainingConfig
    epochs_run: int = 0
    steps_run: int = 0
    best_epoch: int = 0
    best_validation_dice: float = 0.0
    seconds: float = 0.0
    seconds_per_batch: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def load_grids(*paths: Path) -> dict[str, np.ndarray]:
    """The segmentation-grid arrays of packed data sets (training/datasets.py), read without the others and
    concatenated; ``anatomy`` says which phantom version drew each grid, ``source`` which file it came from.

    The .npz is not compressed, so only these members are read from disk.
    """
    parts: list[dict[str, np.ndarray]] = []
    for path in paths:
        with np.load(path) as data:
            part = {key: data[key] for key in ("seg_map", "seg_labels", "study", "sequence", "level")}
            part["anatomy"] = data["anatomy"] if "anatomy" in data.files else np.full(len(part["study"]), "v1")
        part["source"] = np.full(len(part["study"]), path.name)
        parts.append(part)
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def heart_boxes(labels: np.ndarray) -> np.ndarray:
    """(N, 4) row_min, row_max, column_min, column_max of the heart (cavity or myocardium) of every label grid."""
    heart = labels > 0
    rows = np.asarray(heart.any(axis=2))  # asarray: numpy types any(axis=...) as array or scalar by ndim
    columns = np.asarray(heart.any(axis=1))
    size = labels.shape[-1]
    first_row, first_column = rows.argmax(axis=1), columns.argmax(axis=1)
    last_row = size - 1 - rows[:, ::-1].argmax(axis=1)
    last_column = size - 1 - columns[:, ::-1].argmax(axis=1)
    return np.stack([first_row, last_row, first_column, last_column], axis=1)


def _crop_start(low: int, high: int, size: int, crop: int, rng: np.random.Generator) -> int:
    """A crop start that keeps [low, high] inside the crop when it fits, else any start."""
    first, last = max(0, high + 1 - crop), min(low, size - crop)
    if first > last:
        first, last = 0, size - crop
    return int(rng.integers(first, last + 1))


def augmented_batch(maps: np.ndarray, labels: np.ndarray, boxes: np.ndarray, indices: np.ndarray,
                    config: TrainingConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops holding the heart, a random one of the 8 flips/rotations each, intensity scaled and shifted."""
    crop = config.crop_px
    size = maps.shape[-1]
    batch_maps = np.empty((len(indices), 1, crop, crop), dtype=np.float32)
    batch_labels = np.empty((len(indices), crop, crop), dtype=np.int64)
    for position, index in enumerate(indices):
        row_min, row_max, column_min, column_max = boxes[index]
        top = _crop_start(row_min, row_max, size, crop, rng)
        left = _crop_start(column_min, column_max, size, crop, rng)
        image = maps[index, top:top + crop, left:left + crop].astype(np.float32)
        label = labels[index, top:top + crop, left:left + crop]
        turns = int(rng.integers(4))
        image, label = np.rot90(image, turns), np.rot90(label, turns)
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        scale = rng.uniform(1.0 - config.intensity_scale, 1.0 + config.intensity_scale)
        shift = rng.uniform(-config.intensity_shift, config.intensity_shift)
        batch_maps[position, 0] = image * scale + shift
        batch_labels[position] = label
    return torch.from_numpy(batch_maps), torch.from_numpy(batch_labels)


def robust_batch(maps: np.ndarray, labels: np.ndarray, indices: np.ndarray, config: TrainingConfig,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented crops of full 128 x 128 grids: random geometry (``geometry_fraction`` of the samples), then a
    random appearance (``randomised_fraction``) or the sample's own with milder intensity changes, then a crop
    holding the heart and one of the 8 flips/rotations."""
    crop = config.crop_px
    size = maps.shape[-1]
    batch_maps = np.empty((len(indices), 1, crop, crop), dtype=np.float32)
    batch_labels = np.empty((len(indices), crop, crop), dtype=np.int64)
    for position, index in enumerate(indices):
        image, label = maps[index].astype(np.float32), labels[index]
        if rng.random() < config.geometry_fraction:
            image, label = random_geometry(image, label, rng)
        if rng.random() < config.randomised_fraction:
            image = random_appearance(image, label, rng)
        else:
            image = random_intensity(image, rng)
        heart = (label == 1) | (label == MYOCARDIUM)
        if heart.any():
            row_min, row_max, column_min, column_max = heart_boxes(heart[None].astype(np.uint8))[0]
        else:
            row_min, row_max, column_min, column_max = 0, size - 1, 0, size - 1
        top = _crop_start(int(row_min), int(row_max), size, crop, rng)
        left = _crop_start(int(column_min), int(column_max), size, crop, rng)
        image, label = image[top:top + crop, left:left + crop], label[top:top + crop, left:left + crop]
        turns = int(rng.integers(4))
        image, label = np.rot90(image, turns), np.rot90(label, turns)
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        batch_maps[position, 0] = image
        batch_labels[position] = label
    return torch.from_numpy(batch_maps), torch.from_numpy(batch_labels)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus (1 - soft Dice of the myocardium), the Dice taken per image and averaged.

    Pixels labelled NOT_CAVITY (background or myocardium, unknown) add -log(p_background + p_myocardium) to the
    cross-entropy; images holding such pixels take no part in the Dice term.
    """
    log_probability = functional.log_softmax(logits, dim=1)
    unknown = target == NOT_CAVITY
    known_log = log_probability.gather(1, target.clamp(max=N_CLASSES - 1)[:, None])[:, 0]
    either_log = torch.logsumexp(log_probability[:, [0, MYOCARDIUM]], dim=1)
    cross_entropy = -torch.where(unknown, either_log, known_log).mean()
    full = ~unknown.flatten(1).any(dim=1)
    if not bool(full.any()):
        return cross_entropy
    probability = log_probability[full, MYOCARDIUM].exp()
    truth = (target[full] == MYOCARDIUM).float()
    overlap = (probability * truth).sum(dim=(1, 2))
    total = probability.sum(dim=(1, 2)) + truth.sum(dim=(1, 2))
    soft_dice = (2.0 * overlap + 1.0) / (total + 1.0)
    return cross_entropy + (1.0 - soft_dice.mean())


@torch.no_grad()
def predict_grids(model: torch.nn.Module, maps: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Argmax labels of the model on full grids (N, 128, 128)."""
    model.eval()
    out = []
    for start in range(0, len(maps), batch_size):
        batch = torch.from_numpy(maps[start:start + batch_size, None].astype(np.float32))
        out.append(model(batch).argmax(dim=1).numpy().astype(np.uint8))
    return np.concatenate(out)


def grid_dice(predicted: np.ndarray, labels: np.ndarray, label: int = MYOCARDIUM) -> np.ndarray:
    """Dice of one class per grid, (N,)."""
    a, b = predicted == label, labels == label
    overlap = (a & b).sum(axis=(1, 2))
    total = a.sum(axis=(1, 2)) + b.sum(axis=(1, 2))
    return np.where(total > 0, 2.0 * overlap / np.maximum(total, 1), 1.0)


def learning_rate(fraction: float, peak: float) -> float:
    """The learning rate at ``fraction`` (0..1) of the time budget: linear warm-up over the first 10 %, then a
    cosine decay to 1 % of ``peak``. Scheduling by time rather than by step lets a run on a busy or slow CPU still
    finish its schedule within the budget."""
    if fraction < 0.1:
        return peak * max(fraction / 0.1, 0.04)
    progress = min((fraction - 0.1) / 0.9, 1.0)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * progress)))


def train(train_data: dict[str, np.ndarray], validation_data: dict[str, np.ndarray], config: TrainingConfig,
          checkpoint_path: Path, real_data: dict[str, np.ndarray]) -> TrainingRun:
    """Train from scratch with fixed seeds on phantom grids (``train_data``) and real ones (``real_data``,
    training/sunnybrook.py to_grids); the best epoch (phantom validation myocardium Dice on the grids) is saved
    to ``checkpoint_path``."""
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n_phantom, n_real = len(train_data["seg_map"]), len(real_data["seg_map"])
    maps = np.concatenate([train_data["seg_map"], real_data["seg_map"]])
    labels = np.concatenate([train_data["seg_labels"], real_data["seg_labels"]])
    weights = np.where(train_data["sequence"] == T2_SEQUENCE, config.t2_weight, 1.0)
    weights /= weights.sum()
    real_per_batch = int(round(config.sunnybrook_fraction * config.batch_size)) if n_real else 0
    model = UNet(base_channels=config.base_channels, levels=config.levels)
    if config.initial_model:
        difference = initialise_from_onnx(model, Path(config.initial_model))
        LOGGER.info("initialised from %s (logits within %.1e of its export)", config.initial_model, difference)
    LOGGER.info("U-Net: %d parameters; %d phantom and %d real training grids (%d of %d per batch), %d validation "
                "grids", count_parameters(model), n_phantom, n_real, real_per_batch, config.batch_size,
                len(validation_data["seg_map"]))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = config.steps_per_epoch
    run = TrainingRun(config=config)
    started = time.perf_counter()
    batch_seconds = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        if config.freeze_batch_norm:
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
        losses = []
        for step in range(steps_per_epoch):
            tick = time.perf_counter()
            fraction = (tick - started) / config.time_budget_s
            if fraction >= 1.0:
                break
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(fraction, config.learning_rate)
            indices = np.concatenate([
                rng.choice(n_phantom, size=config.batch_size - real_per_batch, p=weights),
                n_phantom + rng.integers(0, max(n_real, 1), size=real_per_batch),
            ])
            inputs, target = robust_batch(maps, labels, indices, config, rng)
            loss = segmentation_loss(model(inputs), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            run.steps_run += 1
            batch_seconds.append(time.perf_counter() - tick)
            if epoch == 1 and step == 19:
                per_batch = float(np.median(batch_seconds[5:]))
                LOGGER.info("%.3f s per batch of %d: about %.0f s per epoch, %.0f s for %d epochs", per_batch,
                            config.batch_size, per_batch * steps_per_epoch,
                            per_batch * steps_per_epoch * config.epochs, config.epochs)
        if not losses:
            break
        predicted = predict_grids(model, validation_data["seg_map"].astype(np.float32))
        per_case = grid_dice(predicted, validation_data["seg_labels"])
        myocardium_dice = float(per_case.mean())
        t2_dice = float(per_case[validation_data["sequence"] == T2_SEQUENCE].mean())
        cavity_dice = float(grid_dice(predicted, validation_data["seg_labels"], label=1).mean())
        elapsed = time.perf_counter() - started
        run.history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5),
                            "validation_myocardium_dice": round(myocardium_dice, 5),
                            "validation_t2_myocardium_dice": round(t2_dice, 5),
                            "validation_cavity_dice": round(cavity_dice, 5), "elapsed_s": round(elapsed, 1)})
        LOGGER.info("epoch %d: loss %.4f, validation grid Dice myocardium %.4f (T2 %.4f) cavity %.4f, %.0f s",
                    epoch, np.mean(losses), myocardium_dice, t2_dice, cavity_dice, elapsed)
        run.epochs_run = epoch
        if run.best_epoch == 0 or myocardium_dice > run.best_validation_dice or config.export_last:
            run.best_epoch, run.best_validation_dice = epoch, myocardium_dice
            save_checkpoint(checkpoint_path, model, run)
        if elapsed >= config.time_budget_s:
            LOGGER.info("time budget of %.0f s spent in epoch %d of at most %d; stopping", config.time_budget_s,
                        epoch, config.epochs)
            break
    run.seconds = time.perf_counter() - started
    run.seconds_per_batch = float(np.median(batch_seconds))
    save_checkpoint(checkpoint_path, None, run)
    return run


def save_checkpoint(path: Path, model: torch.nn.Module | None, run: TrainingRun) -> None:
    """Save the model's weights (or keep the saved ones when ``model`` is None) with the run's record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if model is not None else torch.load(path, weights_only=True)["state_dict"]
    torch.save({"state_dict": state, "run": json.dumps(_run_record(run))}, path)


def load_checkpoint(path: Path) -> tuple[UNet, TrainingRun]:
    saved = torch.load(path, weights_only=True)
    record = json.loads(saved["run"])
    config = TrainingConfig(**record.pop("config"))
    model = UNet(base_channels=config.base_channels, levels=config.levels)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), TrainingRun(config=config, **record)


def initialise_from_onnx(model: UNet, path: Path) -> float:
    """Load an exported model's weights into ``model`` (same architecture) and return the largest absolute logit
    difference between the two on a test input.

    Export folds each batch norm into the convolution before it, so each BN here becomes an identity (statistics
    0 and 1, scale 1) whose shift holds the folded bias. Fine-tuning must then keep the BNs in eval mode
    (:attr:`TrainingConfig.freeze_batch_norm`): batch statistics would undo the folding.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initialisers = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
    onnx_convolutions = [node for node in graph.node if node.op_type in ("Conv", "ConvTranspose")]
    called: list[torch.nn.Conv2d | torch.nn.ConvTranspose2d] = []
    hooks = [module.register_forward_hook(lambda module, *_: called.append(module))
             for module in model.modules() if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    model.eval()
    example = torch.from_numpy(np.random.default_rng(0).random((2, 1, SEGMENTATION_SIZE, SEGMENTATION_SIZE),
                                                               dtype=np.float32))
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()
    if len(called) != len(onnx_convolutions):
        raise ValueError(f"{path} has {len(onnx_convolutions)} convolutions, the network {len(called)}")
    following_norm = _norm_after_convolution(model)
    with torch.no_grad():
        for module, node in zip(called, onnx_convolutions, strict=True):
            weight = initialisers[node.input[1]]
            bias = initialisers[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[1 if isinstance(
                module, torch.nn.ConvTranspose2d) else 0], dtype=np.float32)
            if tuple(weight.shape) != tuple(module.weight.shape):
                raise ValueError(f"{path}: weight {node.input[1]} has shape {weight.shape}, the network's "
                                 f"{tuple(module.weight.shape)}")
            module.weight.copy_(torch.from_numpy(np.array(weight)))
            norm = following_norm.get(module)
            if norm is None:
                assert module.bias is not None  # the convolutions without a batch norm have a bias
                module.bias.copy_(torch.from_numpy(np.array(bias)))
                continue
            assert norm.running_mean is not None and norm.running_var is not None  # track_running_stats
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(np.array(bias)))
        expected = model(example).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    return float(np.abs(actual - expected).max())


def _norm_after_convolution(model: UNet) -> dict[torch.nn.Module, torch.nn.BatchNorm2d]:
    """Each bias-free convolution of the residual blocks and the batch norm that follows it."""
    pairs: dict[torch.nn.Module, torch.nn.BatchNorm2d] = {}
    for block in model.modules():
        if isinstance(block, ResidualBlock):
            pairs[block.conv1], pairs[block.conv2] = block.norm1, block.norm2
            if isinstance(block.skip, torch.nn.Sequential):
                skip_convolution, skip_norm = block.skip
                assert isinstance(skip_norm, torch.nn.BatchNorm2d)
                pairs[skip_convolution] = skip_norm
    return pairs


def _run_record(run: TrainingRun) -> dict[str, Any]:
    return asdict(run)


def export(model: torch.nn.Module, path: Path, check_maps: np.ndarray) -> float:
    """Export to ONNX (input ``map``, output ``logits``, free batch axis) and return the largest absolute
    difference between onnxruntime's and torch's logits on ``check_maps`` (N, 128, 128).

    Raises
    ------
    ValueError
        If the difference exceeds :data:`MAX_EXPORT_DIFFERENCE`.
    """
    import onnxruntime as ort

    model = model.eval().cpu()
    example = torch.zeros(1, 1, SEGMENTATION_SIZE, SEGMENTATION_SIZE)
    export_onnx(model, (example,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    inputs = check_maps[:, None].astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    difference = float(np.abs(actual - expected).max())
    if difference > MAX_EXPORT_DIFFERENCE:
        raise ValueError(f"onnxruntime logits differ from torch by {difference:.2e}, more than "
                         f"{MAX_EXPORT_DIFFERENCE:.0e}")
    return difference


def case_metrics(case: SliceCase, cavity: np.ndarray, myocardium: np.ndarray) -> dict[str, Any]:
    """Dice of myocardium and cavity and Hausdorff distances of the fitted endo/epi contours, model vs truth."""
    record: dict[str, Any] = {
        "field_t": case.field_t, "sequence": case.sequence.value, "vendor": case.vendor, "level": case.level.value,
        "map": "T1" if case.is_t1 else "T2",
        # Breathing moved the heart across a segment border during the acquisition: the map then mixes positions
        # while the truth labels hold the reference position.
        "breathing": "moved" if any(case.motion_by_segment.values()) else "still",
        "myocardium_dice": dice(myocardium, case.myocardium_mask),
        "cavity_dice": dice(cavity, case.cavity_mask),
    }
    try:
        model_contours = fit_contours(cavity, myocardium, case.pixel_spacing_mm)
    except AnalysisError as error:
        LOGGER.warning("study %d %s %s: contours of the model's masks cannot be fitted: %s", case.study_index,
                       case.level.value, case.sequence.value, error)
        return record | {"fitted": False}
    truth = fit_contours(case.cavity_mask, case.myocardium_mask, case.pixel_spacing_mm)
    return record | {
        "fitted": True,
        "hausdorff_endo_mm": hausdorff_mm(model_contours.endo_px, truth.endo_px, case.pixel_spacing_mm),
        "hausdorff_epi_mm": hausdorff_mm(model_contours.epi_px, truth.epi_px, case.pixel_spacing_mm),
    }


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/median figures of a group of case records."""
    myocardium = np.array([r["myocardium_dice"] for r in records])
    cavity = np.array([r["cavity_dice"] for r in records])
    fitted = [r for r in records if r["fitted"]]
    endo = np.array([r["hausdorff_endo_mm"] for r in fitted])
    epi = np.array([r["hausdorff_epi_mm"] for r in fitted])
    both = np.concatenate([endo, epi])

    def stat(values: np.ndarray, how: Any) -> float | None:
        return round(float(how(values)), 4) if values.size else None

    return {
        "cases": len(records),
        "myocardium_dice_mean": stat(myocardium, np.mean),
        "myocardium_dice_median": stat(myocardium, np.median),
        "myocardium_dice_min": stat(myocardium, np.min),
        "cavity_dice_mean": stat(cavity, np.mean),
        "hausdorff_endo_mm_mean": stat(endo, np.mean),
        "hausdorff_endo_mm_median": stat(endo, np.median),
        "hausdorff_epi_mm_mean": stat(epi, np.mean),
        "hausdorff_epi_mm_median": stat(epi, np.median),
        "hausdorff_mm_mean": stat(both, np.mean),
        "hausdorff_mm_p95": stat(both, lambda v: np.percentile(v, 95)),
        "contour_fit_failures": len(records) - len(fitted),
    }


def evaluate_cases(cases: Iterable[SliceCase], model: Model, batch_size: int = 9) -> list[dict[str, Any]]:
    """Case records of the model on phantom cases at their own resolution (segment_maps as the node runs it)."""
    return evaluate_cases_of_models(cases, {"model": model}, batch_size)["model"]


def evaluate_cases_of_models(cases: Iterable[SliceCase], models: dict[str, Model],
                             batch_size: int = 9) -> dict[str, list[dict[str, Any]]]:
    """:func:`evaluate_cases` of several models on the same cases (made once): records by model name."""
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    pending: list[SliceCase] = []

    def flush() -> None:
        for name, model in models.items():
            segmentations = segment_maps([c.map_ms for c in pending], [c.pixel_spacing_mm for c in pending], model)
            for case, segmentation in zip(pending, segmentations, strict=True):
                records[name].append(case_metrics(case, segmentation.cavity_mask, segmentation.myocardium_mask))
        pending.clear()

    for case in cases:
        pending.append(case)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return records


def held_out_metrics(model: Model, *, seed: int = VALIDATION_SEED, n_studies: int = HELD_OUT_STUDIES,
                     workers: int = 2) -> dict[str, Any]:
    """The card's metrics: overall and by field strength, sequence, vendor, level, map kind and breathing motion."""
    return held_out_metrics_of_models({"model": model}, seed=seed, n_studies=n_studies, workers=workers)["model"]


def held_out_metrics_of_models(models: dict[str, Model], *, seed: int = VALIDATION_SEED,
                               n_studies: int = HELD_OUT_STUDIES, workers: int = 2,
                               anatomy: str = "v1") -> dict[str, dict[str, Any]]:
    """:func:`held_out_metrics` of several models on the same phantom cases (phantom ``anatomy``), by model
    name."""
    started = time.perf_counter()
    by_model = evaluate_cases_of_models(iter_cases(seed, n_studies, workers=workers, anatomy=anatomy), models)
    seconds = round(time.perf_counter() - started, 1)
    metrics = {name: _grouped_metrics(records, seed, n_studies, seconds) for name, records in by_model.items()}
    for item in metrics.values():
        item["held_out"]["anatomy"] = anatomy
    return metrics


def _grouped_metrics(records: list[dict[str, Any]], seed: int, n_studies: int, seconds: float) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "held_out": {"seed": seed, "studies": n_studies, "cases": len(records),
                     "resolution": "each map's own pixels (truth labels at native resolution)",
                     "note": "these studies also chose the checkpoint (best epoch by myocardium Dice on the grids); "
                             "the unit tests check fresh studies of seeds below 100000"},
        "aims": {"myocardium_dice_mean": TARGET_DICE, "hausdorff_mm": PUBLISHED_HAUSDORFF_MM,
                 "hausdorff_source": "published inter-expert agreement of endo/epicardial contours"},
        "overall": summarise(records),
    }
    for key in ("map", "field_t", "sequence", "vendor", "level", "breathing", "map_and_breathing"):
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            groups[f"{record['map']} {record['breathing']}" if key == "map_and_breathing" else record[key]].append(
                record)
        metrics[f"by_{key}"] = {value: summarise(group) for value, group in sorted(groups.items())}
    metrics["evaluation_seconds"] = seconds
    return metrics


def sunnybrook_metrics(model: Model, slices: list[sunnybrook.SunnybrookSlice]) -> dict[str, Any]:
    """Figures of the model on the held-out Sunnybrook patient (training/sunnybrook.py summarise), with the
    per-slice records."""
    records = sunnybrook.evaluate(slices, model)
    return {"summary": sunnybrook.summarise(records),
            "slices": [{key: (round(value, 4) if isinstance(value, float) else value)
                        for key, value in record.items()} for record in records]}



def _sets(data: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The packed data sets behind ``data`` (load_grids): file, phantom version, studies and cases of each."""
    sets = []
    for source in dict.fromkeys(data["source"].tolist()):
        chosen = data["source"] == source
        sets.append({"file": str(source), "anatomy": str(data["anatomy"][chosen][0]),
                     "studies": int(np.unique(data["study"][chosen]).size), "cases": int(chosen.sum())})
    return sets

def card_training(run: TrainingRun, train_data: dict[str, np.ndarray], validation_data: dict[str, np.ndarray],
                  export_difference: float, real_slices: list[sunnybrook.SunnybrookSlice],
                  command: str = "python -m training.segmentation --out inference/models") -> dict[str, Any]:
    config = run.config
    return {
        "data": "myomap synthetic phantom (phantom/, training/phantom_slices.py), T1 (MOLLI 5(3)3, MOLLI "
                "5s(3s)3s, ShMOLLI) and T2 (T2-prepared) maps together, packed by training/datasets.py; and real "
                "cine SSFP short-axis slices with expert contours of the Sunnybrook Cardiac Data (CC0, "
                "training/sunnybrook.py)",
        "sunnybrook": {"train_patients": sorted({s.patient for s in real_slices}),
                       "train_slices": len(real_slices),
                       "train_slices_with_myocardium": sum(s.has_myocardium for s in real_slices),
                       "cavity_only_patients": sorted(sunnybrook.CAVITY_ONLY_PATIENTS),
                       "held_out_patient": config.held_out_patient,
                       "share_of_each_batch": config.sunnybrook_fraction},
        "phantom_version": PHANTOM_VERSION,
        "train": _sets(train_data),
        "validation": {"sets": _sets(validation_data),
                       "use": ("the last checkpoint is exported; these grids' myocardium Dice is the history"
                               if config.export_last else "checkpoint selection (best myocardium Dice on the grids)")},
        "from_scratch": not config.initial_model,
        "initial_model": config.initial_model or None,
        "batch_norm": "statistics of the initial model kept (eval mode), scale and shift trained"
                      if config.freeze_batch_norm else "batch statistics",
        "epochs": run.epochs_run,
        "best_epoch": run.best_epoch,
        "batch_size": config.batch_size,
        "crop_px": config.crop_px,
        "steps_per_epoch": config.steps_per_epoch,
        "sampling": (f"each batch of {config.batch_size}: {config.sunnybrook_fraction:.1%} Sunnybrook slices "
                     f"(uniform), the rest phantom grids drawn {config.t2_weight:g} times as often from T2 as "
                     "from T1 maps (with replacement)"),
        "augmentation": (f"{config.geometry_fraction:.0%} of the samples: rotation U(0, 360) degrees, scale "
                         "U(0.7, 1.4) x U(0.9, 1.1) per axis, translation N(0, 6 px) within 12 px, elastic "
                         "deformation (5 x 5 coarse displacements N(0, 3 px), cubic); "
                         f"{config.randomised_fraction:.0%}: SynthSeg-style random appearance (3-7 background "
                         "intensity classes, cavity and myocardium each a random mean U(0, 1) with blood brighter "
                         "in 90 %, contrast at least 0.2, noise U(0, 0.12), blur sigma U(0, 1.2) px, bias field, "
                         "gamma), otherwise the own appearance with bias field, gamma, noise and blur "
                         "(training/domain_randomisation.py); then renormalised as inference/grids.py, a random "
                         f"{config.crop_px} x {config.crop_px} crop holding the heart, one of the 8 flips and "
                         "right-angle rotations"),
        "loss": "cross-entropy + (1 - soft Dice of the myocardium); pixels of unknown class (Sunnybrook images "
                "without a usable epicardium) count as 'background or myocardium'",
        "optimiser": f"AdamW, learning rate by time spent (training.segmentation.learning_rate: 10 % warm-up, "
                     f"cosine decay) from {config.learning_rate:g}, weight decay {config.weight_decay:g}, "
                     f"{run.steps_run} steps in a budget of {config.time_budget_s:.0f} s",
        "seed": config.seed,
        "training_seconds": round(run.seconds, 1),
        "seconds_per_batch": round(run.seconds_per_batch, 3),
        "hardware": f"CPU, 1 torch thread ({platform.machine()}; 2 cores shared with other work)",
        "command": command,
        "data_sets": "data/training/*.npz are made by training/datasets.py build (python -m training builds them: "
                     "train.npz 160 studies of seed 100000, train_v2.npz 160 of seed 120000 (phantom v2), "
                     "validation.npz 40 of seed 200000, validation_v2.npz 20 of seed 220000)",
        "torch_version": torch.__version__,
        "history": run.history,
        "export_max_abs_difference": export_difference,
    }


def build(out_folder: Path, *, config: TrainingConfig, train_paths: tuple[Path, ...] = (TRAIN_PATH,),
          validation_paths: tuple[Path, ...] = (VALIDATION_PATH,), checkpoint_path: Path = CHECKPOINT_PATH,
          from_checkpoint: bool = False, held_out_studies: int = HELD_OUT_STUDIES,
          held_out_studies_v2: int = HELD_OUT_STUDIES_V2, workers: int = 2,
          sunnybrook_root: Path = SUNNYBROOK_ROOT, previous: Path | None = None,
          command: str = "python -m training.segmentation --out inference/models") -> Path:
    """Train (unless ``from_checkpoint``), export, verify and measure; returns the card's path.

    ``previous`` is the model this one would replace (``<previous>.onnx`` with its card): it is measured on the
    same held-out data and its figures go into the card beside the new ones. It is copied aside first, so it may
    be the file that the export overwrites.
    """
    train_data = load_grids(*train_paths)
    validation_data = load_grids(*validation_paths)
    real_train, real_test = sunnybrook.split(sunnybrook.load_sunnybrook(sunnybrook_root), config.held_out_patient)
    previous_copy = None
    if previous is not None and previous.exists():
        previous_copy = checkpoint_path.parent / "previous"
        previous_copy.mkdir(parents=True, exist_ok=True)
        for suffix in (".onnx", ".json"):
            shutil.copyfile(previous.with_suffix(suffix), (previous_copy / NAME).with_suffix(suffix))
        previous_copy = (previous_copy / NAME).with_suffix(".onnx")
    if not from_checkpoint:
        train(train_data, validation_data, config, checkpoint_path, sunnybrook.to_grids(real_train))
    model, run = load_checkpoint(checkpoint_path)
    onnx_path = out_folder / f"{NAME}.onnx"
    difference = export(model, onnx_path, validation_data["seg_map"][:16])
    LOGGER.info("exported %s (%d bytes); onnxruntime vs torch max abs difference %.2e", onnx_path,
                onnx_path.stat().st_size, difference)
    card: dict[str, Any] = {
        "name": NAME,
        "version": VERSION,
        "task": "Segmentation of a T1 or T2 map into background, LV cavity (blood pool with papillary muscles) and "
                "LV myocardium",
        "architecture": (f"U-Net with residual blocks (conv-BN-ReLU x2 + skip), {run.config.levels} resolution "
                         f"levels, {run.config.base_channels}-{run.config.base_channels * 2 ** (run.config.levels - 1)}"
                         f" channels, {count_parameters(model)} parameters, "
                         + (f"fine-tuned from the exported {Path(config.initial_model).name} it replaces"
                            if config.initial_model else "trained from scratch")),
        "inputs": [tensor(INPUT_NAME, [None, 1, SEGMENTATION_SIZE, SEGMENTATION_SIZE],
                          meaning="normalised map on the 1.25 mm segmentation grid")],
        "outputs": [tensor(OUTPUT_NAME, [None, N_CLASSES, SEGMENTATION_SIZE, SEGMENTATION_SIZE],
                           meaning="class logits: 0 background, 1 LV cavity, 2 myocardium")],
        "preprocessing": PREPROCESSING,
        "postprocessing": POSTPROCESSING,
        "training": card_training(run, train_data, validation_data, difference, real_train, command),
    }
    write_card(onnx_path, metrics={}, **card)  # the runtime loads a model only beside its card
    models: dict[str, Model] = {"new": Model(onnx_path, device=Device.CPU)}
    if previous_copy is not None:
        models["previous"] = Model(previous_copy, device=Device.CPU)
    phantom = held_out_metrics_of_models(models, n_studies=held_out_studies, workers=workers)
    phantom_v2 = held_out_metrics_of_models(models, seed=VALIDATION_SEED_V2, n_studies=held_out_studies_v2,
                                            workers=workers, anatomy="v2")
    real = {name: sunnybrook_metrics(item, real_test) for name, item in models.items()}
    metrics = phantom["new"]
    metrics["phantom_v2_held_out"] = {key: phantom_v2["new"][key] for key in ("held_out", "overall", "by_sequence",
                                                                           "by_level", "by_vendor")}
    metrics["aims"] |= {"sunnybrook_myocardium_dice_mean": TARGET_SUNNYBROOK_DICE,
                        "sunnybrook_mid_wall_coverage_mean": TARGET_MID_WALL_COVERAGE}
    metrics["sunnybrook_held_out"] = {
        "patient": config.held_out_patient,
        "data": "Sunnybrook Cardiac Data cine SSFP short-axis images with expert contours (never trained on), run "
                "through inference/segmentation.py as the node runs maps; myocardium figures over the slices with "
                "an epicardial contour; mid-wall coverage: share of inference.myocardium_values.mid_wall_mask of "
                "the experts' masks inside the predicted myocardium",
        **real["new"],
    }
    if "previous" in models:
        previous_card = models["previous"].card.raw
        metrics["previous_model"] = {
            "version": previous_card["version"], "sha256": previous_card["sha256"],
            "phantom_overall": phantom["previous"]["overall"],
            "phantom_v2_overall": phantom_v2["previous"]["overall"],
            "sunnybrook_held_out": real["previous"]["summary"],
        }
    LOGGER.info("held-out phantom: %s", json.dumps(metrics["overall"]))
    LOGGER.info("held-out Sunnybrook %s: %s", config.held_out_patient, json.dumps(real["new"]["summary"]))
    if "previous" in models:
        LOGGER.info("previous model: %s", json.dumps(metrics["previous_model"]))
    return write_card(onnx_path, metrics=metrics, **card, extra={"validation_statement": VALIDATION_STATEMENT})


def main(argv: list[str] | None = None) -> None:
    defaults = TrainingConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("inference/models"), help="folder of the .onnx and .json")
    parser.add_argument("--train", type=Path, nargs="+", default=list(TRAIN_PATHS), help="packed phantom sets")
    parser.add_argument("--validation", type=Path, nargs="+", default=list(VALIDATION_PATHS))
    parser.add_argument("--init-from", type=Path, default=None,
                        help="fine-tune this exported model (.onnx) instead of training from scratch")
    parser.add_argument("--export-last", action="store_true",
                        help="export the last checkpoint, not the best on the phantom validation grids")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--held-out-studies-v2", type=int, default=HELD_OUT_STUDIES_V2)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT_PATH)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--time-budget-min", type=float, default=defaults.time_budget_s / 60.0)
    parser.add_argument("--from-checkpoint", action="store_true", help="skip training; export the saved best")
    parser.add_argument("--held-out-studies", type=int, default=HELD_OUT_STUDIES)
    parser.add_argument("--workers", type=int, default=2, help="processes making the held-out phantom studies")
    parser.add_argument("--steps-per-epoch", type=int, default=defaults.steps_per_epoch)
    parser.add_argument("--sunnybrook", type=Path, default=SUNNYBROOK_ROOT, help="shared/data/sunnybrook")
    parser.add_argument("--previous", type=Path, default=Path("inference/models") / f"{NAME}.onnx",
                        help="the model to compare with (measured on the same held-out data)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("inference.mapping").setLevel(logging.WARNING)  # one line per held-out map otherwise
    initial_model = ""
    if args.init_from is not None:  # copied aside: the export may overwrite it
        initial_copy = args.checkpoint.parent / "initial" / args.init_from.name
        initial_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.init_from, initial_copy)
        initial_model = str(initial_copy)
    config = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, time_budget_s=args.time_budget_min * 60.0,
                            steps_per_epoch=args.steps_per_epoch, learning_rate=args.learning_rate,
                            initial_model=initial_model, freeze_batch_norm=bool(initial_model),
                            export_last=args.export_last)
    build(args.out, config=config, train_paths=tuple(args.train), validation_paths=tuple(args.validation),
          checkpoint_path=args.checkpoint, from_checkpoint=args.from_checkpoint,
          held_out_studies=args.held_out_studies, held_out_studies_v2=args.held_out_studies_v2,
          workers=args.workers, sunnybrook_root=args.sunnybrook, previous=args.previous,
          command=" ".join(["python -m training.segmentation", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    main()
