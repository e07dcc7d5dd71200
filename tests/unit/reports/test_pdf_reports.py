"""The trainee and team PDF reports: rendered from the programme's dataclasses, turned into PNG pages (pdftoppm)
and text (pdftotext), checked for their figures, verdicts, plots and overlays."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from statistics import fmean, stdev

import numpy as np
import pytest
from PIL import Image

from reports.pdf import NOT_FOR_CLINICAL_USE, team_pdf, trainee_pdf
from reports.pdf.agreement import Limits, agreement_plot, agreement_point
from reports.pdf.bullseye import bias_bullseye, mean_segment_bias_ms
from reports.pdf.line_chart import Series, line_chart
from reports.pdf.progress_charts import t1_difference_over_attempts
from reports.pdf.svg import PALETTE, Axis, nice_step, tick_label
from reports.pdf.thumbnails import worst_attempts
from tests.programme_fixtures import improving, persistent, team

requires_poppler = pytest.mark.skipif(shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None,
                                      reason="poppler-utils (pdftoppm, pdftotext) not installed: make deps")
GENERATED_AT = datetime(2026, 12, 5, 18, 30)
VERSION = "0.1.0"
# The overlays' reader contour colour (tests/programme_fixtures.py) and the plots' first series colour.
OVERLAY_RED = (230, 30, 30)
FIRST_SERIES = tuple(int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5))


def _pages(pdf: bytes, folder: Path, name: str) -> tuple[str, list[np.ndarray]]:
    path = folder / f"{name}.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    subprocess.run(["pdftoppm", "-r", "80", "-png", str(path), str(folder / name)], check=True)
    pages = [np.asarray(Image.open(page).convert("RGB")) for page in sorted(folder.glob(f"{name}-*.png"))]
    return text, pages


def _pixels_near(page: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    return int((np.abs(page.astype(int) - np.array(colour)).max(axis=-1) <= tolerance).sum())


@requires_poppler
def test_trainee_report_shows_the_figures_the_verdict_the_plots_and_the_worst_overlays(tmp_path: Path) -> None:
    progress = improving(tmp_path)
    text, pages = _pages(trainee_pdf(progress, node_version=VERSION, generated_at=GENERATED_AT,
                                     storage_root=tmp_path), tmp_path, "trainee")
    flat = " ".join(text.split())
    assert "Trainee progress report" in flat and "trainee_improving" in flat and "team Ward 4" in flat
    assert NOT_FOR_CLINICAL_USE in flat and f"myomap {VERSION}" in flat and "5 December 2026, 18:30" in flat
    assert "Criteria met on 16 November 2026" in flat
    assert "mean Dice 0.918 over the last 3 cases, needs >= 0.85" in flat
    # The headline figures are computed from the attempts: each case's latest and first Dice, the T1 bias.
    latest = fmean(a.dice for a in progress.attempts if a.attempt_number == 3)
    first = fmean(a.dice for a in progress.attempts if a.attempt_number == 1)
    differences = [a.t1_difference_ms for a in progress.attempts]
    bias, spread = fmean(differences), 1.96 * stdev(differences)
    assert f"{latest:.3f}" in flat and f"first attempts: {first:.3f}" in flat
    assert f"bias {bias:+.1f} ms" in flat and f"{bias - spread:+.1f} to {bias + spread:+.1f}" in flat
    for title in ("Dice over attempts", "T1 difference over attempts", "T1 bias per AHA segment",
                  "T1 agreement with the reference", "Worst attempts", "Every attempt"):
        assert title in flat
    assert "against the pair's mean T1" in flat and "mean of reader's and reference's T1 (ms)" in flat
    # Every attempt is listed, with its Dice.
    for attempt in progress.attempts:
        assert f"{attempt.dice:.3f}" in flat
    # The error of the first attempts is named; no advice is left, the latest attempts being free of it.
    assert "endocardial border drawn inside the blood pool" in flat and "What to work on" not in flat
    # The plots are drawn (the first series' colour), and the worst attempts' overlays are in the pages.
    assert sum(_pixels_near(page, FIRST_SERIES, 30) for page in pages) > 150
    assert sum(_pixels_near(page, OVERLAY_RED, 30) for page in pages) > 200
    # The bullseye's segments are drawn in the bias colours: blue where the trainee reads T1 low.
    blue = sum(int(((page[..., 2].astype(int) - page[..., 0]) > 25).sum()) for page in pages)
    assert blue > 400


@requires_poppler
def test_persistent_trainee_report_says_why_the_criteria_are_not_met(tmp_path: Path) -> None:
    progress = persistent(tmp_path)
    text, _ = _pages(trainee_pdf(progress, node_version=VERSION, generated_at=GENERATED_AT), tmp_path, "persistent")
    flat = " ".join(text.split())
    assert "Criteria not met: 3 of 3 not met" in flat
    assert "epicardium drawn outside the fat in 3 of the last 3 cases" in flat
    assert "mean |dT1| 39.0 ms over the last 3 cases, needs <= 30 ms" in flat
    assert "What to work on" in flat and "Keep the epicardial border inside the dark fat line" in flat
    # Without the storage folder the overlays cannot be found: the report says so instead of showing nothing.
    assert "overlay stored, storage folder not given" in flat


@requires_poppler
def test_team_report_shows_every_trainee_the_spread_per_case_and_who_is_ready(tmp_path: Path) -> None:
    summary = team(tmp_path)
    text, pages = _pages(team_pdf(summary, node_version=VERSION, generated_at=GENERATED_AT), tmp_path, "team")
    flat = " ".join(text.split())
    assert "Team report" in flat and "Team Ward 4" in flat and NOT_FOR_CLINICAL_USE in flat
    assert "trainee_improving" in flat and "trainee_persistent" in flat
    assert "ready" in flat and "not yet" in flat
    for case in summary.cases:
        assert case.case_label in flat and f"{case.t1_cv_percent:.1f}" in flat
        assert f"{case.inter_observer_dice:.3f}" in flat
    assert "Criteria met on 16 November 2026" in flat and "Criteria not met: 3 of 3 not met" in flat
    for title in ("Mean Dice per attempt", "Mean |T1 difference| per attempt", "Team T1 bias per AHA segment"):
        assert title in flat
    assert sum(_pixels_near(page, FIRST_SERIES, 30) for page in pages) > 150
    # The persistent trainee raises the team's T1: segments drawn red.
    red = sum(int(((page[..., 0].astype(int) - page[..., 2]) > 40).sum()) for page in pages)
    assert red > 400


def test_axis_ticks_are_round_and_hold_the_data() -> None:
    assert nice_step(47.1) == 10.0 and nice_step(0.5) == 0.1 and nice_step(1.2) == 0.25
    axis = Axis.spanning([-44.2, 2.9], 100.0, 0.0, include=[0.0])
    assert (axis.low, axis.high) == (-50.0, 10.0)
    assert axis.ticks() == [-50.0, -40.0, -30.0, -20.0, -10.0, 0.0, 10.0]
    assert axis(-50.0) == 100.0 and axis(10.0) == 0.0
    assert tick_label(0.75, 0.25) == "0.75" and tick_label(-0.0, 0.1) == "0.0" and tick_label(20.0, 10.0) == "20"


def test_bias_limits_bullseye_and_worst_attempts(tmp_path: Path) -> None:
    assert Limits.of([]) is None
    single = Limits.of([12.0])
    assert single is not None and single.lower_ms is None
    limits = Limits.of([10.0, 20.0, 30.0])
    assert limits is not None and limits.bias_ms == 20.0
    assert limits.upper_ms == pytest.approx(20.0 + 1.96 * 10.0)
    assert mean_segment_bias_ms([{7: 10.0, 8: float("nan")}, {7: 20.0}]) == {7: 15.0}
    svg = str(bias_bullseye({7: 15.0}, title="bias"))
    assert svg.count("<path") == 17  # 16 segments and the apex
    assert svg.count("no data") == 15 and "+15" in svg
    # Bland-Altman: the reference read reader - difference, so the pair's mean is reader - difference / 2.
    point = agreement_point("case 1", 1040.0, 30.0)
    assert point.mean_ms == 1025.0 and point.difference_ms == 30.0
    by_mean = str(agreement_plot([point, agreement_point("case 2", 990.0, -10.0)], title="t"))
    assert "mean of reader&#x27;s and reference&#x27;s T1 (ms)" in by_mean
    in_order = str(agreement_plot([point, agreement_point("case 2", None, -10.0)], title="t"))
    assert "in the order received" in in_order
    worst = worst_attempts(improving(tmp_path).attempts, 2)
    assert [a.dice for a in worst] == [0.795, 0.801]


def test_line_charts_never_clip_and_keep_one_colour_per_case(tmp_path: Path) -> None:
    low = str(line_chart([Series("case 1", ((1.0, 0.42), (2.0, 0.9)))], title="t", x_label="x", y_label="y",
                         y_limits=(0.5, 1.0)))
    assert ">0.4</text>" in low  # the axis goes down to the point, to a round tick below it
    attempts = [replace(a, t1_difference_ms=None) if a.case_label == "case 1" else a
                for a in persistent(tmp_path).attempts]
    chart = str(t1_difference_over_attempts(attempts))
    # case 1 has no T1 difference: it keeps its legend entry (and colour), saying so.
    assert "case 1: none" in chart and chart.index("case 1: none") < chart.index(">case 2<")
