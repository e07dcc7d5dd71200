"""`myomap report trainee|team`: the training programme's PDF reports from the node's database.

Thin: the figures come from :mod:`reports.programme.queries` and :mod:`reports.programme.accreditation` (which
records the date a trainee first meets a training set's criteria), the PDF from :mod:`reports.pdf`. An unknown
reader, team or training set ends the command with a message and exit status 2; a database that cannot be used,
or a file that cannot be written, with status 1.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from dicomnode.app.programme_cli import ConfigOption, programme_session

OutOption = Annotated[Path, typer.Option("--out", help="the PDF file to write", dir_okay=False)]

report_app = typer.Typer(help="The training programme's PDF reports: a trainee's progress, a team's summary.",
                         no_args_is_help=True)


def _write(out: Path, pdf: bytes) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(pdf)
    except OSError as error:
        typer.echo(f"error: cannot write {out}: {error.strerror or error}", err=True)
        raise typer.Exit(code=1) from error
    typer.echo(f"wrote {out} ({len(pdf) // 1024} KiB)")


@report_app.command("trainee")
def report_trainee(
    name: Annotated[str, typer.Argument(help="the trainee's reader name (as `myomap reader list` shows it)")],
    out: OutOption,
    training_set: Annotated[
        str | None, typer.Option("--training-set", help="only this training set's cases and criteria")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write a trainee's progress report: attempts, plots, worst overlays, accreditation criteria and verdict."""
    from reports.map_mr import SOFTWARE_VERSION
    from reports.pdf import trainee_pdf
    from reports.programme.accreditation import evaluate
    from reports.programme.queries import trainee_progress
    from reports.programme.training_sets import get_training_set

    with programme_session(config) as (settings, session):
        progress = trainee_progress(session, name)
        if training_set is not None:
            studies = {case.study_instance_uid for case in get_training_set(session, training_set).cases}
            progress = replace(progress, accreditation=[evaluate(session, name, training_set)],
                               attempts=[a for a in progress.attempts if a.study_instance_uid in studies])
        pdf = trainee_pdf(progress, node_version=SOFTWARE_VERSION, generated_at=datetime.now().astimezone(),
                          storage_root=settings.storage_root)
    _write(out, pdf)


@report_app.command("team")
def report_team(
    name: Annotated[str, typer.Argument(help="the team's name")],
    out: OutOption,
    config: ConfigOption = None,
) -> None:
    """Write a team's report: every trainee side by side, the spread per case, who is ready for accreditation."""
    from reports.map_mr import SOFTWARE_VERSION
    from reports.pdf import team_pdf
    from reports.programme.queries import team_summary

    with programme_session(config) as (_settings, session):
        summary = team_summary(session, name)
        pdf = team_pdf(summary, node_version=SOFTWARE_VERSION, generated_at=datetime.now().astimezone())
    _write(out, pdf)


def register(app: typer.Typer) -> None:
    """Add the ``report`` commands to ``app``."""
    app.add_typer(report_app, name="report")
