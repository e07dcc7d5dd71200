"""Export to ONNX and the model card beside it (JSON), and docs/models.md made from the cards.

The card is the contract the runtime checks (inference/runtime.py: inputs, outputs, shapes, types, SHA-256) plus
what a site needs to judge the model: preprocessing, training data, held-out metrics and the plain statement that
it was trained on a synthetic phantom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference.runtime import MODELS_FOLDER, file_sha256

NOT_VALIDATED = ("Trained and evaluated on the myomap synthetic phantom only; not validated on patients. "
                 "The figures are phantom figures, not clinical accuracy.")
PHANTOM_AND_CINE = (
    "Trained on the myomap synthetic phantom and on real cine SSFP short-axis slices of 4 Sunnybrook patients; "
    "measured on held-out phantom studies and one held-out Sunnybrook cine patient. Not validated on patients' T1 "
    "or T2 maps: the figures are phantom and cine figures, not clinical accuracy of mapping."
)
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "models.md"
MAX_MODEL_BYTES = 20 * 1024 * 1024


def export_onnx(module: Any, example_inputs: tuple[Any, ...], path: Path, *, input_names: list[str],
                output_names: list[str], opset: int = 17) -> Path:
    """Export a torch module (eval mode, CPU) with a free batch axis on every input and output."""
    import torch

    module = module.eval().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    with torch.no_grad():
        torch.onnx.export(module, example_inputs, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ValueError(f"{path.name} is {size / 1e6:.1f} MB; shipped models must stay under 20 MB")
    return path


def tensor(name: str, shape: list[int | None], dtype: str = "float", meaning: str = "") -> dict[str, Any]:
    """One input or output entry of a card; None in ``shape`` is the batch axis."""
    return {"name": name, "shape": shape, "dtype": dtype, "meaning": meaning}


def write_card(onnx_path: Path, *, name: str, version: str, task: str, architecture: str,
               inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], preprocessing: str,
               postprocessing: str, training: dict[str, Any], metrics: dict[str, Any],
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``<model>.json`` beside the ONNX file, with its SHA-256 and size; ``extra`` adds top-level keys a
    model's runtime reads (e.g. the QC search settings and calibration)."""
    card = {
        "name": name,
        "version": version,
        "task": task,
        "architecture": architecture,
        "file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "size_bytes": onnx_path.stat().st_size,
        "inputs": inputs,
        "outputs": outputs,
        "preprocessing": preprocessing,
        "postprocessing": postprocessing,
        "training": training,
        "metrics": metrics,
        "validation_statement": NOT_VALIDATED,
        **(extra or {}),
    }
    path = onnx_path.with_suffix(".json")
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def read_cards(folder: Path = MODELS_FOLDER) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
