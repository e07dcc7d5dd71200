"""The `myomap` command line: the node's services, its configuration and the phantom."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from config import Settings, load_settings
from dicomnode.analyze_cli import register as register_analyze
from phantom.cli import register as register_phantom

app = typer.Typer(help="myomap: a DICOM node for cardiac MRI T1/T2 mapping.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML file over the embedded defaults", exists=True)
]


@app.command("config")
def show_config(config: ConfigOption = None) -> None:
    """Print the effective configuration (defaults, then the TOML file, then MYOMAP_* variables) as JSON."""
    settings = load_settings(config)
    typer.echo(json.dumps(settings.model_dump(mode="json"), indent=2))


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Huey logs every task it runs at INFO; the node logs what matters itself.
    logging.getLogger("huey").setLevel(max(logging.WARNING, logging.getLogger().level))


@app.command("serve")
def serve_command(config: ConfigOption = None) -> None:
    """Run the node: storage SCP, series assembly, job workers and the web page, until SIGTERM or Ctrl-C."""
    from dicomnode.server import serve

    settings = load_settings(config)
    _configure_logging(settings)
    serve(settings)


@app.command("worker")
def worker_command(config: ConfigOption = None) -> None:
    """Run only job workers against the configured queue (more workers for a node with a Redis queue)."""
    from dicomnode.server import run_worker

    settings = load_settings(config)
    _configure_logging(settings)
    run_worker(settings)


@app.command("status")
def status_command(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Counts from the node's database: series by state, jobs by state, transfers pending or given up."""
    from dicomnode.status import StatusUnavailableError, node_status

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


register_phantom(app)
register_analyze(app)
