"""docs/models.md from the model cards in inference/models/: one section per model with its contract, data,
held-out metrics and SHA-256. Run ``python -m training.model_docs`` after training; a test checks the page is
current."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from training.model_card import DOCS_PATH, NOT_VALIDATED, read_cards

INTRODUCTION = f"""# Models

The node runs four models, shipped as ONNX files in `inference/models/` with a JSON model card beside each (the
encoder and decoder of the quality-control VAE are two files). The cards are the contract the runtime checks when it
loads a file (`inference/runtime.py`): input and output names, shapes and element types, and the SHA-256. A site can
put its own model in place of any of them by naming its file in the `[models]` section of the configuration; the
file must meet the same contract.

All four were trained from scratch by `training/` on the myomap synthetic phantom (physically grounded Bloch
simulation of MOLLI, ShMOLLI and T2-prepared bSSFP, see docs/phantom.md), on studies whose seeds no test uses.
**{NOT_VALIDATED}** No labelled patient data could be used. Retrain with `python -m training` (`[train]` extra);
this page is made from the cards by `python -m training.model_docs`.

Every model sees a fixed grid (`inference/grids.py`): segmentation a 128 x 128 grid of 1.25 mm pixels centred on
the image; the other models a 96 x 96 grid of 1.25 mm pixels centred on the LV centre found by segmentation. Maps
are normalised per image (1st and 99th percentiles to 0 and 1), so the models read T1 and T2 maps with or without
a scanner's bias correction.
"""


def render(cards: list[dict[str, Any]]) -> str:
    """The page for these cards."""
    parts = [INTRODUCTION]
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
    lines += ["", "### Held-out phantom metrics", ""]
    lines += _mapping(card.get("metrics", {}))
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
