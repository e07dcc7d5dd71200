"""`myomap reader ...` and `myomap training-set ...` on a node's database: what they store, their messages, and
exit status 2 on bad input (nothing else changed)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from config import load_settings
from db.models import Reader, ReaderAlias, TrainingSet, WebUser
from db.session import make_engine, make_session_factory
from dicomnode.app.cli import app


def _invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--config", str(config)])


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "myomap.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "data"}"\n')
    return config


def _rows(config: Path, model: type) -> list:
    engine = make_engine(load_settings(config).database_url)
    try:
        with make_session_factory(engine)() as session:
            session.expire_on_commit = False
            return list(session.scalars(select(model)))
    finally:
        engine.dispose()


def test_reader_commands(tmp_path: Path) -> None:
    config = _config(tmp_path)
    added = _invoke(config, "reader", "add", "Ann Roe", "--team", "north")
    assert added.exit_code == 0 and added.output.strip() == "added reader Ann Roe (trainee, team north)"
    assert _invoke(config, "reader", "add", "Prof Expert", "--role", "expert").exit_code == 0
    aliased = _invoke(config, "reader", "alias", "Ann Roe", "ROE^ANN", "roe a*")
    assert aliased.exit_code == 0 and aliased.output.strip() == "aliases ROE^ANN, roe a* -> Ann Roe"
    assert _invoke(config, "reader", "set-team", "ann roe", "south").output.strip() == "Ann Roe: team south"
    assert _invoke(config, "reader", "set-role", "Ann Roe", "supervisor").output.strip() == "Ann Roe: role supervisor"

    listed = _invoke(config, "reader", "list", "--json")
    assert listed.exit_code == 0
    assert json.loads(listed.output) == [
        {"name": "Prof Expert", "role": "expert", "team": "", "aliases": [], "web_users": []},
        {"name": "Ann Roe", "role": "supervisor", "team": "south", "aliases": ["ROE^ANN", "roe a*"],
         "web_users": []},
    ]
    table = _invoke(config, "reader", "list", "--team", "south")
    assert table.exit_code == 0 and table.output.split()[:4] == ["Ann", "Roe", "supervisor", "south"]

    # Bad input: a message, exit status 2, nothing changed.
    for args, message in [
        (("reader", "add", "Ann Roe"), "a reader named 'Ann Roe' exists already"),
        (("reader", "add", "Zed", "--role", "boss"), "unknown reader role 'boss'"),
        (("reader", "set-role", "Nobody", "expert"), "no reader named 'Nobody'"),
        (("reader", "alias", "Prof Expert", "ROE^ANN"), "alias 'ROE^ANN' maps to 'Ann Roe' already"),
        (("reader", "alias", "Prof Expert", "ROE^ANN", "--remove"), "alias 'ROE^ANN' is not Prof Expert's: it maps "
                                                                    "to Ann Roe"),
        (("reader", "alias", "Ann Roe", "ROE^X", "--remove"), "no alias 'ROE^X'"),
        (("reader", "link-user", "nobody", "Ann Roe"), "no web user named 'nobody'"),
        (("reader", "link-user", "nobody"), "name a reader, or give --unlink"),
    ]:
        result = _invoke(config, *args)
        assert result.exit_code == 2, (args, result.output)
        assert f"error: {message}" in result.output and "Traceback" not in result.output
    assert [r.name for r in _rows(config, Reader)] == ["Ann Roe", "Prof Expert"]
    assert len(_rows(config, ReaderAlias)) == 2

    removed = _invoke(config, "reader", "alias", "Ann Roe", "roe a*", "--remove")
    assert removed.exit_code == 0 and [a.pattern for a in _rows(config, ReaderAlias)] == ["ROE^ANN"]


def test_link_user(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _invoke(config, "reader", "add", "Ann Roe").exit_code == 0
    runner = CliRunner()
    assert runner.invoke(app, ["user", "add", "ann", "--password-stdin", "--config", str(config)],
                         input="secret\n").exit_code == 0
    (user,) = _rows(config, WebUser)
    assert (user.role, user.reader_id) == ("admin", None)  # users are admins unless told otherwise
    linked = _invoke(config, "reader", "link-user", "ann", "Ann Roe", "--role", "trainee")
    assert linked.exit_code == 0 and linked.output.strip() == "ann (trainee) -> Ann Roe"
    (user,) = _rows(config, WebUser)
    assert user.role == "trainee" and user.reader_id == _rows(config, Reader)[0].id
    refused = _invoke(config, "reader", "link-user", "ann", "--unlink")
    assert refused.exit_code == 2 and "is a trainee: link them to the reader they are" in refused.output
    assert _invoke(config, "reader", "link-user", "ann", "--unlink", "--role", "admin").exit_code == 0
    (user,) = _rows(config, WebUser)
    assert (user.role, user.reader_id) == ("admin", None)


def test_training_set_commands(tmp_path: Path) -> None:
    config = _config(tmp_path)
    created = _invoke(config, "training-set", "create", "basic", "--study", "1.2.3.1", "--study", "1.2.3.2",
                      "--reference", "expert_staple", "--no-auto-consensus", "--description", "first steps")
    assert created.exit_code == 0 and created.output.strip() == "created training set basic with 2 cases"
    case = _invoke(config, "training-set", "add-case", "basic", "1.2.3.3", "--reference", "gold_standard",
                   "--gold-standard", "expert1", "--label", "hard")
    assert case.exit_code == 0 and case.output.strip() == "added hard (1.2.3.3) to basic"
    criteria = _invoke(config, "training-set", "criteria", "basic", "--min-dice", "0.85", "--max-dt1-ms", "30",
                       "--last", "5", "--min-cases", "4")
    assert criteria.exit_code == 0, criteria.output
    assert criteria.output.strip() == (
        "criteria of basic: mean Dice >= 0.85 over the last 5 cases; mean |dT1| <= 30 ms over the last 5 cases; "
        "no critical error mode (shifted, epicardial_fat, blood_pool, papillary, too_smooth, jagged, "
        "part_missed) in the last 5 cases; at least 4 cases scored")
    narrowed = _invoke(config, "training-set", "criteria", "basic", "--critical-mode", "part_missed",
                       "--critical-mode", "blood_pool")
    assert narrowed.exit_code == 0 and "no critical error mode (part_missed, blood_pool)" in narrowed.output
    assert "mean Dice >= 0.85" in narrowed.output  # options not given keep their value

    switched = _invoke(config, "training-set", "set-reference", "basic", "case 2", "team_average")
    assert switched.exit_code == 0 and switched.output.strip() == "basic case 2: reference team_average"
    assert _invoke(config, "training-set", "set-reference", "basic", "case 1", "automatic").exit_code == 0
    assert _invoke(config, "training-set", "auto-consensus", "basic", "on").output.strip() == (
        "basic: automatic consensus on")
    assert _invoke(config, "training-set", "auto-consensus", "basic", "off").exit_code == 0
    bad_state = _invoke(config, "training-set", "auto-consensus", "basic", "maybe")
    assert bad_state.exit_code == 2 and "say on or off" in bad_state.output

    listed = _invoke(config, "training-set", "list")
    assert listed.exit_code == 0 and listed.output.split()[:5] == ["basic", "3", "cases", "auto", "consensus"]
    shown = _invoke(config, "training-set", "show", "basic")
    assert shown.exit_code == 0
    assert "  hard             1.2.3.3  reference: gold_standard (gold standard expert1)" in shown.output
    assert "case 1           1.2.3.1  reference: automatic" in shown.output
    assert "case 2           1.2.3.2  reference: team_average" in shown.output
    as_json = json.loads(_invoke(config, "training-set", "show", "basic", "--json").output)
    assert as_json["auto_consensus"] is False and as_json["criteria"]["min_cases"] == 4

    for args, message in [
        (("training-set", "create", "basic", "--study", "1.2.3.9"), "a training set named 'basic' exists already"),
        (("training-set", "create", "x", "--study", "1.2.abc"), "'1.2.abc' is not a Study Instance UID"),
        (("training-set", "create", "x", "--study", "1.2.3", "--reference", "vote"), "unknown reference policy"),
        (("training-set", "add-case", "nope", "1.2.3.4"), "no training set named 'nope' (training sets: basic)"),
        (("training-set", "criteria", "basic", "--min-dice", "2"), "minimum mean Dice must lie in (0, 1]"),
        (("training-set", "criteria", "basic", "--critical-mode", "sloppy"), "unknown error modes ['sloppy']"),
        (("training-set", "show", "nope"), "no training set named 'nope'"),
        (("training-set", "set-reference", "basic", "case 9", "expert_staple"), "'basic' has no case labelled"),
        (("training-set", "set-reference", "basic", "case 1", "gold_standard"),
         "the gold_standard reference policy needs the gold-standard reader"),
    ]:
        result = _invoke(config, *args)
        assert result.exit_code == 2, (args, result.output)
        assert f"error: {message}" in result.output and "Traceback" not in result.output
    (stored,) = _rows(config, TrainingSet)
    assert stored.criteria["critical_error_modes"] == ["part_missed", "blood_pool"]
    missing = CliRunner().invoke(app, ["training-set", "create", "y", "--config", str(config)])
    assert missing.exit_code == 2 and "--study" in missing.output
