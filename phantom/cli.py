"""The phantom's commands on the `myomap` command line: ``phantom`` (generate studies), ``phantom-training-set``,
``phantom-stats`` and ``phantom-realism``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from phantom.model import AnatomyVersion, FieldStrength, Vendor


def _parse_readers(text: str) -> tuple[bool, bool]:
    """Split ``experts,trainees`` into (with_experts, with_trainees)."""
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = names - {"experts", "trainees"}
    if unknown:
        raise typer.BadParameter(f"--readers takes 'experts' and/or 'trainees', got {sorted(unknown)}")
    return "experts" in names, "trainees" in names


def register(app: typer.Typer) -> None:
    """Add the ``phantom``, ``phantom-training-set``, ``phantom-stats`` and ``phantom-realism`` commands to ``app``."""

    @app.command("phantom")
    def phantom_command(
        out: Annotated[Path, typer.Option("--out", help="folder to write one sub-folder per study into")],
        studies: Annotated[int, typer.Option("--studies", min=1, help="number of studies")] = 1,
        seed: Annotated[int, typer.Option("--seed", min=0, help="seed; the same seed gives the same bytes")] = 0,
        field: Annotated[
            FieldStrength | None, typer.Option("--field", help="field strength in tesla; varies if not given")
        ] = None,
        vendor: Annotated[Vendor | None, typer.Option("--vendor", help="vendor flavour; varies if not given")] = None,
        sequence: Annotated[
            str, typer.Option("--sequence", help="molli, shmolli, t2prep or all (MOLLI, ShMOLLI and T2-prep)")
        ] = "all",
        motion_rate: Annotated[
            float, typer.Option("--motion-rate", min=0.0, max=1.0, help="probability of a breathing-motion series")
        ] = 0.3,
        readers: Annotated[
            str, typer.Option("--readers", help="comma-separated: experts, trainees (empty: truth only)")
        ] = "experts,trainees",
        snr: Annotated[
            float | None, typer.Option("--snr", min=1.0, help="myocardial SNR of the raw images; varies if not given")
        ] = None,
        slices: Annotated[
            int, typer.Option("--slices", min=1, max=3, help="short-axis slices: basal, mid, apical")
        ] = 3,
        workers: Annotated[
            int | None, typer.Option("--workers", min=1, help="worker processes (default: CPU count)")
        ] = None,
        vendor_quirks: Annotated[
            str,
            typer.Option(
                "--vendor-quirks",
                help="comma-separated scanner conventions, each for the vendors that have it: ge-mixed (GE), "
                "per-ti (GE, Philips), display-copy (Siemens), no-field-strength (all but enhanced)",
            ),
        ] = "",
        vials: Annotated[
            bool, typer.Option("--vials", help="a T1 phantom of 9 vials in a water bath (MOLLI, ShMOLLI), no heart")
        ] = False,
        anatomy: Annotated[
            AnatomyVersion,
            typer.Option("--anatomy", help="v1: textbook anatomy (default); v2: real LV shapes, organs, k-space "
                         "interpolation, noise in air and lung (docs/phantom.md, Phantom v2)"),
        ] = AnatomyVersion.V1,
    ) -> None:
        """Generate synthetic CMR mapping studies as DICOM files with JSON sidecars."""
        from phantom.study import SequenceChoice, StudyRequest, generate_studies
        from phantom.vendors import parse_quirks

        with_experts, with_trainees = _parse_readers(readers)
        try:
            quirks = parse_quirks(vendor_quirks)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--vendor-quirks") from error
        try:
            sequence_choice = SequenceChoice(sequence.lower())
        except ValueError as error:
            choices = ", ".join(choice.value for choice in SequenceChoice)
            raise typer.BadParameter(f"--sequence takes one of {choices}, got {sequence!r}") from error
        try:
            request = StudyRequest(
                seed=seed,
                field=field,
                vendor=vendor,
                sequence=sequence_choice,
                motion_rate=motion_rate,
                with_experts=with_experts,
                with_trainees=with_trainees,
                snr=snr,
                n_slices=slices,
                vendor_quirks=quirks,
                vials=vials,
                anatomy=anatomy,
            )
        except ValueError as error:  # a quirk the chosen vendor lacks, or --vials with t2prep or v2
            raise typer.BadParameter(str(error)) from error
        n_workers = workers if workers is not None else (os.cpu_count() or 1)
        generate_studies(request, out, n_studies=studies, workers=n_workers, progress=True)

    @app.command("phantom-training-set")
    def phantom_training_set_command(
        out: Annotated[Path, typer.Option("--out", help="folder to write the cases and training_set.json into")],
        cases: Annotated[int, typer.Option("--cases", min=1, max=20, help="number of cases (studies)")] = 3,
        attempts: Annotated[int, typer.Option("--attempts", min=1, max=10, help="attempts per trainee and case")] = 3,
        seed: Annotated[int, typer.Option("--seed", min=0, help="seed; the same seed gives the same bytes")] = 0,
    ) -> None:
        """A training set: cases contoured by three experts and by trainees (improving, persistent error) on
        repeated attempts; training_set.json lists them in the order to send."""
        from phantom.training_set import generate_training_set

        outcome = generate_training_set(out, n_cases=cases, n_attempts=attempts, seed=seed)
        typer.echo(f"{len(outcome.cases)} cases, {len(outcome.submissions)} contour series in {out}")

    @app.command("phantom-stats")
    def phantom_stats_command(
        directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="folder written by `phantom`")],
        as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    ) -> None:
        """Reader statistics of a phantom folder: expert pairwise Dice and trainee-vs-truth Dice per error mode."""
        from phantom.stats import PhantomStatsError, collect_reader_stats, render_table

        try:
            stats = collect_reader_stats(directory)
        except PhantomStatsError as error:
            typer.echo(f"phantom-stats: {error}", err=True)
            raise typer.Exit(code=1) from error
        if as_json:
            typer.echo(json.dumps(stats.to_json(), indent=2))
        else:
            render_table(stats)

    @app.command("phantom-realism")
    def phantom_realism_command(
        directories: Annotated[
            list[Path],
            typer.Argument(exists=True, file_okay=False, help="phantom folders written by `phantom` (a column each)"),
        ],
        sunnybrook: Annotated[
            Path | None,
            typer.Option("--sunnybrook", exists=True, file_okay=False,
                         help="Sunnybrook folder (link.csv, dicoms/, contourfiles/); default: shared/data/sunnybrook"),
        ] = None,
        image: Annotated[
            str, typer.Option("--image", help="map: the first T1 map; magnitude: its longest-TI raw image")
        ] = "map",
        as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    ) -> None:
        """Compare phantom images with real Sunnybrook cine images: tissue intensities, edge sharpness, texture."""
        from phantom.realism import RealismError, compare_with_sunnybrook, default_sunnybrook_folder, render_comparison

        folder = sunnybrook or default_sunnybrook_folder()
        if folder is None:
            typer.echo("phantom-realism: no Sunnybrook folder found; pass --sunnybrook", err=True)
            raise typer.Exit(code=1)
        try:
            comparison = compare_with_sunnybrook(directories, folder, image_kind=image.lower())
        except RealismError as error:
            typer.echo(f"phantom-realism: {error}", err=True)
            raise typer.Exit(code=1) from error
        if as_json:
            typer.echo(json.dumps(comparison.to_json(), indent=2))
        else:
            render_comparison(comparison)
