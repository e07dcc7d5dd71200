"""The ``myomap analyze`` command: offline analysis of DICOM files or folders, printed as a table, saved as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dicomnode.analysis.study import AnalysisReport, analyze_paths, files_under
from inference.model_set import load_models
from inference.slice_analysis import VALUE_REGION
from reports.result_summary import QualityFigures, RegionFigures


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` command to ``app``."""

    @app.command("analyze")
    def analyze_command(
        paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (searched recursively)",
                                                    exists=True)],
        json_path: Annotated[Path | None, typer.Option("--json", help="write every figure to this JSON file")] = None,
        gold_standard: Annotated[
            str | None,
            typer.Option("--gold-standard", help="reader whose contours are the reference (default: STAPLE of "
                                                 "the readers named expert*)"),
        ] = None,
        with_models: Annotated[
            bool, typer.Option("--models/--no-models", help="run the segmentation, motion and QC models on every map")
        ] = True,
        report_t1: Annotated[
            str, typer.Option("--report-t1", help="T1 of a reconstructed map: 'scanner' (plain fit, as the vendor's "
                                                  "map) or 'corrected' (Bloch-corrected); as [mapping] report_t1")
        ] = "scanner",
    ) -> None:
        """Analyse T1/T2 maps and readers' contours without the network: values per slice and reader, scores, and
        the models' segmentation, AHA values, wall thickness, motion verdict and predicted segmentation quality."""
        console = Console()
        if report_t1 not in ("scanner", "corrected"):
            raise typer.BadParameter(f"must be 'scanner' or 'corrected', got {report_t1!r}", param_hint="--report-t1")
        n_files = len(files_under(paths))
        with Progress(TextColumn("reading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("files", total=n_files)
            report = analyze_paths(paths, gold_standard=gold_standard,
                                   on_file=lambda _path: progress.advance(task),
                                   models=load_models if with_models else None, report_t1=report_t1)
        for line in slice_lines(report):
            console.print(line, highlight=False)
        console.print(report_table(report))
        if with_models:
            console.print(model_table(report))
        for slice_result in report.slices:
            for note in slice_result.notes:
                console.print(f"[yellow]note[/] {slice_result.sop_instance_uid}: {note}")
            for reader in slice_result.readers:
                for note in reader.notes:
                    console.print(f"[yellow]note[/] {reader.reader} on {slice_result.sop_instance_uid}: {note}")
        if report.non_dicom_skipped:
            console.print(f"[yellow]{report.non_dicom_skipped} non-DICOM files skipped[/]")
        for problem in report.problems:
            console.print(f"[red]problem[/] {problem.where}: {problem.message}")
        if json_path is not None:
            json_path.write_text(json.dumps(report.to_json_dict(), indent=2))
            console.print(f"figures written to {json_path}")
        if not report.slices:
            console.print("[red]no map slice could be analysed[/]")
            raise typer.Exit(code=1)


def report_table(report: AnalysisReport) -> Table:
    """One row per slice and reader: global values of the myocardium and the score against the reference."""
    table = Table(title=f"{report.files_read} DICOM files, {len(report.slices)} map slices")
    table.add_column("slice")
    table.add_column("reader")
    for column in ("mean", "median", "SD", "AHA", "Dice", "HD mm", "MSD mm", "diff"):
        table.add_column(column, justify="right")
    table.add_column("error mode")
    for index, slice_result in enumerate(report.slices, start=1):
        label = f"{index} {slice_result.map_kind.value} {slice_result.level.value}"
        for reader in slice_result.readers:
            values, score = reader.myocardium, reader.score
            default_angles = reader.insertion is not None and reader.insertion.value == "default_angles"
            table.add_row(
                label,
                reader.reader + (" (ref)" if reader.reader in slice_result.reference_readers else ""),
                _number(values.mean_ms if values else None, 0),
                _number(values.median_ms if values else None, 0),
                _number(values.sd_ms if values else None, 0),
                f"{len(reader.segments)}{'*' if default_angles else ''}",
                _number(score.dice_myocardium if score else None, 3),
                _number(score.hausdorff_mm if score else None, 1),
                _number(score.mean_surface_distance_mm if score else None, 2),
                _number(score.map_difference_ms if score else None, 0),
                score.error_mode if score else "-",
            )
    table.caption = ("values in ms over each reader's myocardium; diff: reader minus reference; "
                     "AHA: segments measured, * default RV insertion angles (no RV contour)")
    return table


def model_table(report: AnalysisReport) -> Table:
    """One row per slice: the models' myocardium values, wall thickness, predicted Dice and motion verdict."""
    table = Table(title="models (trained on a synthetic phantom; not validated on patients)")
    table.add_column("slice")
    for column in ("mean", "median", "SD", "wall mm", "pred. Dice"):
        table.add_column(column, justify="right")
    table.add_column("verdict")
    for index, slice_result in enumerate(report.slices, start=1):
        label = f"{index} {slice_result.map_kind.value} {slice_result.level.value}"
        model = slice_result.model
        if model is None:
            table.add_row(label, "-", "-", "-", "-", "-", "not analysed (see problems)")
            continue
        myocardium = model.myocardium or RegionFigures()
        quality = model.quality or QualityFigures()
        table.add_row(
            label,
            _number(myocardium.mean_ms, 0),
            _number(myocardium.median_ms, 0),
            _number(myocardium.sd_ms, 0),
            _number(myocardium.wall_thickness_mm, 1),
            _number(quality.predicted_dice, 3) + (" (doubtful)" if quality.doubtful else ""),
            model.banner,
        )
    table.caption = f"values in ms over the {VALUE_REGION} of the model's myocardium"
    return table


def slice_lines(report: AnalysisReport) -> list[str]:
    """One line per slice: which map, where it came from, and what the readers were scored against."""
    lines = []
    for index, s in enumerate(report.slices, start=1):
        reference = s.reference.value + (f" of {', '.join(s.reference_readers)}" if s.reference_readers else "")
        lines.append(f"slice {index}: {s.map_kind.value} map ({s.map_source}), {s.series_description!r}, "
                     f"level {s.level.value} ({s.level_from}), reference {reference}")
    return lines


def _number(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0 turns -0.0 into 0.0
