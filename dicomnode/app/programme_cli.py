"""`myomap reader ...` and `myomap training-set ...`: the training programme's people and training sets.

The commands are thin: the logic (checks included) is in :mod:`reports.programme.people` and
:mod:`reports.programme.training_sets`, which the web page uses too. Bad input ends a command with a message and
exit status 2; a database that cannot be used, with status 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from config import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML file over the embedded defaults", exists=True)
]
ReaderArgument = Annotated[str, typer.Argument(help="the reader's name (as `myomap reader list` shows it)")]
SetArgument = Annotated[str, typer.Argument(help="the training set's name")]
ReferenceOption = Annotated[
    str | None,
    typer.Option("--reference", help="reference of the cases: gold_standard, expert_staple, consensus_model or "
                                     "team_average (default: automatic)"),
]
GoldStandardOption = Annotated[
    str | None, typer.Option("--gold-standard", help="reader whose uploaded contours are the gold standard")
]


@contextmanager
def programme_session(config: Path | None) -> Iterator[tuple[Settings, Session]]:
    """The node's settings and a session on its database (migrated, as the node does at every start), committed
    when the command succeeds; the programme's errors (an unknown reader, team or training set, a bad name) exit
    with status 2, the database's with status 1. Used by `myomap reader`, `training-set` and `report`."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory

    settings = load_settings(config)
    engine = None
    try:
        settings.storage_root.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        with make_session_factory(engine)() as session:
            yield settings, session
            session.commit()
    except ValueError as error:  # PeopleError, TrainingSetError, ReaderNameError
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error
    except (SQLAlchemyError, OSError) as error:
        typer.echo(f"error: cannot use the node's database: {str(error).splitlines()[0]}", err=True)
        raise typer.Exit(code=1) from error
    finally:
        if engine is not None:
            engine.dispose()


reader_app = typer.Typer(help="Readers of the training programme: roles, teams, DICOM name aliases, web users.",
                         no_args_is_help=True)
training_set_app = typer.Typer(help="Training sets: cases, their reference, accreditation criteria.",
                               no_args_is_help=True)


@reader_app.command("list")
def reader_list(
    config: ConfigOption = None,
    team: Annotated[str | None, typer.Option("--team", help="only this team's readers")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the readers with their role, team, aliases and linked web users."""
    from reports.programme.people import list_readers

    with programme_session(config) as (_, session):
        readers = list_readers(session, team=team)
    if as_json:
        typer.echo(json.dumps([asdict(reader) for reader in readers], indent=2))
        return
    for reader in readers:
        aliases = f"  aliases: {', '.join(reader.aliases)}" if reader.aliases else ""
        users = f"  web users: {', '.join(reader.web_users)}" if reader.web_users else ""
        typer.echo(f"{reader.name:<24} {reader.role:<10} {reader.team or '-':<16}{aliases}{users}")


@reader_app.command("add")
def reader_add(
    name: ReaderArgument,
    config: ConfigOption = None,
    role: Annotated[str, typer.Option("--role", help="trainee, expert or supervisor")] = "trainee",
    team: Annotated[str, typer.Option("--team", help="team (a supervisor's teams comma-separated)")] = "",
) -> None:
    """Add a reader (readers the node scores are added by themselves, as trainees)."""
    from reports.programme.people import add_reader

    with programme_session(config) as (_, session):
        reader = add_reader(session, name, role=role, team=team)
        text = f"added reader {reader.name} ({reader.role}{', team ' + reader.team if reader.team else ''})"
    typer.echo(text)


@reader_app.command("alias")
def reader_alias(
    name: ReaderArgument,
    patterns: Annotated[list[str], typer.Argument(help="DICOM names (ContentCreatorName, OperatorsName, ...) or "
                                                       "patterns with * and ?, case ignored")],
    config: ConfigOption = None,
    remove: Annotated[bool, typer.Option("--remove", help="remove these aliases instead")] = False,
) -> None:
    """Map names as contours arrive with them to a reader (or remove such aliases)."""
    from reports.programme.people import add_alias, get_reader, remove_alias

    with programme_session(config) as (_, session):
        reader = get_reader(session, name).name
        for pattern in patterns:
            if remove:
                remove_alias(session, pattern, reader)
            else:
                add_alias(session, pattern, reader)
    verb = "removed aliases" if remove else "aliases"
    typer.echo(f"{verb} {', '.join(patterns)} {'of' if remove else '->'} {reader}")


@reader_app.command("set-team")
def reader_set_team(
    name: ReaderArgument,
    team: Annotated[str, typer.Argument(help="the team; a supervisor's teams comma-separated; '' for none")],
    config: ConfigOption = None,
) -> None:
    """Put a reader in a team."""
    from reports.programme.people import set_team

    with programme_session(config) as (_, session):
        reader = set_team(session, name, team)
        text = f"{reader.name}: team {reader.team or '(none)'}"
    typer.echo(text)


@reader_app.command("set-role")
def reader_set_role(
    name: ReaderArgument,
    role: Annotated[str, typer.Argument(help="trainee, expert or supervisor")],
    config: ConfigOption = None,
) -> None:
    """Set a reader's role (experts' contours make the reference)."""
    from reports.programme.people import set_role

    with programme_session(config) as (_, session):
        reader = set_role(session, name, role)
        text = f"{reader.name}: role {reader.role}"
    typer.echo(text)


@reader_app.command("link-user")
def reader_link_user(
    username: Annotated[str, typer.Argument(help="the web user (see: myomap user list)")],
    name: Annotated[str | None, typer.Argument(help="the reader the user is; left out with --unlink")] = None,
    config: ConfigOption = None,
    role: Annotated[str | None, typer.Option("--role", help="the user's web role: admin, supervisor or "
                                                            "trainee (default: unchanged)")] = None,
    unlink: Annotated[bool, typer.Option("--unlink", help="link the user to no reader")] = False,
) -> None:
    """Link a web user to the reader they are: a trainee sees their own results, a supervisor their teams'."""
    from reports.programme.people import link_user

    if (name is None) != unlink:
        typer.echo("error: name a reader, or give --unlink", err=True)
        raise typer.Exit(code=2)
    with programme_session(config) as (_, session):
        user = link_user(session, username, name, role=role)
        text = f"{user.username} ({user.role}) -> {name or 'no reader'}"
    typer.echo(text)


@training_set_app.command("create")
def training_set_create(
    name: SetArgument,
    study: Annotated[list[str], typer.Option("--study", help="Study Instance UID of a case (repeat for more)")],
    config: ConfigOption = None,
    reference: ReferenceOption = None,
    gold_standard: GoldStandardOption = None,
    no_auto_consensus: Annotated[
        bool, typer.Option("--no-auto-consensus", help="leave cases without experts unscored rather than scored "
                                                       "against the consensus model")
    ] = False,
    description: Annotated[str, typer.Option("--description", help="what the set trains")] = "",
) -> None:
    """Mark studies as a training set (cases "case 1", "case 2", ... in the order given)."""
    from reports.programme.training_sets import create_training_set

    with programme_session(config) as (_, session):
        created = create_training_set(session, name, study, description=description, reference_policy=reference,
                                      gold_standard_reader=gold_standard, auto_consensus=not no_auto_consensus)
        text = f"created training set {created.name} with {len(created.cases)} cases"
    typer.echo(text)


@training_set_app.command("add-case")
def training_set_add_case(
    name: SetArgument,
    study: Annotated[str, typer.Argument(help="the case's Study Instance UID")],
    config: ConfigOption = None,
    label: Annotated[str | None, typer.Option("--label", help="the case's label (default: case N)")] = None,
    reference: ReferenceOption = None,
    gold_standard: GoldStandardOption = None,
) -> None:
    """Add a study to a training set."""
    from reports.programme.training_sets import add_case

    with programme_session(config) as (_, session):
        case = add_case(session, name, study, label=label, reference_policy=reference,
                        gold_standard_reader=gold_standard)
        text = f"added {case.label} ({case.study_instance_uid}) to {name}"
    typer.echo(text)


@training_set_app.command("set-reference")
def training_set_set_reference(
    name: SetArgument,
    label: Annotated[str, typer.Argument(help="the case's label (see: myomap training-set show)")],
    policy: Annotated[str, typer.Argument(help="gold_standard, expert_staple, consensus_model, team_average or "
                                               "automatic")],
    config: ConfigOption = None,
    gold_standard: GoldStandardOption = None,
) -> None:
    """Name the reference one case's readers are scored against."""
    from reports.programme.training_sets import set_case_reference

    with programme_session(config) as (_, session):
        case = set_case_reference(session, name, label, reference_policy=None if policy == "automatic" else policy,
                                  gold_standard_reader=gold_standard)
        text = f"{name} {case.label}: reference {case.reference_policy or 'automatic'}"
    typer.echo(text)


@training_set_app.command("auto-consensus")
def training_set_auto_consensus(
    name: SetArgument,
    state: Annotated[str, typer.Argument(help="on: cases without experts are scored against the consensus model; "
                                              "off: they stay unscored")],
    config: ConfigOption = None,
) -> None:
    """Switch the automatic consensus of a training set on or off."""
    from reports.programme.training_sets import set_auto_consensus

    if state not in ("on", "off"):
        typer.echo(f"error: say on or off, not {state!r}", err=True)
        raise typer.Exit(code=2)
    with programme_session(config) as (_, session):
        set_auto_consensus(session, name, state == "on")
    typer.echo(f"{name}: automatic consensus {state}")


@training_set_app.command("criteria")
def training_set_criteria(
    name: SetArgument,
    config: ConfigOption = None,
    min_dice: Annotated[float | None, typer.Option("--min-dice", help="minimum mean Dice")] = None,
    max_dt1_ms: Annotated[float | None, typer.Option("--max-dt1-ms", help="maximum mean |dT1| (ms)")] = None,
    last: Annotated[int | None, typer.Option("--last", help="over the last N cases")] = None,
    critical_errors: Annotated[
        bool | None, typer.Option("--no-critical-errors/--allow-critical-errors",
                                  help="whether a critical error mode in the last N cases fails")
    ] = None,
    critical_mode: Annotated[
        list[str] | None, typer.Option("--critical-mode", help="an error mode counted as critical (repeat; "
                                                               "default: every error mode)")
    ] = None,
    min_cases: Annotated[int | None, typer.Option("--min-cases", help="minimum number of cases scored")] = None,
) -> None:
    """Set the accreditation criteria of a training set (options not given keep their value)."""
    from reports.programme.training_sets import Criteria, criteria_in_words, get_training_set, set_criteria

    with programme_session(config) as (_, session):
        current = Criteria.from_json(get_training_set(session, name).criteria)
        changes: dict[str, object] = {}
        for key, value in (("min_mean_dice", min_dice), ("max_abs_t1_difference_ms", max_dt1_ms),
                           ("last_cases", last), ("no_critical_error", critical_errors), ("min_cases", min_cases)):
            if value is not None:
                changes[key] = value
        if critical_mode:
            changes["critical_error_modes"] = tuple(critical_mode)
        criteria = replace(current, **changes)  # type: ignore[arg-type]
        set_criteria(session, name, criteria)
    typer.echo(f"criteria of {name}: " + ("; ".join(criteria_in_words(criteria)) or "none"))


@training_set_app.command("list")
def training_set_list(config: ConfigOption = None) -> None:
    """List the training sets."""
    from reports.programme.training_sets import list_training_sets

    with programme_session(config) as (_, session):
        sets = list_training_sets(session)
    for item in sets:
        typer.echo(f"{item.name:<24} {len(item.cases):>3} cases  "
                   f"auto consensus {'on' if item.auto_consensus else 'off'}  {item.description}".rstrip())


@training_set_app.command("show")
def training_set_show(
    name: SetArgument,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a training set: its cases with their reference, and its criteria."""
    from reports.programme.training_sets import criteria_in_words, show_training_set

    with programme_session(config) as (_, session):
        item = show_training_set(session, name)
    if as_json:
        typer.echo(json.dumps(asdict(item), indent=2))
        return
    typer.echo(f"{item.name}: {item.description or 'no description'}; auto consensus "
               f"{'on' if item.auto_consensus else 'off'}")
    for case in item.cases:
        reference = case.reference_policy or "automatic"
        if case.gold_standard_reader:
            reference += f" (gold standard {case.gold_standard_reader})"
        typer.echo(f"  {case.label:<16} {case.study_instance_uid}  reference: {reference}")
    typer.echo("criteria: " + ("; ".join(criteria_in_words(item.criteria)) or "none"))


def register(app: typer.Typer) -> None:
    """Add ``reader`` and ``training-set`` to ``app``."""
    app.add_typer(reader_app, name="reader")
    app.add_typer(training_set_app, name="training-set")
