"""The node's log set-up: the libraries' chatter stays out unless ``[logging] libraries`` asks for it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from config import load_settings
from dicomnode.app.logging_setup import QUIET_LIBRARIES, configure_logging


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    names = ["", *QUIET_LIBRARIES]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_libraries_are_quiet_by_default_and_the_node_is_not() -> None:
    configure_logging(load_settings())
    for name in QUIET_LIBRARIES:
        assert not logging.getLogger(f"{name}.anything").isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    assert logging.getLogger("highdicom.sc.sop").getEffectiveLevel() == logging.WARNING


def test_the_libraries_setting_brings_their_lines_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYOMAP_LOGGING__LIBRARIES", "info")
    configure_logging(load_settings())
    assert all(logging.getLogger(name).getEffectiveLevel() == logging.INFO for name in QUIET_LIBRARIES)


def test_libraries_never_log_below_the_node_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYOMAP_LOGGING__LEVEL", "ERROR")
    monkeypatch.setenv("MYOMAP_LOGGING__LIBRARIES", "DEBUG")
    configure_logging(load_settings())
    assert all(logging.getLogger(name).getEffectiveLevel() == logging.ERROR for name in QUIET_LIBRARIES)


def test_an_unknown_level_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYOMAP_LOGGING__LIBRARIES", "chatty")
    with pytest.raises(ValidationError):
        load_settings()
