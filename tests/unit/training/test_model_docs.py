"""docs/models.md is made from the shipped model cards, and every shipped model has a card that says what it is."""

from __future__ import annotations

from pathlib import Path

from inference.model_set import SHIPPED_FILES
from inference.runtime import MODELS_FOLDER, file_sha256
from training.model_card import DOCS_PATH, MAX_MODEL_BYTES, NOT_VALIDATED, PHANTOM_AND_CINE, read_cards
from training.model_docs import FIGURE, render


def test_models_page_is_current_with_the_cards() -> None:
    assert DOCS_PATH.read_text() == render(read_cards()), "run: python -m training.model_docs"
    assert (DOCS_PATH.parent / FIGURE).is_file(), "run: python -m training.sunnybrook_figure"


def test_every_shipped_model_has_a_truthful_card() -> None:
    cards = {card["file"]: card for card in read_cards()}
    for file_name in SHIPPED_FILES.values():
        path: Path = MODELS_FOLDER / file_name
        card = cards[file_name]
        assert path.stat().st_size == card["size_bytes"] < MAX_MODEL_BYTES
        assert file_sha256(path) == card["sha256"]
        # No card may claim more than the model saw: the phantom, and at most the real cine images.
        assert card["validation_statement"] in (NOT_VALIDATED, PHANTOM_AND_CINE)
        assert card["metrics"], f"{file_name}: no held-out metrics in its card"
        assert card["training"], f"{file_name}: no training record in its card"
