"""The int8 copy of the segmentation model that the node runs on the CPU, and what it costs in accuracy.

``python -m training.quantise [--out inference/models]``: static quantisation (onnxruntime, QDQ: int8 weights per
output channel, uint8 activations with min-max ranges) calibrated on segmentation grids of phantom training studies
and of the Sunnybrook training patients; never on held-out data. The float and the int8 model are then measured on
the same held-out phantom studies and the held-out Sunnybrook patient, and the card of the float model gets a
``cpu_int8`` entry (file, SHA-256, method, both models' figures), which makes the runtime run the copy on the CPU
(inference/runtime.py). On the CPU the copy takes about half the time per map; a GPU runs the float model.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inference.grids import image_centre_grid, normalise_map, sample
from inference.runtime import MODELS_FOLDER, Device, Model, card_path, file_sha256
from training import sunnybrook
from training.phantom_slices import TRAINING_SEED, VALIDATION_SEED_V2, study_cases
from training.segmentation import INPUT_NAME, held_out_metrics_of_models, sunnybrook_metrics

LOGGER = logging.getLogger(__name__)

NAME = "segmentation"
CALIBRATION_STUDIES = 8  # phantom training studies: 72 T1 and T2 maps, with the Sunnybrook training slices 150 grids
HELD_OUT_STUDIES = 20
HELD_OUT_STUDIES_V2 = 10
#: The most the int8 copy may lose in mean myocardium Dice against the float model on held-out data.
MAX_DICE_LOSS = 0.01


def calibration_grids(n_studies: int = CALIBRATION_STUDIES,
                      sunnybrook_root: Path = sunnybrook.SUNNYBROOK_ROOT) -> list[np.ndarray]:
    """Normalised (128, 128) segmentation grids of phantom training maps and Sunnybrook training images."""
    grids = []
    for study in range(n_studies):
        for case in study_cases(TRAINING_SEED, study):
            grid = image_centre_grid(case.map_ms.shape, case.pixel_spacing_mm)
            grids.append(normalise_map(sample(case.map_ms, grid)))
    real_train, _ = sunnybrook.split(sunnybrook.load_sunnybrook(sunnybrook_root))
    for item in real_train:
        grid = image_centre_grid(item.image.shape, item.pixel_spacing_mm)
        grids.append(normalise_map(sample(item.image, grid)))
    return grids


def quantise(float_path: Path, int8_path: Path, grids: list[np.ndarray]) -> None:
    """Write the int8 QDQ copy of ``float_path`` calibrated on ``grids``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Grids(CalibrationDataReader):
        def __init__(self) -> None:
            self.items: Iterator[np.ndarray] = iter(grids)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {INPUT_NAME: item[np.newaxis, np.newaxis].astype(np.float32)}

    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared))
        quantize_static(str(prepared), str(int8_path), Grids(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)


def measure(float_path: Path, *, workers: int = 2) -> dict[str, Any]:
    """Held-out figures of the float model and its int8 copy (the copy named in its card) on the same cases."""
    models = {"float32": Model(float_path, device=Device.CPU, quantised=False),
              "int8": Model(float_path, device=Device.CPU, quantised=True)}
    if not models["int8"].int8:
        raise RuntimeError(f"the card of {float_path.name} names no int8 copy")
    phantom = held_out_metrics_of_models(models, n_studies=HELD_OUT_STUDIES, workers=workers)
    phantom_v2 = held_out_metrics_of_models(models, seed=VALIDATION_SEED_V2, n_studies=HELD_OUT_STUDIES_V2,
                                            workers=workers, anatomy="v2")
    _, real_test = sunnybrook.split(sunnybrook.load_sunnybrook(sunnybrook.SUNNYBROOK_ROOT))
    return {name: {"phantom_held_out": phantom[name]["overall"], "phantom_v2_held_out": phantom_v2[name]["overall"],
                   "sunnybrook_held_out": sunnybrook_metrics(model, real_test)["summary"]}
            for name, model in models.items()}


def dice_loss(figures: dict[str, Any]) -> float:
    """The largest drop in mean myocardium Dice from the float model to the int8 copy over the held-out sets."""
    return max(float(figures["float32"][held_out]["myocardium_dice_mean"])
               - float(figures["int8"][held_out]["myocardium_dice_mean"])
               for held_out in ("phantom_held_out", "phantom_v2_held_out", "sunnybrook_held_out"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODELS_FOLDER, help="folder of segmentation.onnx and its card")
    parser.add_argument("--workers", type=int, default=2, help="processes making the held-out phantom studies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("inference.mapping").setLevel(logging.WARNING)
    float_path, int8_path = args.out / f"{NAME}.onnx", args.out / f"{NAME}_int8.onnx"
    started = time.perf_counter()
    grids = calibration_grids()
    quantise(float_path, int8_path, grids)
    card_file = card_path(float_path)
    card = json.loads(card_file.read_text())
    card["cpu_int8"] = {
        "file": int8_path.name,
        "sha256": file_sha256(int8_path),
        "size_bytes": int8_path.stat().st_size,
        "method": "onnxruntime static quantisation, QDQ format: int8 weights per output channel, uint8 activations "
                  "with min-max ranges",
        "calibration": f"{len(grids)} segmentation grids: the T1 and T2 maps of phantom training studies "
                       f"{TRAINING_SEED}-{TRAINING_SEED + CALIBRATION_STUDIES - 1} and the Sunnybrook training "
                       "patients' images; no held-out data",
        "command": "python -m training.quantise --out inference/models",
    }
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    figures = measure(float_path, workers=args.workers)
    loss = dice_loss(figures)
    card["cpu_int8"]["held_out"] = figures
    card["cpu_int8"]["largest_dice_loss"] = round(loss, 4)
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    LOGGER.info("int8 copy %s: largest held-out myocardium Dice loss %.4f; %s", int8_path.name, loss,
                json.dumps(figures))
    if loss > MAX_DICE_LOSS:
        LOGGER.error("the int8 copy loses more than %.2f Dice: its entry is taken out of the card", MAX_DICE_LOSS)
        del card["cpu_int8"]
        card_file.write_text(json.dumps(card, indent=2) + "\n")
        int8_path.unlink()
        return 1
    print(f"{int8_path} written in {time.perf_counter() - started:.0f} s; largest Dice loss {loss:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
