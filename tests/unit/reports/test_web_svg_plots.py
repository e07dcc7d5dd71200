"""The training pages' inline SVG plots: valid SVG, escaped labels, gaps for missing values, the AHA bullseye's
segments where the model puts them."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from reports.web.svg_plots import LineSeries, bullseye, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_line_chart_is_svg_with_a_marker_per_value_and_a_gap_per_missing_one() -> None:
    chart = line_chart([LineSeries("case <1>", [(1, 0.8), (2, None), (3, 0.9), (4, 0.95)])],
                       title="Dice & more", x_label="attempt", y_label="Dice", y_range=(0.5, 1.0), threshold=0.85,
                       threshold_label="criterion")
    root = ET.fromstring(str(chart))  # well-formed: labels are escaped
    assert len(root.findall(f"{SVG}circle")) == 3
    # The missing value splits the line: (1) alone draws none, (3, 4) one polyline.
    (polyline,) = root.findall(f"{SVG}polyline")
    assert len(polyline.get("points").split()) == 2
    assert "case <1>" in ET.tostring(root, encoding="unicode").replace("&lt;", "<").replace("&gt;", ">")
    threshold = [line for line in root.findall(f"{SVG}line") if line.get("class") == "plot-threshold"]
    assert len(threshold) == 1
    # No inline style: the page's Content-Security-Policy refuses it; classes carry the look.
    assert "style=" not in str(chart)


def test_points_are_placed_by_value() -> None:
    chart = line_chart([LineSeries("a", [(1, 0.5), (2, 1.0)])], title="t", x_label="x", y_label="y",
                       y_range=(0.5, 1.0))
    (low, high) = ET.fromstring(str(chart)).findall(f"{SVG}circle")
    assert float(low.get("cy")) > float(high.get("cy"))  # higher values sit higher on the page
    assert float(low.get("cx")) < float(high.get("cx"))


def test_an_empty_chart_says_so() -> None:
    assert "no scored attempts yet" in str(line_chart([], title="t", x_label="x", y_label="y"))


def test_bullseye_has_17_segments_anterior_at_the_top_septum_left() -> None:
    values = {segment: float(segment) for segment in range(1, 18)}
    root = ET.fromstring(str(bullseye(values, title="T1 by segment", unit="ms", limit=17.0, size=200)))
    cells = root.findall(f"{SVG}path")
    assert len(cells) == 17
    # Each value is written at its segment's centre, its baseline 4 units lower.
    labels = {text.text: (float(text.get("x")), float(text.get("y")) - 4) for text in root.findall(f"{SVG}text")
              if text.text and re.fullmatch(r"[+-]\d+", text.text)}
    centre_x, centre_y = 100.0, 22 + 100.0

    def angle(label: str) -> float:
        x, y = labels[label]
        return math.degrees(math.atan2(centre_y - y, x - centre_x)) % 360

    assert abs(angle("+1") - 90) < 1 and abs(angle("+7") - 90) < 1  # basal and mid anterior at the top
    assert abs(angle("+3") - 210) < 1  # basal inferoseptal: lower left
    assert abs(angle("+14") - 180) < 1 and abs(angle("+16") - 0) < 1  # apical septal left, lateral right
    # Full red at the limit, grey without a value.
    assert 'fill="rgb(255,0,0)"' in ET.tostring(cells[16], encoding="unicode")
    assert "#e5e7eb" in str(bullseye({}, title="t", unit="ms", limit=10.0))
