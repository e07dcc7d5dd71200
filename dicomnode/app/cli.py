"""The `myomap` command line: the node's services, its configuration and the phantom."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from config import Settings, load_settings
from dicomnode.app.analyze_cli import register as register_analyze
from dicomnode.app.logging_setup import configure_logging
from dicomnode.app.programme_cli import register as register_programme
from dicomnode.app.report_cli import register as register_report
from phantom.cli import register as register_phantom

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = typer.Typer(help="myomap: a DICOM node for cardiac MRI T1/T2 mapping.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML file over the embedded defaults", exists=True)
]


@app.command("config")
def show_config(config: ConfigOption = None) -> None:
    """Print the effective configuration (defaults, then the TOML file, then MYOMAP_* variables) as JSON."""
    settings = load_settings(config)
    typer.echo(json.dumps(settings.model_dump(mode="json"), indent=2))


@app.command("serve")
def serve_command(config: ConfigOption = None) -> None:
    """Run the node: storage SCP, series assembly, job workers and the web page, until SIGTERM or Ctrl-C."""
    from dicomnode.app.server import serve

    settings = load_settings(config)
    configure_logging(settings)
    serve(settings)


@app.command("worker")
def worker_command(config: ConfigOption = None) -> None:
    """Run only job workers against the configured queue (more workers for a node with a Redis queue)."""
    from dicomnode.app.server import run_worker

    settings = load_settings(config)
    configure_logging(settings)
    run_worker(settings)


@app.command("status")
def status_command(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Counts from the node's database: series by state, jobs by state, transfers pending or given up."""
    from dicomnode.app.status import StatusUnavailableError, node_status

    settings = load_settings(config)
    try:
        status = node_status(settings)
    except StatusUnavailableError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from error
    if as_json:
        typer.echo(json.dumps(status.to_json(), indent=2))
        return
    for title, counts in status.to_json().items():
        typer.echo(f"{title}:")
        for state, count in counts.items():
            typer.echo(f"  {state:<10} {count}")


user_app = typer.Typer(
    help="Users of the web page (in the node's database; passwords stored as salted scrypt hashes).",
    no_args_is_help=True,
)
app.add_typer(user_app, name="user")

UsernameArgument = Annotated[str, typer.Argument(help="the user name (what the login form asks for)")]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from the first line of standard input")
]


@contextmanager
def _users_session(config: Path | None) -> Iterator[tuple[Settings, Session]]:
    """The node's settings and a session on its database (migrated, as the node does at every start); errors
    of the user commands and of the database end the command with a message and exit status 1 or 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory
    from reports.web.users import InvalidUserInputError, UserError

    settings = load_settings(config)
    engine = None
    try:
        settings.storage_root.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        with make_session_factory(engine)() as session:
            yield settings, session
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2 if isinstance(error, InvalidUserInputError) else 1) from error
    except (SQLAlchemyError, OSError) as error:
        typer.echo(f"error: cannot use the node's database: {str(error).splitlines()[0]}", err=True)
        raise typer.Exit(code=1) from error
    finally:
        if engine is not None:
            engine.dispose()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _forget_initial_password(settings: Settings, username: str) -> None:
    from reports.web.users import INITIAL_ADMIN, initial_password_path

    path = initial_password_path(settings)
    if username == INITIAL_ADMIN and path.exists():
        path.unlink()
        typer.echo(f"removed {path} (it held the first password of {INITIAL_ADMIN})")


WebRoleOption = Annotated[
    str, typer.Option("--role", help="admin (sees everything), supervisor (their teams) or trainee (themselves)")
]
WebReaderOption = Annotated[
    str | None, typer.Option("--reader", help="the reader this user is (a trainee needs one; see: myomap reader list)")
]


@user_app.command("add")
def user_add(
    name: UsernameArgument, config: ConfigOption = None, password_stdin: PasswordStdinOption = False,
    role: WebRoleOption = "admin", reader: WebReaderOption = None,
) -> None:
    """Add a user who may log in to the web page (password asked twice, not echoed)."""
    from db.models import WebRole
    from reports.programme.people import PeopleError, get_reader, link_user
    from reports.web.users import add_user, check_username

    with _users_session(config) as (_settings, session):
        check_username(name)  # everything is checked before asking for a password
        try:
            if role not in {choice.value for choice in WebRole}:
                raise PeopleError(f"unknown role {role!r}; expected one of {', '.join(r.value for r in WebRole)}")
            if role == WebRole.TRAINEE.value and not reader:
                raise PeopleError("a trainee user needs --reader: the reader whose results they see")
            if reader:
                get_reader(session, reader)
            add_user(session, name, _read_password(password_stdin))
            session.flush()
            link_user(session, name, reader, role=role)
        except PeopleError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=2) from error
        session.commit()
    typer.echo(f"added user {name} ({role}{f', reader {reader}' if reader else ''})")


@user_app.command("passwd")
def user_passwd(
    name: UsernameArgument, config: ConfigOption = None, password_stdin: PasswordStdinOption = False
) -> None:
    """Give a user a new password; their open sessions end."""
    from reports.web.users import UnknownUserError, find_user, set_password

    with _users_session(config) as (settings, session):
        if find_user(session, name) is None:  # before asking for a password
            raise UnknownUserError(f"no user {name}")
        set_password(session, name, _read_password(password_stdin))
        session.commit()
        _forget_initial_password(settings, name)
    typer.echo(f"changed the password of {name}")


@user_app.command("remove")
def user_remove(name: UsernameArgument, config: ConfigOption = None) -> None:
    """Remove a user; their open sessions end."""
    from reports.web.users import INITIAL_ADMIN, list_users, remove_user

    with _users_session(config) as (settings, session):
        remove_user(session, name)
        session.commit()
        _forget_initial_password(settings, name)
        left = len(list_users(session))
    typer.echo(f"removed user {name}")
    if not left and settings.web.login:
        typer.echo(f"no user left: the node creates {INITIAL_ADMIN} with a new password at its next start", err=True)


@user_app.command("list")
def user_list(config: ConfigOption = None) -> None:
    """List the users (name, role, the reader they are, when each was added)."""
    from db.models import Reader
    from reports.web.users import list_users

    with _users_session(config) as (_settings, session):
        users: list[tuple[str, datetime, str, str]] = []
        for user in list_users(session):
            reader = session.get(Reader, user.reader_id) if user.reader_id is not None else None
            users.append((user.username, user.created_at, user.role, reader.name if reader is not None else ""))
    for username, created_at, role, reader_name in users:
        typer.echo(f"{username:<24} {role:<10} {reader_name:<24} added {created_at:%Y-%m-%d %H:%M}")


register_phantom(app)
register_analyze(app)
register_programme(app)
register_report(app)
