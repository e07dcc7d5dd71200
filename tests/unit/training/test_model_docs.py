"""docs/models.md is made from the shipped model cards, and every shipped model has a card that says what it is."""

from __future__ import annotations

from pathlib import Path

from inference.model_set import SHIPPED_FILES
from inference.runtime import MODELS_FOLDER, file_sha256
from training.model_card import DOCS_PATH, MAX_MODEL_BYTES, NOT_VALIDATED, read_cards
from training.model_docs import render


def test_models_page_is_current_with_the_cards() -> None:
    assert DOCS_PATH.read_text() == render(read_cards()), "run: python -m training.model_docs"


def test_every_shipped_model_has_a_truthful_card() -> None:
    cards = {card["file"]: card for card in read_cards()}
    for file_name in SHIPPED_FILES.values():
        path: Path = MODELS_FOLDER / file_name
        card = cards[file_name]
        assert path.stat().st_size == card["size_bytes"] < MAX_MODEL_BYTES
        assert file_sha256(path) == card["sha256"]
        assert card["validation_statement"] == NOT_VALIDATED
        assert card["metrics"], f"{file_name}: no held-out metrics in its card"
        assert card["training"], f"{file_name}: no training record in its card"
