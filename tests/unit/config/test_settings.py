"""Settings: embedded defaults, a site TOML file, MYOMAP_* variables, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import load_settings


def test_defaults_are_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYOMAP_CONFIG", raising=False)
    settings = load_settings(storage={"path": tmp_path})
    assert (settings.dicom.ae_title, settings.dicom.port, settings.series.quiet_seconds) == (
        "MYOMAP",
        11112,
        3.0,
    )
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'myomap.db'}"


def test_site_file_then_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[dicom]\nport = 104\nallow_any_calling_ae = false\n\n[[peers]]\nae_title = "CONSOLE"\nhost = "10.0.0.5"\n'
    )
    monkeypatch.setenv("MYOMAP_DICOM__PORT", "4242")
    settings = load_settings(site)
    assert settings.dicom.port == 4242 and settings.dicom.allow_any_calling_ae is False
    assert settings.peer("CONSOLE ").host == "10.0.0.5" and settings.peer("OTHER") is None


def test_invalid_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ae_title"):
        load_settings(dicom={"ae_title": "WAY_TOO_LONG_AE_TITLE"})
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_web_login_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYOMAP_CONFIG", raising=False)
    defaults = load_settings().web
    assert (defaults.login, defaults.session_hours, defaults.secret_key.get_secret_value()) == (True, 12.0, "")
    site = tmp_path / "site.toml"
    site.write_text("[web]\nlogin = false\nsession_hours = 1.5\n")
    monkeypatch.setenv("MYOMAP_WEB__SECRET_KEY", "from-the-environment")
    settings = load_settings(site)
    assert (settings.web.login, settings.web.session_hours) == (False, 1.5)
    assert settings.web.secret_key.get_secret_value() == "from-the-environment"
    assert "from-the-environment" not in settings.model_dump_json()  # `myomap config` prints it masked
    with pytest.raises(ValidationError, match="session_hours"):
        load_settings(web={"session_hours": 0})
