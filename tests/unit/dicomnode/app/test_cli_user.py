"""`myomap user add/list/passwd/remove` on a node's database (SQLite under a temporary storage folder)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from config import load_settings
from db.models import WebUser
from db.session import make_engine, make_session_factory
from dicomnode.app.cli import app
from reports.web.passwords import verify_password
from reports.web.users import INITIAL_PASSWORD_FILE


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "myomap.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "data"}"\n')
    return config


def _hashes(config: Path) -> dict[str, str]:
    engine = make_engine(load_settings(config).database_url)
    try:
        with make_session_factory(engine)() as session:
            return {user.username: user.password_hash for user in session.scalars(select(WebUser))}
    finally:
        engine.dispose()


def test_user_add_list_passwd_remove(tmp_path: Path) -> None:
    runner = CliRunner()
    config = _config(tmp_path)

    def myomap(*args: str, stdin: str | None = None):  # noqa: ANN202
        return runner.invoke(app, ["user", *args, "--config", str(config)], input=stdin)

    added = myomap("add", "alice", "--password-stdin", stdin="first secret\n")
    assert added.exit_code == 0, added.output
    assert verify_password("first secret", _hashes(config)["alice"])
    assert "first secret" not in _hashes(config)["alice"]
    prompted = myomap("add", "bob", stdin="bob pw\nbob pw\n")  # asked twice, not echoed
    assert prompted.exit_code == 0, prompted.output
    assert "bob pw" not in prompted.output and verify_password("bob pw", _hashes(config)["bob"])

    listed = myomap("list")
    assert listed.exit_code == 0 and [line.split()[0] for line in listed.output.splitlines()] == ["alice", "bob"]

    exists = myomap("add", "alice", "--password-stdin", stdin="other\n")
    assert exists.exit_code == 1 and "already exists" in exists.output and "Traceback" not in exists.output
    empty = myomap("add", "carol", "--password-stdin", stdin="\n")
    assert empty.exit_code == 2 and "password is empty" in empty.output
    bad_name = myomap("add", "a:b", "--password-stdin", stdin="pw\n")
    assert bad_name.exit_code == 2 and "colon" in bad_name.output
    assert set(_hashes(config)) == {"alice", "bob"}

    changed = myomap("passwd", "alice", "--password-stdin", stdin="second secret\n")
    assert changed.exit_code == 0, changed.output
    assert verify_password("second secret", _hashes(config)["alice"])
    assert not verify_password("first secret", _hashes(config)["alice"])
    unknown = myomap("passwd", "nobody", "--password-stdin", stdin="x\n")
    assert unknown.exit_code == 1 and "no user nobody" in unknown.output

    assert myomap("remove", "bob").exit_code == 0
    assert set(_hashes(config)) == {"alice"}
    gone = myomap("remove", "bob")
    assert gone.exit_code == 1 and "no user bob" in gone.output


def test_changing_the_admin_password_removes_the_first_password_file(tmp_path: Path) -> None:
    runner = CliRunner()
    config = _config(tmp_path)
    assert runner.invoke(app, ["user", "add", "admin", "--password-stdin", "-c", str(config)],
                         input="generated\n").exit_code == 0
    first = tmp_path / "data" / INITIAL_PASSWORD_FILE
    first.write_text("generated\n")
    result = runner.invoke(app, ["user", "passwd", "admin", "--password-stdin", "-c", str(config)], input="mine\n")
    assert result.exit_code == 0 and not first.exists() and str(first) in result.output


def test_user_add_with_a_role_and_the_reader_they_are(tmp_path: Path) -> None:
    runner = CliRunner()
    config = _config(tmp_path)

    def myomap(*args: str, stdin: str | None = None):  # noqa: ANN202
        return runner.invoke(app, [*args, "--config", str(config)], input=stdin)

    assert myomap("reader", "add", "Jane Roe", "--team", "north").exit_code == 0
    added = myomap("user", "add", "jane", "--role", "trainee", "--reader", "jane roe", "--password-stdin",
                   stdin="pw\n")
    assert added.exit_code == 0, added.output
    assert "added user jane (trainee, reader jane roe)" in added.output
    # A trainee without a reader, an unknown reader, an unknown role: refused before any password is asked.
    for args, words in ((("--role", "trainee"), "needs --reader"), (("--reader", "nobody"), "no reader named"),
                        (("--role", "boss"), "unknown role")):
        refused = myomap("user", "add", "other", *args, "--password-stdin", stdin="pw\n")
        assert refused.exit_code == 2 and words in refused.output, refused.output
    assert set(_hashes(config)) == {"jane"}
    listed = myomap("user", "list")
    assert listed.output.split()[:3] == ["jane", "trainee", "Jane"]
    engine = make_engine(load_settings(config).database_url)
    try:
        with make_session_factory(engine)() as session:
            user = session.scalars(select(WebUser).where(WebUser.username == "jane")).one()
            assert user.role == "trainee" and user.reader_id is not None
    finally:
        engine.dispose()
