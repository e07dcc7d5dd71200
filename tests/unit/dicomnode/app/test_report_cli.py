"""`myomap report trainee|team`: the PDF of a reader or team from the node's database; unknown names exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

from typer.testing import CliRunner

from dicomnode.app.cli import app


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "myomap.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "data"}"\n')
    return config


def test_reports_of_a_reader_without_attempts_and_of_unknown_names(tmp_path: Path) -> None:
    runner = CliRunner()
    config = str(_config(tmp_path))
    added = runner.invoke(app, ["reader", "add", "Ann Roe", "--team", "north", "--config", config])
    assert added.exit_code == 0, added.output

    out = tmp_path / "reports" / "ann.pdf"
    done = runner.invoke(app, ["report", "trainee", "Ann Roe", "--out", str(out), "--config", config])
    assert done.exit_code == 0, done.output
    text = " ".join(subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())
    assert "Ann Roe" in text and "team north" in text and "no scored attempt yet" in text
    assert "No training set with accreditation criteria covers this reader yet" in text

    team = tmp_path / "north.pdf"
    assert runner.invoke(app, ["report", "team", "north", "--out", str(team), "--config", config]).exit_code == 0
    assert team.read_bytes().startswith(b"%PDF-")

    for args, message in (
        (["trainee", "Bob", "--out", str(tmp_path / "bob.pdf")], "no reader named 'Bob'"),
        (["team", "south", "--out", str(tmp_path / "south.pdf")], "no reader belongs to team 'south'"),
        (["trainee", "Ann Roe", "--out", str(tmp_path / "x.pdf"), "--training-set", "none"],
         "no training set named 'none'"),
    ):
        refused = runner.invoke(app, ["report", *args, "--config", config])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    assert not any((tmp_path / name).exists() for name in ("bob.pdf", "south.pdf", "x.pdf"))
