"""The ``myomap analyze`` command: offline analysis of DICOM files or folders, printed as a table, saved as JSON.

Progress (reading, map preparation per analysis unit, analysis per slice) goes to stderr: a bar on a terminal,
else one line per unit and slice. The results go to stdout, at full width when stdout is not a terminal, so that a
pipe or a file gets whole lines whatever the terminal's width.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dicomnode.analysis.study import AnalysisReport, ProgressCallback, SliceResult, analyze_paths, files_under
from inference.model_set import load_models
from inference.slice_analysis import VALUE_REGION
from reports.result_summary import QualityFigures, RegionFigures

#: Exit status when the paths hold no DICOM file (as a usage error: the command was given nothing to analyse).
EXIT_NO_DICOM = 2
#: Exit status when DICOM files were read but no map slice could be analysed.
EXIT_NOTHING_ANALYSED = 1
#: Console width when stdout is not a terminal: wide enough that no table or line is cut or wrapped.
PIPE_WIDTH = 10_000

_STAGES = {"reading": "reading files", "maps": "preparing maps", "slices": "analysing slices"}
_STAGE_LINES = {"maps": "maps of analysis unit {done}/{total} ready", "slices": "slice {done}/{total} analysed"}


def output_console() -> Console:
    """The results' console: stdout, at full width when stdout is not a terminal (a pipe or a file)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPE_WIDTH, soft_wrap=True)


@contextmanager
def progress_display(console: Console, n_files: int) -> Iterator[ProgressCallback]:
    """A :data:`ProgressCallback` that shows the whole analysis on ``console`` (stderr): a bar that follows each
    stage on a terminal, else a line when the files are read and one per analysis unit and slice."""
    if console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task(_STAGES["reading"], total=n_files)

            def show(stage: str, done: int, total: int) -> None:
                progress.update(task, description=_STAGES.get(stage, stage), completed=done, total=total)

            yield show
        return

    files_read: list[int] = []  # said once the analysis goes on: a folder without DICOM gets only its sentence

    def lines(stage: str, done: int, total: int) -> None:
        if stage == "reading":
            files_read[:] = [total]
            return
        if files_read:
            console.print(f"read {files_read.pop()} files", highlight=False)
        if done > 0:
            console.print(_STAGE_LINES.get(stage, stage + " {done}/{total}").format(done=done, total=total),
                          highlight=False)

    yield lines


class _HeldWarnings(logging.Handler):
    """Holds the analysis's log warnings while the progress display runs; they are printed after it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def no_dicom_sentence(paths: Sequence[Path], files: int) -> str:
    """The one sentence said when ``paths`` hold no DICOM file."""
    where = ", ".join(str(path) for path in paths)
    found = "no files" if files == 0 else f"{files} file{'s' if files != 1 else ''}, none of them DICOM"
    return f"No DICOM files to analyse in {where} ({found})."


def slice_label(index: int, result: SliceResult) -> str:
    """How the output names a slice: its number in the tables, series description and series number."""
    series = f", series {result.series_number}" if result.series_number is not None else ""
    return f"slice {index} ({result.series_description or 'no series description'}{series})"


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
        console = output_console()
        errors = Console(stderr=True, soft_wrap=True)
        if report_t1 not in ("scanner", "corrected"):
            raise typer.BadParameter(f"must be 'scanner' or 'corrected', got {report_t1!r}", param_hint="--report-t1")
        n_files = len(files_under(paths))
        if n_files == 0:
            errors.print(no_dicom_sentence(paths, 0), highlight=False, markup=False)
            raise typer.Exit(code=EXIT_NO_DICOM)
        held = _HeldWarnings()
        root = logging.getLogger()
        root.addHandler(held)
        try:
            with progress_display(errors, n_files) as on_progress:
                report = analyze_paths(paths, gold_standard=gold_standard, on_progress=on_progress,
                                       models=load_models if with_models else None, report_t1=report_t1)
        finally:
            root.removeHandler(held)
        if report.files_read == 0:
            errors.print(no_dicom_sentence(paths, n_files), highlight=False, markup=False)
            raise typer.Exit(code=EXIT_NO_DICOM)
        for message in held.messages:
            errors.print(f"[yellow]warning[/] {message}", highlight=False)
        print_report(console, report, with_models=with_models)
        if json_path is not None:
            json_path.write_text(json.dumps(report.to_json_dict(), indent=2))
            console.print(f"figures written to {json_path}", highlight=False)
        if not report.slices:
            errors.print("[red]no map slice could be analysed[/]")
            raise typer.Exit(code=EXIT_NOTHING_ANALYSED)


def print_report(console: Console, report: AnalysisReport, *, with_models: bool) -> None:
    """The slices, the tables, and the notes and problems, each slice named by its series."""
    for line in slice_lines(report):
        console.print(line, highlight=False, markup=False)
    console.print(report_table(report))
    if with_models:
        console.print(model_table(report))
    labels = {result.sop_instance_uid: slice_label(index, result)
              for index, result in enumerate(report.slices, start=1)}
    # Brackets in a series description or a note are text, not rich markup.
    for slice_result in report.slices:
        label = labels[slice_result.sop_instance_uid]
        for note in slice_result.notes:
            console.print(f"[yellow]note[/] {escape(label)}: {escape(note)}", highlight=False)
        for reader in slice_result.readers:
            for note in reader.notes:
                console.print(f"[yellow]note[/] {escape(reader.reader)} on {escape(label)}: {escape(note)}",
                              highlight=False)
    if report.non_dicom_skipped:
        console.print(f"[yellow]{report.non_dicom_skipped} non-DICOM files skipped[/]")
    for problem in report.problems:
        where = labels.get(problem.where, problem.where)
        console.print(f"[red]problem[/] {escape(where)}: {escape(problem.message)}", highlight=False)


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
        series = f" (series {s.series_number})" if s.series_number is not None else ""
        lines.append(f"slice {index}: {s.map_kind.value} map ({s.map_source}), {s.series_description!r}{series}, "
                     f"level {s.level.value} ({s.level_from}), reference {reference}")
    return lines


def _number(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0 turns -0.0 into 0.0
