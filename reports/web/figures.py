"""A result's figures in words for the series page: labelled rows with units, a table of a reader's slices, the
models named once. The page never shows a summary's raw keys or Python values.

Keys that are bookkeeping (UIDs of the output series, revisions, the files) are left out; a key a newer node writes
and this page does not know yet is shown with its name in words when its value is a plain number, text or list of
them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Summary keys the page never shows as figures: bookkeeping, or shown elsewhere on the page.
HIDDEN_KEYS = frozenset({
    "analysis", "outputs", "mr_map_series_uid", "parametric_map_series_uid", "source_revision", "slice_images",
    "source_series_number", "sequence_family", "level_assumed", "p25_ms", "p75_ms", "valid_fraction_of_fitted",
    "reference_digest", "slices", "kind", "unit_series", "supersedes", "notes", "problems",
})

REPORT_T1_WORDS = {"scanner": "scanner-comparable (plain fit)", "corrected": "Bloch-corrected"}


@dataclass(frozen=True)
class FigureRow:
    label: str
    value: str


@dataclass(frozen=True)
class ReaderSliceRow:
    """One slice a reader contoured, in words and rounded numbers (empty strings where there is no value)."""

    slice: str
    status: str
    reference: str
    dice_myocardium: str
    iou_myocardium: str
    dice_cavity: str
    hausdorff_mm: str
    mean_surface_distance_mm: str
    map_difference_ms: str
    wall_thickness_difference_mm: str
    remarks: str


@dataclass(frozen=True)
class ResultFigures:
    """What the series page shows of a result's summary."""

    title: str
    rows: list[FigureRow]
    notes: list[str]
    reader_slices: list[ReaderSliceRow]


def _number(value: Any, digits: int = 1) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if isinstance(value, int) or float(value).is_integer() and digits <= 1:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _plain(value: Any) -> str | None:
    """A scalar or a list of scalars in words; None for anything else (nested data is not shown raw)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(value, 2)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        return ", ".join(str(item) for item in value)
    return None


def humanise(key: str) -> str:
    """A summary key as a label: ``wall_thickness_mm`` -> "Wall thickness (mm)"."""
    words = key.split("_")
    unit = words.pop() if len(words) > 1 and words[-1] in {"ms", "mm", "mm2", "s", "percent"} else ""
    label = " ".join(words).capitalize()
    return f"{label} ({unit.replace('mm2', 'mm²').replace('percent', '%')})" if unit else label


def _series_name(uid: str, series_names: Mapping[str, str]) -> str:
    return series_names.get(uid, "a series of another study")


def map_figures(summary: Mapping[str, Any], series_names: Mapping[str, str]) -> ResultFigures:
    """The rows of a map analysis' summary (``MapResultSummary``); ``series_names``: Series Instance UID ->
    "number description" of the study's series."""
    rows: list[FigureRow] = []

    def add(label: str, value: str) -> None:
        if value:
            rows.append(FigureRow(label, value))

    kind = str(summary.get("kind") or "").upper()
    title = f"{kind} map analysis" if kind else "Map analysis"
    add("Sequence", str(summary.get("sequence") or ""))
    level = str(summary.get("level") or "")
    add("Slice level", level + (" (assumed: the images do not say)" if level and summary.get("level_assumed") else ""))
    add("Method", str(summary.get("method") or ""))
    add("Acquisition scheme", str(summary.get("scheme") or ""))
    add("Values from", str(summary.get("map_source") or ""))
    report_t1 = summary.get("report_t1")
    if isinstance(report_t1, str):
        add("T1 reported", REPORT_T1_WORDS.get(report_t1, report_t1))
    add("Slices", _number(summary.get("slices")))
    median, p25, p75 = summary.get("median_ms"), summary.get("p25_ms"), summary.get("p75_ms")
    if median is not None:
        spread = f" (interquartile range {_number(p25)} to {_number(p75)})" if p25 is not None and p75 is not None \
            else ""
        add(f"Whole-map median, every valid pixel ({kind or 'map'}, ms)", _number(median) + spread)
    valid = _number(summary.get("valid_pixels"))
    fraction = summary.get("valid_fraction_of_fitted")
    if valid:
        add("Valid pixels", valid + (f" ({fraction * 100:.0f} % of those fitted)" if isinstance(fraction, float)
                                     else ""))
    add("Median R² of the fit", _number(summary.get("median_r2"), 3))
    members = summary.get("unit_series")
    if isinstance(members, list) and members:
        add("Analysed together", "; ".join(_series_name(str(uid), series_names) for uid in members))
    supersedes = summary.get("supersedes")
    if isinstance(supersedes, dict) and supersedes.get("job_id") is not None:
        add("Replaces", f"the earlier analysis of the same slices (job {supersedes['job_id']})")
    reports_error = summary.get("reports_error")
    if reports_error:
        add("SR and SEG not written", str(reports_error))
    _add_unknown(summary, rows, known={"sequence", "level", "method", "scheme", "map_source", "report_t1",
                                       "median_ms", "valid_pixels", "median_r2", "reports_error"})
    notes = [str(note) for note in summary.get("notes") or [] if isinstance(note, str)]
    return ResultFigures(title=title, rows=rows, notes=notes, reader_slices=[])


def _add_unknown(summary: Mapping[str, Any], rows: list[FigureRow], *, known: set[str]) -> None:
    for key, value in summary.items():
        if key in known or key in HIDDEN_KEYS:
            continue
        text = _plain(value)
        if text:
            rows.append(FigureRow(humanise(key), text))


def _reader_slice(figures: Mapping[str, Any]) -> ReaderSliceRow:
    name = " ".join(str(figures.get(key) or "") for key in ("map_kind", "level")).strip() or "slice"
    reference = str(figures.get("reference") or "")
    readers = figures.get("reference_readers")
    if isinstance(readers, list) and readers:
        reference += f" ({', '.join(map(str, readers))})"
    remarks = [str(figures["error_mode"]).replace("_", " ")] if figures.get("error_mode") else []
    remarks.extend(str(note) for note in figures.get("notes") or [])
    return ReaderSliceRow(
        slice=name,
        status=str(figures.get("status") or ""),
        reference=reference,
        dice_myocardium=_number(figures.get("dice_myocardium"), 3),
        iou_myocardium=_number(figures.get("iou_myocardium"), 3),
        dice_cavity=_number(figures.get("dice_cavity"), 3),
        hausdorff_mm=_number(figures.get("hausdorff_mm"), 1),
        mean_surface_distance_mm=_number(figures.get("mean_surface_distance_mm"), 2),
        map_difference_ms=_number(figures.get("map_difference_ms"), 1),
        wall_thickness_difference_mm=_number(figures.get("wall_thickness_difference_mm"), 2),
        remarks="; ".join(remarks),
    )


def reader_figures(summary: Mapping[str, Any]) -> ResultFigures:
    """The rows of a reader score's summary (``ReaderResultSummary``) and the table of its slices."""
    rows = [FigureRow(label, str(summary.get(key))) for key, label in
            (("reader", "Reader"), ("gold_standard", "Gold standard"), ("reference", "Scored against"))
            if summary.get(key)]
    _add_unknown(summary, rows, known={"reader", "gold_standard", "reference"})
    slices = [_reader_slice(item) for item in summary.get("slices") or [] if isinstance(item, dict)]
    notes = [str(problem) for problem in summary.get("problems") or []]
    return ResultFigures(title=f"Contours of {summary.get('reader') or 'a reader'} scored", rows=rows, notes=notes,
                         reader_slices=slices)


#: Result kind -> how its summary reads; any other kind reads as a map analysis (map jobs, a study's bullseye).
READERS: dict[str, Callable[[Mapping[str, Any]], ResultFigures]] = {"reader_score": reader_figures}


def result_figures(kind: str, summary: Mapping[str, Any] | None, series_names: Mapping[str, str]) -> ResultFigures:
    """What the series page shows of a result's summary."""
    summary = summary or {}
    reader = READERS.get(kind)
    return reader(summary) if reader is not None else map_figures(summary, series_names)


def models_named_once(models: Mapping[str, str]) -> list[str]:
    """The models of an analysis, each once: the recorded "name version" strings (the key repeats the name)."""
    return list(dict.fromkeys(str(value) if str(value).startswith(str(key)) or " " in str(value)
                              else f"{key} {value}" for key, value in sorted(models.items())))
