"""Fixtures shared by the report builders' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from phantom.model import Vendor
from tests.report_builders import phantom_study


class _PhantomFolders(dict[Vendor, Path]):
    """Phantom study folders by vendor, each written when first asked for."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__()
        self._out_dir = out_dir

    def __missing__(self, vendor: Vendor) -> Path:
        self[vendor] = folder = phantom_study(vendor, self._out_dir)
        return folder


@pytest.fixture(scope="session")
def phantom_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[Vendor, Path]:
    """One-slice MOLLI phantom studies by vendor (:func:`tests.report_builders.phantom_study`), shared by the
    modules: a study is written once, by the first test that needs it."""
    return _PhantomFolders(tmp_path_factory.mktemp("phantom"))
