"""Train, calibrate, evaluate and export the segmentation-QC autoencoder (qc_encoder.onnx, qc_decoder.onnx).

    python -m training.quality --out inference/models

1. Train the VAE of training/vae.py on good pairs only: the crop-grid map with the truth myocardium and with each
   expert's myocardium (phantom v1 and v2: data/training/train.npz, train_v2.npz) and the real Sunnybrook images
   with their experts' myocardium (the segmentation's held-out patient left out), shifted together by a few pixels
   so that it has seen the crop centre off the LV centre, as happens when the crop is centred on a poor
   segmentation.
2. Export encoder and decoder; check onnxruntime against torch.
3. Calibrate: the raw Dice of the latent search (inference/quality.py) against the real Dice, over reader masks and
   degraded truth masks of phantom v1 and v2 studies the VAE never saw (training seeds, studies after those of the
   training sets) and degraded expert masks of the real training patients; an isotonic (monotone piecewise-linear)
   curve.
4. Evaluate at the image's own resolution on held-out phantom v1 and v2 studies (validation seeds) and on the real
   held-out patient, reported apart, and write both cards.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from inference import quality
from inference.grids import CROP_SIZE, GRID_SPACING_MM
from inference.metrics import dice
from inference.runtime import Device, Model
from training import sunnybrook
from training.model_card import PHANTOM_AND_CINE, export_onnx, tensor, write_card
from training.phantom_slices import (
    MYOCARDIUM,
    TRAINING_SEED,
    TRAINING_SEED_V2,
    VALIDATION_SEED,
    VALIDATION_SEED_V2,
    SliceCase,
    study_cases,
)
from training.vae import LATENT_SIZE, ExportedDecoder, PairVAE, vae_loss

LOGGER = logging.getLogger(__name__)

VERSION = "1.1.0"
N_EXPERTS = 3
TRAIN_STUDIES = 400  # at most studies 0..399 of the training seed are in train.npz
CALIBRATION_FIRST_STUDY = TRAIN_STUDIES
TRAIN_STUDIES_V2 = 160  # studies 0..159 of the v2 training seed are in train_v2.npz
CALIBRATION_FIRST_STUDY_V2 = TRAIN_STUDIES_V2
REAL_REPEATS = 12  # each real good pair counts this many times among the phantom's (about 1 in 12 pairs)
GRADIENT_CLIP = 1.0  # the KL term's gradient can spike early in training
DEGRADATIONS = ("erosion", "dilation", "shift", "missing_sector")


# --------------------------------------------------------------------------------------------------- training data


def good_pairs(*paths: Path) -> tuple[np.ndarray, np.ndarray]:
    """Crop-grid maps (cases, 96, 96) float32 and their good myocardium masks (cases, 4, 96, 96) uint8: the truth
    and the experts, of every packed set in ``paths``."""
    maps, masks = [], []
    for path in paths:
        with np.load(path) as data:
            maps.append(data["crop_map"].astype(np.float32))
            truth = (data["crop_labels"] == MYOCARDIUM)[:, np.newaxis]
            masks.append(np.concatenate([truth, data["crop_readers"][:, :N_EXPERTS]], axis=1).astype(np.uint8))
    return np.concatenate(maps), np.concatenate(masks)


def real_good_pairs(slices: list[sunnybrook.SunnybrookSlice]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`good_pairs` of real slices: the image with its experts' myocardium, that mask in all four places."""
    pairs = [quality.crop_pair(item.image, item.myocardium_mask, item.pixel_spacing_mm) for item in slices
             if item.myocardium_mask is not None]
    maps = np.stack([pair[0] for pair in pairs]).astype(np.float32)
    masks = np.repeat((np.stack([pair[1] for pair in pairs]) > 0.5)[:, np.newaxis], 1 + N_EXPERTS, axis=1)
    return maps, masks.astype(np.uint8)


class PairBatches:
    """Random batches of good pairs, each pair shifted by up to ``max_shift_px`` (map edges repeated)."""

    def __init__(self, maps: np.ndarray, masks: np.ndarray, *, max_shift_px: int, seed: int) -> None:
        self.pad = max_shift_px
        self.maps = np.pad(maps, ((0, 0), (self.pad, self.pad), (self.pad, self.pad)), mode="edge")
        self.masks = np.pad(masks, ((0, 0), (0, 0), (self.pad, self.pad), (self.pad, self.pad)))
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch_size: int) -> np.ndarray:
        cases = self.rng.integers(0, self.maps.shape[0], batch_size)
        readers = self.rng.integers(0, self.masks.shape[1], batch_size)
        offsets = self.rng.integers(0, 2 * self.pad + 1, (batch_size, 2))
        batch = np.empty((batch_size, 2, CROP_SIZE, CROP_SIZE), dtype=np.float32)
        for i, (case, reader, (dy, dx)) in enumerate(zip(cases, readers, offsets, strict=True)):
            batch[i, 0] = self.maps[case, dy:dy + CROP_SIZE, dx:dx + CROP_SIZE]
            batch[i, 1] = self.masks[case, reader, dy:dy + CROP_SIZE, dx:dx + CROP_SIZE]
        return batch


def train_vae(maps: np.ndarray, masks: np.ndarray, *, steps: int, batch_size: int, learning_rate: float,
              beta: float, image_weight: float, max_shift_px: int, mask_dropout: float, decoder_width: int,
              seed: int) -> tuple[Any, dict[str, Any]]:
    """Train the VAE on good pairs (:func:`good_pairs`); returns the model and a training log.

    The encoder sees the mask channel blanked in a ``mask_dropout`` fraction of the pairs (the loss still asks for
    the mask), so that it also learns the good pair a map alone implies: the run-time search's prior."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    batches = PairBatches(maps, masks, max_shift_px=max_shift_px, seed=seed)
    window = torch.from_numpy(quality.image_window())
    model = PairVAE(LATENT_SIZE, decoder_width)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=learning_rate, total_steps=steps,
                                                   pct_start=0.05)
    started = time.perf_counter()
    running: dict[str, float] = {}
    for step in range(1, steps + 1):
        pair = torch.from_numpy(batches(batch_size))
        seen = pair.clone()
        seen[torch.rand(batch_size) < mask_dropout, 1] = 0.0
        logits, mean, log_variance = model(seen)
        loss, parts = vae_loss(logits, pair, mean, log_variance, beta=beta, image_weight=image_weight,
                               image_window=window)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP)
        optimiser.step()
        schedule.step()
        running = {k: 0.98 * running.get(k, v) + 0.02 * v for k, v in parts.items()}
        if step % 250 == 0 or step == steps:
            elapsed = time.perf_counter() - started
            LOGGER.info("step %d/%d  %.0f ms/batch  %s", step, steps, 1000 * elapsed / step,
                        "  ".join(f"{k} {v:.4f}" for k, v in running.items()))
    model.eval()
    log = {"pairs": int(masks.shape[0] * masks.shape[1]), "cases": int(masks.shape[0]),
           "seconds": round(time.perf_counter() - started, 1), "final_losses": {k: round(v, 5) for k, v in
                                                                                running.items()}}
    return model, log


# ------------------------------------------------------------------------------------------------- export, checks


ENCODER_INPUTS = [tensor("pair", [None, 2, CROP_SIZE, CROP_SIZE], meaning="channel 0 the normalised map, channel 1 "
                         "the myocardium mask (0/1), on the 96 x 96 crop grid of 1.25 mm centred on the LV")]
ENCODER_OUTPUTS = [tensor("mean", [None, LATENT_SIZE], meaning="posterior mean of the latent"),
                   tensor("log_variance", [None, LATENT_SIZE], meaning="posterior log variance of the latent")]
DECODER_INPUTS = [tensor("latent", [None, LATENT_SIZE], meaning="latent vector")]
DECODER_OUTPUTS = [tensor("reconstruction", [None, 2, CROP_SIZE, CROP_SIZE],
                          meaning="channel 0 the normalised map, channel 1 the myocardium probability (sigmoid "
                                  "applied)")]


def export(model: Any, out: Path) -> tuple[Path, Path, float]:
    """Write qc_encoder.onnx and qc_decoder.onnx; returns their paths and the largest onnxruntime-torch
    difference over a random batch."""
    import onnxruntime as ort
    import torch

    encoder_path = export_onnx(model.encoder, (torch.zeros(1, 2, CROP_SIZE, CROP_SIZE),), out / "qc_encoder.onnx",
                               input_names=["pair"], output_names=["mean", "log_variance"])
    decoder = ExportedDecoder(model.decoder)
    decoder_path = export_onnx(decoder, (torch.zeros(1, LATENT_SIZE),), out / "qc_decoder.onnx",
                               input_names=["latent"], output_names=["reconstruction"])
    generator = torch.Generator().manual_seed(7)
    pair = torch.rand(3, 2, CROP_SIZE, CROP_SIZE, generator=generator)
    latent = torch.randn(5, LATENT_SIZE, generator=generator)
    with torch.no_grad():
        expected_mean, expected_log_variance = model.encoder(pair)
        expected_reconstruction = decoder(latent)
    encoder_session = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    decoder_session = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    mean, log_variance = encoder_session.run(None, {"pair": pair.numpy()})
    (reconstruction,) = decoder_session.run(None, {"latent": latent.numpy()})
    difference = max(float(np.abs(mean - expected_mean.numpy()).max()),
                     float(np.abs(log_variance - expected_log_variance.numpy()).max()),
                     float(np.abs(reconstruction - expected_reconstruction.numpy()).max()))
    if difference > 1e-3:
        raise RuntimeError(f"onnxruntime and torch differ by {difference:.2e}")
    return encoder_path, decoder_path, difference


# ---------------------------------------------------------------------------------- masks of varied quality


def degrade_mask(mask: np.ndarray, kind: str, rng: np.random.Generator,
                 pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """A worse copy of a myocardium mask: eroded or dilated by 1-2 pixels, shifted by 2-6 mm, or with a sector of
    40-150 degrees around its centroid removed."""
    mask = np.asarray(mask, dtype=bool)
    if kind == "erosion":
        return ndimage.binary_erosion(mask, iterations=int(rng.integers(1, 3)))
    if kind == "dilation":
        return ndimage.binary_dilation(mask, iterations=int(rng.integers(1, 3)))
    if kind == "shift":
        distance_mm = rng.uniform(2.0, 6.0)
        angle = rng.uniform(0.0, 2 * np.pi)
        offset_px = (distance_mm * np.sin(angle) / pixel_spacing_mm[0],
                     distance_mm * np.cos(angle) / pixel_spacing_mm[1])
        return ndimage.shift(mask.astype(np.float32), offset_px, order=1, mode="constant") >= 0.5
    if kind == "missing_sector":
        rows, columns = np.nonzero(mask)
        angles = np.arctan2(np.arange(mask.shape[0])[:, None] - rows.mean(),
                            np.arange(mask.shape[1])[None] - columns.mean())
        centre = rng.uniform(-np.pi, np.pi)
        half_width = np.radians(rng.uniform(40.0, 150.0)) / 2.0
        inside = np.abs(np.mod(angles - centre + np.pi, 2 * np.pi) - np.pi) <= half_width
        return mask & ~inside
    raise ValueError(f"unknown degradation {kind!r}; expected one of {DEGRADATIONS}")


def quality_masks(case: SliceCase, rng: np.random.Generator) -> Iterator[tuple[str, str, np.ndarray]]:
    """(group, name, mask) of varied quality for one slice: the experts, the trainees (named by error mode) and
    one degraded copy of the truth per kind of degradation."""
    for index, (role, mode) in enumerate(zip(case.reader_roles, case.reader_error_modes, strict=True)):
        yield role, (mode or role), case.reader_masks[index]
    for kind in DEGRADATIONS:
        yield "degraded", kind, degrade_mask(case.myocardium_mask, kind, rng, case.pixel_spacing_mm)


def _predict(map_values: np.ndarray, mask: np.ndarray, pixel_spacing_mm: tuple[float, float], encoder: Any,
             decoder: Any, calibrated: bool) -> dict[str, Any]:
    """The latent search's raw and (when ``calibrated``) calibrated Dice of one mask, its evaluations and time."""
    started = time.perf_counter()
    pair = quality.crop_pair(map_values, mask, pixel_spacing_mm)
    search = quality.search_latent(pair, encoder, decoder)
    raw = quality.raw_dice(search, pair)
    return {"raw": raw, "predicted": quality.calibrate(raw, decoder.card.raw.get("calibration") if calibrated
                                                      else None),
            "evaluations": search.evaluations, "ms": 1000 * (time.perf_counter() - started)}


def score_cases(cases: Iterable[SliceCase], encoder: Any, decoder: Any, *, seed: int,
                calibrated: bool = True) -> list[dict[str, Any]]:
    """Predicted and real Dice (native resolution, against the truth myocardium) of every quality mask of every
    case, with the time of each prediction and the raw (uncalibrated) Dice."""
    records = []
    for index, case in enumerate(cases):
        rng = np.random.default_rng((seed, index))
        for group, name, mask in quality_masks(case, rng):
            if not mask.any():
                continue
            records.append({
                "study": case.study_index, "level": case.level.value, "field_t": case.field_t,
                "sequence": case.sequence.value, "group": group, "name": name,
                "real": dice(mask, case.myocardium_mask),
                **_predict(case.map_ms, mask, case.pixel_spacing_mm, encoder, decoder, calibrated),
            })
    return records


def phantom_cases(seed: int, first_study: int, n_studies: int, anatomy: str = "v1") -> Iterator[SliceCase]:
    for study in range(first_study, first_study + n_studies):
        yield from study_cases(seed, study, anatomy=anatomy)


def score_real(slices: list[sunnybrook.SunnybrookSlice], encoder: Any, decoder: Any, *, seed: int,
               calibrated: bool = True) -> list[dict[str, Any]]:
    """:func:`score_cases` for real slices: the experts' myocardium and one degraded copy per kind."""
    records = []
    for index, item in enumerate(slice for slice in slices if slice.myocardium_mask is not None):
        assert item.myocardium_mask is not None
        rng = np.random.default_rng((seed, index))
        masks = [("expert", "expert", item.myocardium_mask)] + [
            ("degraded", kind, degrade_mask(item.myocardium_mask, kind, rng, item.pixel_spacing_mm))
            for kind in DEGRADATIONS]
        for group, name, mask in masks:
            if not mask.any():
                continue
            records.append({
                "study": item.patient, "level": "", "field_t": "1.5", "sequence": "cine", "group": group,
                "name": name, "real": dice(mask, item.myocardium_mask),
                **_predict(item.image, mask, item.pixel_spacing_mm, encoder, decoder, calibrated),
            })
    return records


# ------------------------------------------------------------------------------------- calibration and metrics


def isotonic_knots(raw: np.ndarray, real: np.ndarray, n_knots: int = 24) -> dict[str, list[float]]:
    """Monotone piecewise-linear calibration raw -> real: isotonic regression (pool adjacent violators) of real
    on raw, read at ``n_knots`` quantiles of raw."""
    order = np.argsort(raw, kind="stable")
    x, y = np.asarray(raw)[order], np.asarray(real, dtype=np.float64)[order]
    blocks: list[list[float]] = []  # [mean, weight]
    for value in y:
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, weight = blocks.pop()
            blocks[-1] = [(blocks[-1][0] * blocks[-1][1] + mean * weight) / (blocks[-1][1] + weight),
                          blocks[-1][1] + weight]
    fitted = np.concatenate([np.full(int(weight), mean) for mean, weight in blocks])
    # Knots at quantiles of raw, where the data are, and on a coarse even grid, so that the sparse low end (badly
    # wrong masks) keeps its own knots instead of one straight line across it.
    even = np.arange(0.0, 1.0001, 0.1)
    positions = np.unique(np.concatenate([np.quantile(x, np.linspace(0.0, 1.0, n_knots)),
                                          even[(even > x[0]) & (even < x[-1])]]))
    # Smooth the step function: the fitted value at each knot is the mean of the fit in its neighbourhood.
    edges = np.concatenate([[-np.inf], (positions[1:] + positions[:-1]) / 2.0, [np.inf]])
    values = [float(fitted[(x > lo) & (x <= hi)].mean()) if np.any((x > lo) & (x <= hi))
              else float(np.interp(p, x, fitted)) for p, lo, hi in zip(positions, edges[:-1], edges[1:], strict=True)]
    monotone = np.maximum.accumulate(values)
    return {"raw": [round(float(p), 5) for p in positions], "dice": [round(float(v), 5) for v in monotone]}


def agreement(records: list[dict[str, Any]], key: str = "predicted") -> dict[str, Any]:
    predicted = np.array([r[key] for r in records])
    real = np.array([r["real"] for r in records])
    r = float(np.corrcoef(predicted, real)[0, 1]) if len(records) > 2 and real.std() > 0 else float("nan")
    return {"n": len(records), "mae": round(float(np.mean(np.abs(predicted - real))), 4), "pearson_r": round(r, 4),
            "real_dice_range": [round(float(real.min()), 3), round(float(real.max()), 3)]}


def metrics_by(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement overall and broken down by field strength, sequence, level, mask group and mask kind."""
    out: dict[str, Any] = {"overall": agreement(records), "overall_uncalibrated": agreement(records, "raw")}
    for key in ("field_t", "sequence", "level", "group", "name"):
        out[f"by_{key}"] = {value: agreement([r for r in records if r[key] == value])
                            for value in sorted({r[key] for r in records})}
    times = np.array([r["ms"] for r in records])
    out["ms_per_call"] = {"median": round(float(np.median(times)), 1), "mean": round(float(times.mean()), 1),
                          "p90": round(float(np.percentile(times, 90)), 1)}
    out["decoder_evaluations_per_call"] = round(float(np.mean([r["evaluations"] for r in records])), 1)
    return out


# ------------------------------------------------------------------------------------------------------- cards


SEARCH_METHOD = ("Levenberg-Marquardt from the encoder mean on the objective's residuals; Jacobian by forward "
                 "differences (the latent's perturbed copies decoded in one batch; the latent itself only at the "
                 "first step, later its residual is known) at jacobian_at_steps, Broyden's update of the Jacobian "
                 "and of its normal matrix in between; float32 residuals and Jacobians, float64 linear systems")


def write_cards(encoder_path: Path, decoder_path: Path, *, training: dict[str, Any], metrics: dict[str, Any],
                calibration: dict[str, Any]) -> None:
    preprocessing = (
        "96 x 96 crop grid of 1.25 mm (inference/grids.py lv_grid) centred on the centroid of the filled "
        "myocardium mask (the area inside its convex hull, so that an open ring centres on the cavity), or on the "
        "LV centre the caller gives; channel 0 the map sampled linearly and scaled by normalise_map (1st/99th "
        "percentile of the non-zero pixels to 0/1, clipped to [-0.5, 1.5]); channel 1 the myocardium mask "
        "sampled linearly and thresholded at 0.5.")
    search = {
        "objective": "IMAGE_WEIGHT * mean(window * (map - decoded map)^2) + MASK_WEIGHT * mean((mask - decoded "
                     "mask)^2) + PRIOR_WEIGHT * mean(latent^2); window a Gaussian of image_window_sigma_px around "
                     "the crop centre, mean 1",
        "image_window_sigma_px": quality.IMAGE_WINDOW_SIGMA_PX,
        "image_weight": quality.IMAGE_WEIGHT, "mask_weight": quality.MASK_WEIGHT,
        "prior_weight": quality.PRIOR_WEIGHT, "method": SEARCH_METHOD, "difference_step": quality.DIFFERENCE_STEP,
        "steps": quality.SEARCH_STEPS, "jacobian_at_steps": list(quality.JACOBIAN_AT),
        "decoded_latents": quality.search_evaluations(LATENT_SIZE), "mask_threshold": quality.MASK_THRESHOLD,
    }
    postprocessing = (
        "Latent search (inference/quality.py predict_dice): the decoded segmentation of the nearest good pair, "
        "thresholded at 0.5, is compared with the given mask on the crop grid (Dice); that raw Dice is mapped "
        "through the isotonic calibration stated in this card's 'calibration'.")
    common: dict[str, Any] = {
        "version": VERSION, "task": "segmentation quality control: predicted myocardium Dice without ground "
        "truth, by latent search of a VAE of good (map, myocardium) pairs",
        "architecture": "convolutional VAE, latent 8; encoder works at 48 x 48 (average pooling), decoder "
                        "decodes to 48 x 48 and upsamples its logits bilinearly to 96 x 96",
        "preprocessing": preprocessing, "postprocessing": postprocessing, "training": training,
        "metrics": metrics}
    write_card(encoder_path, name="qc_encoder", inputs=ENCODER_INPUTS, outputs=ENCODER_OUTPUTS,
               extra={"validation_statement": PHANTOM_AND_CINE}, **common)
    # The run time reads the search settings it used and the calibration from the decoder's card.
    write_card(decoder_path, name="qc_decoder", inputs=DECODER_INPUTS, outputs=DECODER_OUTPUTS,
               extra={"search": search, "calibration": calibration, "validation_statement": PHANTOM_AND_CINE},
               **common)


# --------------------------------------------------------------------------------------------------------- main


def _previous_models(out: Path, keep: Path) -> tuple[Model, Model] | None:
    """The QC models in ``out`` that a new export will replace, copied to ``keep`` and loaded (None if none)."""
    encoder, decoder = out / "qc_encoder.onnx", out / "qc_decoder.onnx"
    if not (encoder.is_file() and decoder.is_file()):
        return None
    keep.mkdir(parents=True, exist_ok=True)
    for path in (encoder, decoder):
        for suffix in (".onnx", ".json"):
            shutil.copyfile(path.with_suffix(suffix), keep / path.with_suffix(suffix).name)
    return (Model(keep / encoder.name, device=Device.CPU, threads=1),
            Model(keep / decoder.name, device=Device.CPU, threads=1))


def held_out_metrics(encoder: Any, decoder: Any, args: argparse.Namespace,
                     real_test: list[sunnybrook.SunnybrookSlice]) -> dict[str, Any]:
    """Agreement on held-out phantom v1 and v2 studies and on the real held-out patient, each apart."""
    v1 = score_cases(phantom_cases(VALIDATION_SEED, 0, args.evaluation_studies), encoder, decoder,
                     seed=VALIDATION_SEED)
    v2 = score_cases(phantom_cases(VALIDATION_SEED_V2, 0, args.evaluation_studies_v2, anatomy="v2"), encoder,
                     decoder, seed=VALIDATION_SEED_V2)
    real = score_real(real_test, encoder, decoder, seed=VALIDATION_SEED)
    return {
        "held_out": f"phantom v1: validation seed {VALIDATION_SEED}, studies 0-{args.evaluation_studies - 1}; "
                    "masks: 3 experts, 4 trainees, and the truth eroded, dilated, shifted and with a sector "
                    "missing. At the images' own resolution; real Dice against the truth myocardium",
        **metrics_by(v1),
        "phantom_v2": {"held_out": f"phantom v2: validation seed {VALIDATION_SEED_V2}, studies "
                                   f"0-{args.evaluation_studies_v2 - 1}, the same masks", **metrics_by(v2)},
        "sunnybrook_held_out": {"held_out": f"real: Sunnybrook patient {sunnybrook.HELD_OUT_PATIENT} (cine SSFP), "
                                            "the experts' myocardium and one degraded copy of each kind",
                                **metrics_by(real)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("inference/models"))
    parser.add_argument("--train", type=Path, nargs="+",
                        default=[Path("data/training/train.npz"), Path("data/training/train_v2.npz")])
    parser.add_argument("--sunnybrook", type=Path, default=sunnybrook.SUNNYBROOK_ROOT)
    parser.add_argument("--steps", type=int, default=9000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--beta", type=float, default=0.001)
    parser.add_argument("--image-weight", type=float, default=3.0)
    parser.add_argument("--max-shift-px", type=int, default=5)
    parser.add_argument("--mask-dropout", type=float, default=0.3)
    parser.add_argument("--decoder-width", type=int, default=12)
    parser.add_argument("--calibration-studies", type=int, default=20)
    parser.add_argument("--calibration-studies-v2", type=int, default=10)
    parser.add_argument("--evaluation-studies", type=int, default=40)
    parser.add_argument("--evaluation-studies-v2", type=int, default=20)
    parser.add_argument("--seed", type=int, default=TRAINING_SEED)
    parser.add_argument("--calibrate-only", action="store_true",
                        help="keep the networks in --out; fit the calibration and measure them with the current "
                             "latent search")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("inference.mapping").setLevel(logging.WARNING)  # one line per phantom map otherwise
    started = time.perf_counter()
    if args.calibrate_only:
        recalibrate(args)
        LOGGER.info("done in %.0f s", time.perf_counter() - started)
        return
    real_train, real_test = sunnybrook.split(sunnybrook.load_sunnybrook(args.sunnybrook))
    previous = _previous_models(args.out, args.out.parent / "previous_qc") if args.out.is_dir() else None

    maps, masks = good_pairs(*args.train)
    real_maps, real_masks = real_good_pairs(real_train)
    maps = np.concatenate([maps, np.tile(real_maps, (REAL_REPEATS, 1, 1))])
    masks = np.concatenate([masks, np.tile(real_masks, (REAL_REPEATS, 1, 1, 1))])
    model, train_log = train_vae(maps, masks, steps=args.steps, batch_size=args.batch_size,
                                 learning_rate=args.learning_rate, beta=args.beta, image_weight=args.image_weight,
                                 max_shift_px=args.max_shift_px, mask_dropout=args.mask_dropout,
                                 decoder_width=args.decoder_width, seed=args.seed)
    encoder_path, decoder_path, difference = export(model, args.out)
    LOGGER.info("exported; onnxruntime vs torch max difference %.2e", difference)
    training = {
        "data": f"myomap synthetic phantom v1 and v2 ({', '.join(str(path) for path in args.train)}: T1 and T2 "
                f"maps, 1.5 T and 3 T) and {len(real_maps)} real Sunnybrook slices of "
                f"{len({item.patient for item in real_train if item.myocardium_mask is not None})} patients "
                f"(cine SSFP, each pair {REAL_REPEATS} times; patient {sunnybrook.HELD_OUT_PATIENT} held out); good "
                "pairs only: map + truth myocardium and map + each of 3 experts' myocardium",
        **train_log,
        "steps": args.steps, "batch_size": args.batch_size, "optimiser": "Adam, one-cycle learning rate",
        "learning_rate": args.learning_rate,
        "loss": "per-pixel mean: image_weight * squared error of the map + binary cross-entropy of the mask; plus "
                "beta * KL divergence to N(0, I) averaged over latent dimensions; the map's error weighted by "
                "the Gaussian window of the search",
        "beta": args.beta, "image_weight": args.image_weight,
        "augmentation": f"map and mask shifted together by up to {args.max_shift_px} pixels; the encoder sees the "
                        f"mask channel blank in {args.mask_dropout:.0%} of the pairs (the loss still asks for the "
                        "mask)", "image_window_sigma_px": quality.IMAGE_WINDOW_SIGMA_PX,
        "decoder_width": args.decoder_width, "seed": args.seed,
        "onnxruntime_vs_torch_max_abs_difference": difference,
        "grid": f"{CROP_SIZE} x {CROP_SIZE} @ {GRID_SPACING_MM} mm",
        "command": "python -m training.quality --out inference/models --train "
                   + " ".join(str(path) for path in args.train),
    }
    calibrate_and_evaluate(encoder_path, decoder_path, training, args, real_train, real_test, previous)
    LOGGER.info("done in %.0f s", time.perf_counter() - started)


def calibrate_and_evaluate(encoder_path: Path, decoder_path: Path, training: dict[str, Any],
                           args: argparse.Namespace, real_train: list[sunnybrook.SunnybrookSlice],
                           real_test: list[sunnybrook.SunnybrookSlice],
                           previous: tuple[Model, Model] | dict[str, Any] | None) -> None:
    """Fit the calibration of the exported models with the run time's latent search, measure them on the held-out
    data and write their cards. ``previous`` is the models they replace (measured alike) or, when only the search
    changed, the metrics the cards held before."""
    # Provisional cards (no calibration) so the runtime can load the files for calibration and evaluation.
    write_cards(encoder_path, decoder_path, training=training, metrics={}, calibration={})
    encoder = Model(encoder_path, device=Device.CPU, threads=1)
    decoder = Model(decoder_path, device=Device.CPU, threads=1)

    calibration_records = score_cases(
        phantom_cases(args.seed, CALIBRATION_FIRST_STUDY, args.calibration_studies), encoder, decoder,
        seed=args.seed, calibrated=False)
    calibration_records += score_cases(
        phantom_cases(TRAINING_SEED_V2, CALIBRATION_FIRST_STUDY_V2, args.calibration_studies_v2, anatomy="v2"),
        encoder, decoder, seed=TRAINING_SEED_V2, calibrated=False)
    calibration_records += score_real(real_train, encoder, decoder, seed=args.seed, calibrated=False)
    calibration: dict[str, Any] = isotonic_knots(np.array([r["raw"] for r in calibration_records]),
                                                 np.array([r["real"] for r in calibration_records]))
    calibration |= {"method": "isotonic regression of real on raw Dice, read as a piecewise-linear curve",
                    "data": f"phantom v1: training seed {args.seed}, studies {CALIBRATION_FIRST_STUDY}-"
                            f"{CALIBRATION_FIRST_STUDY + args.calibration_studies - 1}; phantom v2: training seed "
                            f"{TRAINING_SEED_V2}, studies {CALIBRATION_FIRST_STUDY_V2}-"
                            f"{CALIBRATION_FIRST_STUDY_V2 + args.calibration_studies_v2 - 1} (neither in the "
                            "training sets): experts, trainees and degraded truth masks; real: the Sunnybrook "
                            f"training patients' expert and degraded masks; {len(calibration_records)} masks",
                    "fit": agreement(calibration_records, "raw")}
    LOGGER.info("calibration on %d masks; raw agreement %s", len(calibration_records), calibration["fit"])
    write_cards(encoder_path, decoder_path, training=training, metrics={}, calibration=calibration)
    encoder = Model(encoder_path, device=Device.CPU, threads=1)
    decoder = Model(decoder_path, device=Device.CPU, threads=1)

    metrics = {**held_out_metrics(encoder, decoder, args, real_test), "aims": {
        "mae": 0.03, "pearson_r": 0.97, "sunnybrook_held_out_mae": 0.08}}
    if isinstance(previous, dict):
        metrics["previous_search"] = previous
    elif previous is not None:
        metrics["previous_model"] = held_out_metrics(*previous, args, real_test)
    LOGGER.info("held-out: %s", json.dumps({key: metrics[key]["overall"] if key != "overall" else metrics[key]
                                            for key in ("overall", "phantom_v2", "sunnybrook_held_out")}))
    write_cards(encoder_path, decoder_path, training=training, metrics=metrics, calibration=calibration)


def recalibrate(args: argparse.Namespace) -> None:
    """--calibrate-only: keep the shipped networks and their training record, fit the calibration and measure them
    again with the run time's current latent search (after a change of the search)."""
    encoder_path, decoder_path = args.out / "qc_encoder.onnx", args.out / "qc_decoder.onnx"
    card = json.loads(decoder_path.with_suffix(".json").read_text())
    metrics = card.get("metrics", {})
    before = {"search": card.get("search"), "calibration_fit": card.get("calibration", {}).get("fit"),
              **{key: metrics[key]["overall"] if key != "overall" else metrics[key]
                 for key in ("overall", "phantom_v2", "sunnybrook_held_out") if key in metrics}}
    real_train, real_test = sunnybrook.split(sunnybrook.load_sunnybrook(args.sunnybrook))
    calibrate_and_evaluate(encoder_path, decoder_path, card["training"], args, real_train, real_test, before)


if __name__ == "__main__":
    main()
