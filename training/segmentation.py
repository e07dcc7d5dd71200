"""Train the myocardium segmentation model on the phantom, export it to ONNX and write its model card.

    python -m training.segmentation --out inference/models

The network (training/unet.py) sees the segmentation grid of inference/grids.py: the map sampled at 1.25 mm on
128 x 128 pixels around the image centre, normalised per image. It trains on random 96 x 96 crops of that grid that
hold the whole heart (a fully convolutional network reads the full grid at inference; the crops cost half the
time of full grids on a CPU), with the 8 flips and right-angle rotations and a small change of intensity scale.
Loss: cross-entropy plus the soft Dice of the myocardium, whose thin ring cross-entropy alone underweights.

The checkpoint with the best myocardium Dice on the validation grids is exported, checked against onnxruntime,
and measured on held-out phantom studies at each map's own resolution through the same code the node runs
(inference/segmentation.py, contour fitting, Hausdorff distances); the card records it all.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
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
from training.model_card import export_onnx, tensor, write_card
from training.phantom_slices import TRAINING_SEED, VALIDATION_SEED, SliceCase, iter_cases
from training.unet import UNet, count_parameters

LOGGER = logging.getLogger(__name__)

NAME = "segmentation"
VERSION = "1.0.0"
N_CLASSES = 3
MYOCARDIUM = 2
T2_SEQUENCE = "t2prep"
TRAIN_PATH = Path("data/training/train.npz")
VALIDATION_PATH = Path("data/training/validation.npz")
CHECKPOINT_PATH = Path("data/training/segmentation_best.pt")
#: onnxruntime and torch compute the same graph in a different order; float32 rounding stays far below this.
MAX_EXPORT_DIFFERENCE = 1e-3
HELD_OUT_STUDIES = 40
PUBLISHED_HAUSDORFF_MM = 2.65  # inter-expert agreement of endo/epi contours in T1/T2 maps
TARGET_DICE = 0.93

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

    epochs: int = 8
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
    time_budget_s: float = 22 * 60.0  # stop after the epoch that crosses it


@dataclass
class TrainingRun:
    """What a training run did."""

    config: TrainingConfig
    epochs_run: int = 0
    best_epoch: int = 0
    best_validation_dice: float = 0.0
    seconds: float = 0.0
    seconds_per_batch: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def load_grids(path: Path) -> dict[str, np.ndarray]:
    """The segmentation-grid arrays of a packed data set (training/datasets.py), read without the others.

    The .npz is not compressed, so only these members are read from disk.
    """
    with np.load(path) as data:
        return {key: data[key] for key in ("seg_map", "seg_labels", "study", "sequence", "level")}


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


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus (1 - soft Dice of the myocardium), the Dice taken per image and averaged."""
    cross_entropy = functional.cross_entropy(logits, target)
    probability = torch.softmax(logits, dim=1)[:, MYOCARDIUM]
    truth = (target == MYOCARDIUM).float()
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


def train(train_data: dict[str, np.ndarray], validation_data: dict[str, np.ndarray], config: TrainingConfig,
          checkpoint_path: Path) -> TrainingRun:
    """Train from scratch with fixed seeds; the best epoch (validation myocardium Dice on the grids) is saved to
    ``checkpoint_path``."""
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    maps, labels = train_data["seg_map"], train_data["seg_labels"]
    boxes = heart_boxes(labels)
    weights = np.where(train_data["sequence"] == T2_SEQUENCE, config.t2_weight, 1.0)
    weights /= weights.sum()
    model = UNet(base_channels=config.base_channels, levels=config.levels)
    LOGGER.info("U-Net: %d parameters; %d training and %d validation grids", count_parameters(model), len(maps),
                len(validation_data["seg_map"]))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = len(maps) // config.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate,
                                                   total_steps=config.epochs * steps_per_epoch, pct_start=0.15)
    run = TrainingRun(config=config)
    started = time.perf_counter()
    batch_seconds = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = (rng.permutation(len(maps)) if config.t2_weight == 1.0
                 else rng.choice(len(maps), size=len(maps), p=weights))
        losses = []
        for step in range(steps_per_epoch):
            tick = time.perf_counter()
            indices = order[step * config.batch_size:(step + 1) * config.batch_size]
            inputs, target = augmented_batch(maps, labels, boxes, indices, config, rng)
            loss = segmentation_loss(model(inputs), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            batch_seconds.append(time.perf_counter() - tick)
            if epoch == 1 and step == 19:
                per_batch = float(np.median(batch_seconds[5:]))
                LOGGER.info("%.3f s per batch of %d: about %.0f s per epoch, %.0f s for %d epochs", per_batch,
                            config.batch_size, per_batch * steps_per_epoch,
                            per_batch * steps_per_epoch * config.epochs, config.epochs)
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
        if run.best_epoch == 0 or myocardium_dice > run.best_validation_dice:
            run.best_epoch, run.best_validation_dice = epoch, myocardium_dice
            save_checkpoint(checkpoint_path, model, run)
        if elapsed > config.time_budget_s and epoch < config.epochs:
            LOGGER.warning("time budget of %.0f s spent after epoch %d of %d; stopping", config.time_budget_s, epoch,
                           config.epochs)
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
    records: list[dict[str, Any]] = []
    pending: list[SliceCase] = []

    def flush() -> None:
        segmentations = segment_maps([c.map_ms for c in pending], [c.pixel_spacing_mm for c in pending], model)
        for case, segmentation in zip(pending, segmentations, strict=True):
            records.append(case_metrics(case, segmentation.cavity_mask, segmentation.myocardium_mask))
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
    started = time.perf_counter()
    records = evaluate_cases(iter_cases(seed, n_studies, workers=workers), model)
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
    metrics["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def card_training(run: TrainingRun, train_data: dict[str, np.ndarray], validation_data: dict[str, np.ndarray],
                  export_difference: float) -> dict[str, Any]:
    config = run.config
    return {
        "data": "myomap synthetic phantom (phantom/, training/phantom_slices.py), T1 (MOLLI 5(3)3, MOLLI "
                "5s(3s)3s, ShMOLLI) and T2 (T2-prepared) maps together, packed by training/datasets.py",
        "phantom_version": PHANTOM_VERSION,
        "train": {"seed": TRAINING_SEED, "studies": int(np.unique(train_data["study"]).size),
                  "cases": int(len(train_data["seg_map"]))},
        "validation": {"seed": VALIDATION_SEED, "studies": int(np.unique(validation_data["study"]).size),
                       "cases": int(len(validation_data["seg_map"])),
                       "use": "checkpoint selection (best myocardium Dice on the grids)"},
        "from_scratch": True,
        "epochs": run.epochs_run,
        "best_epoch": run.best_epoch,
        "batch_size": config.batch_size,
        "crop_px": config.crop_px,
        "sampling": (f"each epoch draws {config.t2_weight:g} times as often from T2 as from T1 maps (with "
                     "replacement)" if config.t2_weight != 1.0 else "each epoch one pass over the cases"),
        "augmentation": (f"random {config.crop_px} x {config.crop_px} crops holding the heart, the 8 flips and "
                         f"right-angle rotations, intensity x U({1 - config.intensity_scale:g}, "
                         f"{1 + config.intensity_scale:g}) + U(-{config.intensity_shift:g}, "
                         f"{config.intensity_shift:g})"),
        "loss": "cross-entropy + (1 - soft Dice of the myocardium)",
        "optimiser": f"AdamW, one-cycle learning rate up to {config.learning_rate:g}, weight decay "
                     f"{config.weight_decay:g}",
        "seed": config.seed,
        "training_seconds": round(run.seconds, 1),
        "seconds_per_batch": round(run.seconds_per_batch, 3),
        "hardware": f"CPU, 1 torch thread ({platform.machine()})",
        "torch_version": torch.__version__,
        "history": run.history,
        "export_max_abs_difference": export_difference,
    }


def build(out_folder: Path, *, config: TrainingConfig, train_path: Path = TRAIN_PATH,
          validation_path: Path = VALIDATION_PATH, checkpoint_path: Path = CHECKPOINT_PATH,
          from_checkpoint: bool = False, held_out_studies: int = HELD_OUT_STUDIES, workers: int = 2) -> Path:
    """Train (unless ``from_checkpoint``), export, verify and measure; returns the card's path."""
    train_data = load_grids(train_path)
    validation_data = load_grids(validation_path)
    if not from_checkpoint:
        train(train_data, validation_data, config, checkpoint_path)
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
                         f" channels, {count_parameters(model)} parameters, trained from scratch"),
        "inputs": [tensor(INPUT_NAME, [None, 1, SEGMENTATION_SIZE, SEGMENTATION_SIZE],
                          meaning="normalised map on the 1.25 mm segmentation grid")],
        "outputs": [tensor(OUTPUT_NAME, [None, N_CLASSES, SEGMENTATION_SIZE, SEGMENTATION_SIZE],
                           meaning="class logits: 0 background, 1 LV cavity, 2 myocardium")],
        "preprocessing": PREPROCESSING,
        "postprocessing": POSTPROCESSING,
        "training": card_training(run, train_data, validation_data, difference),
    }
    write_card(onnx_path, metrics={}, **card)  # the runtime loads a model only beside its card
    metrics = held_out_metrics(Model(onnx_path, device=Device.CPU), n_studies=held_out_studies, workers=workers)
    LOGGER.info("held-out: %s", json.dumps(metrics["overall"]))
    return write_card(onnx_path, metrics=metrics, **card)


def main(argv: list[str] | None = None) -> None:
    defaults = TrainingConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("inference/models"), help="folder of the .onnx and .json")
    parser.add_argument("--train", type=Path, default=TRAIN_PATH)
    parser.add_argument("--validation", type=Path, default=VALIDATION_PATH)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT_PATH)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--time-budget-min", type=float, default=defaults.time_budget_s / 60.0)
    parser.add_argument("--from-checkpoint", action="store_true", help="skip training; export the saved best")
    parser.add_argument("--held-out-studies", type=int, default=HELD_OUT_STUDIES)
    parser.add_argument("--workers", type=int, default=2, help="processes making the held-out phantom studies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("inference.mapping").setLevel(logging.WARNING)  # one line per held-out map otherwise
    config = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, time_budget_s=args.time_budget_min * 60.0)
    build(args.out, config=config, train_path=args.train, validation_path=args.validation,
          checkpoint_path=args.checkpoint, from_checkpoint=args.from_checkpoint,
          held_out_studies=args.held_out_studies, workers=args.workers)


if __name__ == "__main__":
    main()
