"""What the map job writes after the models ran: the console's Secondary Captures, then the SR and the SEG.

As new series of the study (:class:`dicomnode.jobs.outputs.OutputWriter`):

- Secondary Captures for the scanner console (map with contours, AHA bullseye, attention map when motion was
  found), each with the verdict in plain words; a slice that could not be analysed gets one image saying why;
- one TID 1500 Measurement Report (SR) and one SEG for the analysed slices, referencing the maps analysed (the
  scanner's, else the node's MR maps).

Every image's banner names the unit (sequence, slice level, source series: :mod:`dicomnode.analysis.labels`), and
every series says what it holds in its Series Description: "myomap T1 MOLLI mid SC", "myomap T1 MOLLI mid SR",
"myomap T1 MOLLI mid SEG" (the maps' are set where they are built, :mod:`dicomnode.jobs.map_job`).

The job writes and sends the Secondary Captures before it builds the SR and the SEG (the SR takes longest), so the
console's wait does not include them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from dicomnode.analysis.labels import UnitLabel
from dicomnode.analysis.slices import SliceInput, SliceOutcome, series_banner
from dicomnode.jobs.outputs import ALGORITHM_VERSION, OutputSeries, OutputWriter
from reports.console_images import ConsoleLabel, render_console_images, render_failure_image
from reports.result_summary import AlgorithmInfo, AnalysisFigures, SliceFigures
from reports.secondary_capture import build_secondary_capture
from reports.seg_model import build_model_segmentation
from reports.sr_measurement import SliceComparison, build_measurement_report

LOGGER = logging.getLogger(__name__)


def console_label(label: UnitLabel | None, *, slice_index: int = 0, n_slices: int = 1,
                  not_for_diagnostic_use: bool = False) -> ConsoleLabel | None:
    """What one slice's console images say they show: "MOLLI 5(3)3, mid" and the source series (and which slice
    of several)."""
    if label is None:
        return ConsoleLabel(not_for_diagnostic_use=not_for_diagnostic_use) if not_for_diagnostic_use else None
    which = f", slice {slice_index + 1} of {n_slices}" if n_slices > 1 else ""
    return ConsoleLabel(title=label.title, source_line=f"{label.source_line}{which}",
                        not_for_diagnostic_use=not_for_diagnostic_use)


def write_console_images(outcomes: Sequence[SliceOutcome], slices: Sequence[SliceInput],
                         writer: OutputWriter, *, label: UnitLabel | None = None,
                         not_for_diagnostic_use: bool = False) -> list[Path]:
    """Write the Secondary Captures of every slice, one series; a slice without analysis gets one image saying why.

    ``label`` names the unit in every banner and in the series' description; ``not_for_diagnostic_use`` (the
    site's ``[console]`` setting) adds that line to every image.
    """
    paths = []
    instance_number = 0
    description = label.series_description("SC") if label is not None else "myomap SC"
    for outcome in outcomes:
        item = slices[outcome.index]
        shown = console_label(label, slice_index=outcome.index, n_slices=len(slices),
                              not_for_diagnostic_use=not_for_diagnostic_use)
        if outcome.analysis is not None:
            images = render_console_images(outcome.analysis, shown)
        else:
            images = [render_failure_image(outcome.failure or "unknown reason", item.map_ms, shown)]
        for image_index, image in enumerate(images):
            instance_number += 1
            sc = build_secondary_capture(
                image, item.mr_map, series_instance_uid=writer.series_uid(OutputSeries.SECONDARY_CAPTURE),
                sop_instance_uid=writer.uid("sc", outcome.index, image_index),
                series_number=writer.series_number(OutputSeries.SECONDARY_CAPTURE), instance_number=instance_number,
                series_description=description,
            )
            paths.append(writer.write(sc))
    return paths


def write_reports(outcomes: Sequence[SliceOutcome], slices: Sequence[SliceInput], writer: OutputWriter, *,
                  model_versions: dict[str, str], previous_reports: Sequence[Dataset] = (),
                  comparisons: Sequence[SliceComparison | None] = (),
                  label: UnitLabel | None = None) -> tuple[list[Path], list[Path]]:
    """Write the TID 1500 SR and the SEG of the analysed slices; ([sr], [seg]), empty when none was analysed.

    ``previous_reports`` are the SRs of an earlier analysis of the same slices that this one replaces: the new SR
    names them as its predecessors (Predecessor Documents Sequence); ``comparisons`` (per slice, by index) add the
    cross-check against the scanner's map and the second T1 estimate; ``label`` names the unit in the series'
    descriptions ("myomap T1 MOLLI mid SR").
    """
    analysed = [(slices[o.index].mr_map, o.analysis) for o in outcomes if o.analysis is not None]
    analysed_comparisons = [comparisons[o.index] if o.index < len(comparisons) else None
                            for o in outcomes if o.analysis is not None]
    if not analysed:
        return [], []
    report = build_measurement_report(
        analysed, series_instance_uid=writer.series_uid(OutputSeries.SR), sop_instance_uid=writer.uid("sr"),
        series_number=writer.series_number(OutputSeries.SR), algorithm_version=ALGORITHM_VERSION,
        model_versions=model_versions, previous_versions=previous_reports, comparisons=analysed_comparisons,
    )
    if label is not None:
        report.SeriesDescription = label.series_description("SR")
    sr_path = writer.write(report)
    segmentation = build_model_segmentation(
        analysed, series_instance_uid=writer.series_uid(OutputSeries.SEG), sop_instance_uid=writer.uid("seg"),
        series_number=writer.series_number(OutputSeries.SEG), algorithm_version=ALGORITHM_VERSION,
    )
    if label is not None:
        segmentation.SeriesDescription = label.series_description("SEG")
    return [sr_path], [writer.write(segmentation)]


def analysis_summary(outcomes: Sequence[SliceOutcome], model_versions: dict[str, str]) -> AnalysisFigures:
    """The ``analysis`` part of a map result's summary: verdicts and figures, no patient data."""
    return AnalysisFigures(
        algorithm=AlgorithmInfo(name="myomap", version=ALGORITHM_VERSION, models=model_versions),
        banner=series_banner(outcomes),
        slices=[
            SliceFigures.failed(o.index, o.failure or "unknown reason", o.banner) if o.analysis is None
            else SliceFigures.of(o.index, o.analysis, o.banner)
            for o in outcomes
        ],
    )
