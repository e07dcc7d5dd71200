"""docs/models.md from the model cards in inference/models/: one section per model with its contract, data,
held-out metrics and SHA-256. Run ``python -m training.model_docs`` after training; a test checks the page is
current."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from training.model_card import DOCS_PATH, NOT_VALIDATED, read_cards

INTRODUCTION = """# Models

The node runs four models, shipped as ONNX files in `inference/models/` with a JSON model card beside each (the
encoder and decoder of the quality-control VAE are two files). The cards are the contract the runtime checks when it
loads a file (`inference/runtime.py`): input and output names, shapes and element types, and the SHA-256. A site can
put its own model in place of any of them by naming its file in the `[models]` section of the configuration; the
file must meet the same contract.

They were trained by `training/` on the myomap synthetic phantom (physically grounded Bloch simulation of MOLLI,
ShMOLLI and T2-prepared bSSFP; v1 textbook hearts and v2 realistic anatomy, surroundings and scanner sampling, see
docs/phantom.md), on studies whose seeds no test uses; the segmentation and the quality control also on the real
cine short-axis images of 4 Sunnybrook patients with their experts' contours, the fifth (SC-HF-I-1) held out. No
labelled T1 or T2 maps of patients were available: **no figure here is a clinical accuracy of mapping.** Each
card's statement says what its model saw. Retrain with `python -m training` (`[train]` extra) or each model's
command in its card; this page is made from the cards by `python -m training.model_docs`.

Every model sees a fixed grid (`inference/grids.py`): segmentation a 128 x 128 grid of 1.25 mm pixels centred on
the image; the other models a 96 x 96 grid of 1.25 mm pixels centred on the LV centre found by segmentation. Maps
are normalised per image (1st and 99th percentiles to 0 and 1), so the models read T1 and T2 maps with or without
a scanner's bias correction.
"""

QC_AND_T2_NOTE = (
    "The QC rows are the autoencoder alone on expert, trainee and degraded masks. The node's QC (the lower of the "
    "autoencoder and the segmentation's agreement on the left-right mirrored map, plus plausibility doubts; "
    "inference/quality.py, inference/plausibility.py) on the segmentation's own contours is measured by "
    "`python -m benchmarks.qc_accuracy`, "
    "phantom v2 and real apart. T2 maps' motion check (inference/t2_motion.py, no model file) is calibrated and "
    "measured by `python -m training.t2_motion`."
)

#: The figure of the shipped segmentation on the held-out real patient (training/sunnybrook_figure.py).
FIGURE = "figures/segmentation_sunnybrook.png"

#: Summary rows: (model file, figure, aim, path in the card's metrics for phantom v1, phantom v2, real held-out).
SUMMARY: tuple[tuple[str, str, str, tuple[str, ...] | None, tuple[str, ...] | None, tuple[str, ...] | None], ...] = (
    ("segmentation.onnx", "myocardium Dice, mean", ">= 0.93 phantom, >= 0.85 real",
     ("overall", "myocardium_dice_mean"), ("phantom_v2_held_out", "overall", "myocardium_dice_mean"),
     ("sunnybrook_held_out", "summary", "myocardium_dice_mean")),
    ("segmentation.onnx", "myocardium Dice, worst slice", "",
     ("overall", "myocardium_dice_min"), ("phantom_v2_held_out", "overall", "myocardium_dice_min"),
     ("sunnybrook_held_out", "summary", "myocardium_dice_min")),
    ("segmentation.onnx", "Hausdorff distance (mm), mean", "2.65 (inter-expert)",
     ("overall", "hausdorff_mm_mean"), ("phantom_v2_held_out", "overall", "hausdorff_mm_mean"),
     ("sunnybrook_held_out", "summary", "hausdorff_mm_mean")),
    ("segmentation.onnx", "experts' mid-wall region inside the myocardium, mean", ">= 0.95", None, None,
     ("sunnybrook_held_out", "summary", "mid_wall_coverage_mean")),
    ("qc_decoder.onnx", "predicted Dice: mean absolute error", "<= 0.03 phantom, <= 0.08 real",
     ("overall", "mae"), ("phantom_v2", "overall", "mae"), ("sunnybrook_held_out", "overall", "mae")),
    ("qc_decoder.onnx", "predicted Dice: Pearson r", ">= 0.97 phantom",
     ("overall", "pearson_r"), ("phantom_v2", "overall", "pearson_r"), ("sunnybrook_held_out", "overall", "pearson_r")),
    ("motion.onnx", "per-segment AUC", ">= 0.95",
     ("segment_auc_by", "phantom", "v1", "auc"), ("segment_auc_by", "phantom", "v2", "auc"), None),
    ("motion.onnx", "image-level specificity at the operating point", ">= 0.95",
     ("verdict", "by", "phantom", "v1", "specificity"), ("verdict", "by", "phantom", "v2", "specificity"), None),
    ("motion.onnx", "image-level sensitivity at the operating point", "",
     ("verdict", "by", "phantom", "v1", "sensitivity"), ("verdict", "by", "phantom", "v2", "sensitivity"), None),
    ("consensus.onnx", "trainee contours brought closer to the truth", "",
     ("native_resolution", "trainees", "fraction_closer_to_truth"), None, None),
)


def _lookup(metrics: dict[str, Any], path: tuple[str, ...] | None) -> str:
    if path is None:  # the figure does not apply to these data
        return "-"
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return "not measured"
        value = value[key]
    return _cell(value)


def summary(cards: list[dict[str, Any]]) -> str:
    """The held-out figures the models are judged by, phantom and real apart, from the cards."""
    by_file = {card["file"]: card for card in cards}
    lines = ["## Summary: held-out figures, phantom and real apart", "",
             "Phantom v1 and v2: held-out studies of the validation seeds at the images' own resolution. Real: the "
             "held-out Sunnybrook patient SC-HF-I-1 (9 slices with a myocardium; cine SSFP, not maps). Motion has "
             "no real labelled data.", "",
             "| model | figure | aim | phantom v1 | phantom v2 | real (held-out patient) |",
             "|---|---|---|---|---|---|"]
    for file_name, figure, aim, v1, v2, real in SUMMARY:
        card = by_file.get(file_name)
        if card is None:
            continue
        metrics = card.get("metrics", {})
        lines.append(f"| {card['name']} {card['version']} | {figure} | {aim} | {_lookup(metrics, v1)} | "
                     f"{_lookup(metrics, v2)} | {_lookup(metrics, real)} |")
    lines += ["", QC_AND_T2_NOTE,
              "", f"![The shipped segmentation on the held-out real patient]({FIGURE})", "",
              "The shipped segmentation on the held-out real patient: experts' borders yellow, the model's "
              "endocardium red and epicardium green (`python -m training.sunnybrook_figure`).", ""]
    return "\n".join(lines)


def render(cards: list[dict[str, Any]]) -> str:
    """The page for these cards."""
    parts = [INTRODUCTION, summary(cards)]
    for card in cards:
        parts.append(_section(card))
    return "\n".join(parts).rstrip() + "\n"


def _section(card: dict[str, Any]) -> str:
    lines = [f"## {card['name']} {card['version']} (`{card['file']}`)", "", card.get("task", ""), ""]
    lines += [f"- Architecture: {card.get('architecture', '')}",
              f"- Size: {card['size_bytes'] / 1e6:.2f} MB; SHA-256 `{card['sha256']}`", ""]
    lines += ["| direction | name | shape | type | meaning |", "|---|---|---|---|---|"]
    for direction in ("inputs", "outputs"):
        for item in card[direction]:
            shape = "[" + ", ".join("N" if d is None else str(d) for d in item["shape"]) + "]"
            lines.append(f"| {direction[:-1]} | `{item['name']}` | {shape} | {item.get('dtype', 'float')} | "
                         f"{item.get('meaning', '')} |")
    lines += ["", f"Preprocessing: {card.get('preprocessing', '')}", "",
              f"Postprocessing: {card.get('postprocessing', '')}", "", "### Training", ""]
    lines += _mapping(card.get("training", {}))
    lines += ["", "### Held-out metrics", ""]
    lines += _mapping(card.get("metrics", {}))
    if "cpu_int8" in card:
        copy = card["cpu_int8"]
        lines += ["", f"### int8 copy for the CPU (`{copy['file']}`)", "",
                  "On the CPU the node runs this copy where the CPU sums int8 products exactly (VNNI or AMX on x86, "
                  "any Arm; inference/runtime.py), else the float model, whose figures it then gives (an x86 CPU "
                  "without VNNI saturates the copy's 16-bit pair sums); a GPU runs the float model. "
                  f"Largest loss of mean myocardium Dice on the held-out sets: {copy['largest_dice_loss']:.4f}.", ""]
        lines += _mapping({key: value for key, value in copy.items() if key not in ("file", "largest_dice_loss")})
    lines += ["", f"*{card.get('validation_statement', NOT_VALIDATED)}*", ""]
    return "\n".join(lines)


def _mapping(values: dict[str, Any], depth: int = 0) -> list[str]:
    """Nested dicts as nested lists; dicts of dicts of numbers as tables."""
    lines: list[str] = []
    indent = "  " * depth
    for key, value in values.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()) and all(
            not isinstance(x, dict | list) for v in value.values() for x in v.values()
        ):
            columns = sorted({column for v in value.values() for column in v})
            lines += [f"{indent}- {key}:", ""]
            lines.append(f"{indent}  | | " + " | ".join(columns) + " |")
            lines.append(f"{indent}  |---|" + "---|" * len(columns))
            for row, cells in value.items():
                lines.append(f"{indent}  | {row} | " + " | ".join(_cell(cells.get(c)) for c in columns) + " |")
            lines.append("")
        elif isinstance(value, dict):
            lines.append(f"{indent}- {key}:")
            lines += _mapping(value, depth + 1)
        else:
            lines.append(f"{indent}- {key}: {_cell(value)}")
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return json.dumps(value) if value is None else str(value)


def main() -> int:
    DOCS_PATH.write_text(render(read_cards()))
    print(f"wrote {Path(DOCS_PATH).name} from {len(read_cards())} model cards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
