"""Result images for the scanner console, read at a glance: the map with its contours, the AHA bullseye, the motion
attention map, a failure notice, a reader's contour against a reference, and the study's 16-segment bullseye.

Every image is at least :data:`WIDTH` pixels wide with a banner at the top that names what it shows and says what
to do: "MOLLI 5(3)3, mid: motion artefact in segments 7, 10 - consider repeating the breath-hold". Under the
banner a sub-line names the map and its source series, and, where the site's configuration says so
(``[console] not_for_diagnostic_use``), a line says the image is not for diagnostic use. The banner's colour is the
verdict's: red for motion or a failed analysis, amber when the quality model doubts the contours (no values are
shown then), green for no motion, grey where motion was not checked. Rendering uses numpy and Pillow only, so
that all images of a slice take tens of milliseconds: the radiographer sees them within a second of the last
image of the series.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from inference.aha import LEVEL_SEGMENTS, AhaLevel
from inference.mapping import MapKind
from inference.slice_analysis import SliceAnalysis
from inference.verdict import REPEAT_ADVICE, UNCERTAIN_CONTOURS, banner_text, segment_list

LOGGER = logging.getLogger(__name__)

WIDTH = 640
MAP_BOX = 640  # largest side of the map panel
BANNER_FONT_PX = 30
TEXT_FONT_PX = 24
VALUE_FONT_PX = 26
SMALL_FONT_PX = 18
PADDING = 12
LV_ZOOM = 2.5  # half the side of the map crop, in epicardial radii
MIN_HALF_FOV_MM = 50.0
_FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
)

ALERT = (170, 20, 20)  # motion found or analysis failed
GOOD = (20, 110, 40)  # no motion
NEUTRAL = (60, 60, 70)  # no motion check
CAUTION = (170, 100, 0)  # the quality model doubts the contours: no values shown
INFO = (30, 60, 120)  # reader comparison
SUB_LINE = (35, 35, 42)  # the strip under the banner naming the map and its source series
NOT_FOR_DIAGNOSIS = (255, 220, 0)  # the "not for diagnostic use" line, yellow on black
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
ENDO_COLOUR = (255, 40, 40)
EPI_COLOUR = (40, 220, 60)
MOTION_COLOUR = (230, 60, 20)
SLICE_COLOUR = (170, 200, 235)
OTHER_COLOUR = (215, 215, 215)
DOUBTFUL_COLOUR = (240, 190, 90)  # study bullseye: a level whose contours the quality model doubts, no values
NO_SLICE_COLOUR = (90, 90, 96)  # study bullseye: no slice analysed at this level
READER_COLOUR = (255, 60, 60)
REFERENCE_COLOUR = (60, 230, 90)


# Display angles (deg, counter-clockwise, 0 = right) of the AHA segments on the standard bullseye: anterior at
# the top, septum on the left. Rings from outside in: basal, mid, apical; segment 17 (apex) in the centre.
_RING_START_DEG = {AhaLevel.BASAL: 60.0, AhaLevel.MID: 60.0, AhaLevel.APICAL: 45.0}
_APEX_RADIUS = 48
_SLICE_RING_PX = 104  # the ring of the analysed slice is wider, to hold its values in large type
_OTHER_RING_PX = 66
_STUDY_RING_PX = 88  # the study bullseye's three rings are equal: every level holds values
#: The line a site's configuration can have every console image carry.
NOT_FOR_DIAGNOSTIC_USE = "Not for diagnostic use"


@dataclass(frozen=True, eq=False)
class ConsoleImage:
    """An RGB result image for the console.

    ``name`` identifies the kind of image ("map with contours", "AHA bullseye", ...), ``description`` says what it
    shows, ``banner`` is the text of its banner, and ``in_image_plane`` is true when its pixels show the source
    map's plane (same row and column directions), so that a patient orientation can be given.
    """

    name: str
    description: str
    rgb: np.ndarray  # (rows, columns, 3) uint8
    banner: str = ""
    in_image_plane: bool = False


@dataclass(frozen=True)
class ConsoleLabel:
    """What the images of one analysed unit say they show, beyond the verdict.

    ``title`` heads the banner ("MOLLI 5(3)3, mid"), ``source_line`` is the sub-line under it ("T1 map, source
    series 12 (MOLLI_5(3)3_SAX_MID)"); ``not_for_diagnostic_use`` adds that line (the site's setting).
    """

    title: str = ""
    source_line: str = ""
    not_for_diagnostic_use: bool = False


def labelled_banner(verdict: str, label: ConsoleLabel | None) -> str:
    """The banner's text: the verdict after the label's title ("MOLLI 5(3)3, mid: motion artefact in ..."), or
    the verdict alone without a title."""
    if label is None or not label.title:
        return verdict
    lowered = verdict[:1].lower() + verdict[1:] if verdict[1:2].islower() else verdict
    return f"{label.title}: {lowered}"


# --- text ------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans Bold at ``size_px``, else Pillow's own scalable default font."""
    for path in _FONT_PATHS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size_px)
    return ImageFont.load_default(size=size_px)


def _wrap(text: str, typeface: ImageFont.FreeTypeFont | ImageFont.ImageFont, width_px: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and typeface.getlength(candidate) > width_px:
            lines.append(current)
            current = word
        else:
            current = candidate
    return [*lines, current] if current else lines or [""]


def _banner_colour(verdict: str) -> tuple[int, int, int]:
    """The colour of a verdict (:func:`inference.verdict.banner_text`'s words, before any title)."""
    if verdict.startswith(("Motion artefact", "Analysis not possible")):
        return ALERT
    if verdict.endswith(UNCERTAIN_CONTOURS):
        return CAUTION
    if verdict.startswith("No motion artefact"):
        return GOOD
    return NEUTRAL


def _strip(text: str, background: tuple[int, int, int], foreground: tuple[int, int, int],
           size_px: int = SMALL_FONT_PX, width: int = WIDTH) -> Image.Image:
    """A line of smaller type on its own background (wrapped when long)."""
    typeface = font(size_px)
    lines = _wrap(text, typeface, width - 2 * PADDING)
    line_px = int(size_px * 1.3)
    image = Image.new("RGB", (width, PADDING + line_px * len(lines)), background)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((PADDING, PADDING // 2 + index * line_px), line, fill=foreground, font=typeface)
    return image


def _header(verdict: str, label: ConsoleLabel | None, colour: tuple[int, int, int] | None = None
            ) -> list[Image.Image]:
    """The banner (title and verdict, in the verdict's colour), the source sub-line and the site's notice."""
    parts = [_banner(labelled_banner(verdict, label), colour or _banner_colour(verdict))]
    if label is not None and label.source_line:
        parts.append(_strip(label.source_line, SUB_LINE, WHITE))
    if label is not None and label.not_for_diagnostic_use:
        parts.append(_strip(NOT_FOR_DIAGNOSTIC_USE.upper(), BLACK, NOT_FOR_DIAGNOSIS, size_px=TEXT_FONT_PX))
    return parts


def _banner(text: str, colour: tuple[int, int, int], width: int = WIDTH) -> Image.Image:
    typeface = font(BANNER_FONT_PX)
    lines = _wrap(text, typeface, width - 2 * PADDING)
    line_px = int(BANNER_FONT_PX * 1.25)
    image = Image.new("RGB", (width, 2 * PADDING + line_px * len(lines)), colour)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((PADDING, PADDING + index * line_px), line, fill=WHITE, font=typeface)
    return image


def _text_panel(lines: list[str], width: int = WIDTH, size_px: int = TEXT_FONT_PX) -> Image.Image:
    typeface = font(size_px)
    wrapped = [part for line in lines for part in _wrap(line, typeface, width - 2 * PADDING)]
    line_px = int(size_px * 1.3)
    image = Image.new("RGB", (width, 2 * PADDING + line_px * len(wrapped)), BLACK)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(wrapped):
        draw.text((PADDING, PADDING + index * line_px), line, fill=WHITE, font=typeface)
    return image


def _stack(parts: list[Image.Image], width: int = WIDTH) -> np.ndarray:
    height = sum(part.height for part in parts)
    canvas = Image.new("RGB", (width, height), BLACK)
    top = 0
    for part in parts:
        canvas.paste(part, ((width - part.width) // 2, top))
        top += part.height
    return np.asarray(canvas, dtype=np.uint8).copy()


# --- map panels ----------------------------------------------------------------------------------------------------


def _window(map_ms: np.ndarray, myocardium: np.ndarray | None) -> tuple[float, float]:
    """(low, high) ms: myocardium mid-grey (0 to twice its median), so native blood is bright and fat dark."""
    values = np.asarray(map_ms, dtype=np.float64)
    inside = values[myocardium & np.isfinite(values) & (values > 0)] if myocardium is not None else np.array([])
    if inside.size:
        return 0.0, max(2.0 * float(np.median(inside)), 1.0)
    positive = values[np.isfinite(values) & (values > 0)]
    return (0.0, max(float(np.percentile(positive, 99.0)), 1.0)) if positive.size else (0.0, 1.0)


def _grey(map_ms: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    values = np.nan_to_num(np.asarray(map_ms, dtype=np.float32), nan=0.0)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Panel:
    """A crop of the map resized to the console, with the mapping from map pixels to panel pixels."""

    image: Image.Image
    scale_x: float
    scale_y: float
    offset_x: int = 0  # first map column of the crop
    offset_y: int = 0  # first map row of the crop

    def to_panel(self, points_px: np.ndarray) -> list[tuple[float, float]]:
        """(x, y) map pixel centres -> panel coordinates."""
        points = np.asarray(points_px, dtype=np.float64)
        x = (points[:, 0] - self.offset_x + 0.5) * self.scale_x
        y = (points[:, 1] - self.offset_y + 0.5) * self.scale_y
        return list(zip(x.tolist(), y.tolist(), strict=True))


def _crop_box(shape: tuple[int, int], centre_px: tuple[float, float], half_side_mm: float,
              pixel_spacing_mm: tuple[float, float]) -> tuple[slice, slice]:
    """A square (in mm) around the centre, moved inside the image where it would stick out."""
    rows, columns = shape
    half_rows = min(rows / 2.0, half_side_mm / pixel_spacing_mm[0])
    half_columns = min(columns / 2.0, half_side_mm / pixel_spacing_mm[1])
    row0 = int(np.clip(round(centre_px[1] - half_rows), 0, rows - 2 * half_rows))
    column0 = int(np.clip(round(centre_px[0] - half_columns), 0, columns - 2 * half_columns))
    return (slice(row0, row0 + max(1, round(2 * half_rows))), slice(column0, column0 + max(1, round(2 * half_columns))))


def _lv_box(analysis: SliceAnalysis) -> tuple[slice, slice]:
    """The LV with a margin of its own size around it: large on the console, with its surroundings."""
    row_mm, column_mm = analysis.pixel_spacing_mm
    epi = np.asarray(analysis.contours.epi_px, dtype=np.float64)
    cx, cy = analysis.lv_centre_px
    radius_mm = float(np.max(np.hypot((epi[:, 0] - cx) * column_mm, (epi[:, 1] - cy) * row_mm)))
    return _crop_box(np.shape(analysis.map_ms), analysis.lv_centre_px, max(MIN_HALF_FOV_MM, LV_ZOOM * radius_mm),
                     analysis.pixel_spacing_mm)


def _panel(rgb_or_grey: np.ndarray, pixel_spacing_mm: tuple[float, float],
           box: tuple[slice, slice] | None = None) -> _Panel:
    """Crop to ``box`` and resize to fit MAP_BOX x MAP_BOX at the true aspect ratio."""
    box = box or (slice(0, rgb_or_grey.shape[0]), slice(0, rgb_or_grey.shape[1]))
    crop = np.ascontiguousarray(rgb_or_grey[box])
    rows, columns = crop.shape[:2]
    height_mm, width_mm = rows * pixel_spacing_mm[0], columns * pixel_spacing_mm[1]
    scale = min(MAP_BOX / width_mm, MAP_BOX / height_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    image = Image.fromarray(crop).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return _Panel(image, size[0] / columns, size[1] / rows, box[1].start, box[0].start)


def _draw_contour(draw: ImageDraw.ImageDraw, panel: _Panel, points_px: np.ndarray, colour: tuple[int, int, int],
                  width: int = 3) -> None:
    points = panel.to_panel(points_px)
    draw.line([*points, points[0]], fill=colour, width=width, joint="curve")


def _quantity(analysis: SliceAnalysis) -> str:
    return "T1" if MapKind(analysis.map_kind) is MapKind.T1 else "T2"


def _format_ms(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.0f}"


def _map_image(analysis: SliceAnalysis, verdict: str, label: ConsoleLabel | None) -> ConsoleImage:
    myocardium = np.asarray(analysis.segmentation.myocardium_mask, dtype=bool)
    panel = _panel(_grey(analysis.map_ms, _window(analysis.map_ms, myocardium)), analysis.pixel_spacing_mm,
                   _lv_box(analysis))
    draw = ImageDraw.Draw(panel.image)
    _draw_contour(draw, panel, analysis.contours.epi_px, EPI_COLOUR)
    _draw_contour(draw, panel, analysis.contours.endo_px, ENDO_COLOUR)
    values = analysis.myocardium_values
    quantity = _quantity(analysis)
    if analysis.segmentation_doubtful:
        # No number the console could read as a result: the contours it would come from are in doubt.
        why = analysis.quality.doubts[0] if analysis.quality.doubts else \
            f"predicted Dice {analysis.quality.predicted_dice:.2f}"
        lines = [f"{quantity} myocardium not shown: automatic contours uncertain ({why}), "
                 f"{AhaLevel(analysis.level).value} slice", "Check the contours before use"]
    else:
        lines = [f"{quantity} myocardium {_format_ms(values.mean)} ms (SD {_format_ms(values.sd)}), "
                 f"{AhaLevel(analysis.level).value} slice"]
    description = f"{quantity} map with the endocardial (red) and epicardial (green) contours"
    image = _stack([*_header(verdict, label), panel.image, _text_panel(lines)])
    return ConsoleImage("map with contours", description, image, labelled_banner(verdict, label),
                        in_image_plane=True)


# --- bullseye --------------------------------------------------------------------------------------------------------


def _sector(centre: tuple[float, float], inner: float, outer: float, start_deg: float, width_deg: float
            ) -> list[tuple[float, float]]:
    angles = np.radians(np.linspace(start_deg, start_deg + width_deg, max(4, int(width_deg / 3) + 1)))
    cx, cy = centre
    outer_points = np.column_stack([cx + outer * np.cos(angles), cy - outer * np.sin(angles)])
    inner_points = np.column_stack([cx + inner * np.cos(angles[::-1]), cy - inner * np.sin(angles[::-1])])
    return [tuple(point) for point in np.vstack([outer_points, inner_points]).tolist()]


def _ring_radii(level: AhaLevel) -> dict[AhaLevel, tuple[int, int]]:
    """(inner, outer) radius of each ring, from the apex outwards; the analysed slice's ring is the widest."""
    radii = {}
    inner = _APEX_RADIUS
    for ring in (AhaLevel.APICAL, AhaLevel.MID, AhaLevel.BASAL):
        outer = inner + (_SLICE_RING_PX if ring is level else _OTHER_RING_PX)
        radii[ring] = (inner, outer)
        inner = outer
    return radii


def _ring_layout() -> dict[int, tuple[AhaLevel, float, float]]:
    """AHA segment -> (level, start, width) on the bullseye."""
    layout = {}
    for level, segments in LEVEL_SEGMENTS.items():
        width = 360.0 / len(segments)
        for index, segment in enumerate(segments):
            layout[segment] = (level, _RING_START_DEG[level] + index * width, width)
    return layout


_LAYOUT = _ring_layout()


def _bullseye_image(analysis: SliceAnalysis, verdict: str, label: ConsoleLabel | None) -> ConsoleImage:
    size = WIDTH
    image = Image.new("RGB", (size, size), BLACK)
    draw = ImageDraw.Draw(image)
    centre = (size / 2.0, size / 2.0)
    level = AhaLevel(analysis.level)
    motion = set(analysis.motion.motion_segments) if analysis.motion is not None else set()
    value_font, small_font = font(VALUE_FONT_PX), font(SMALL_FONT_PX)
    ring_radii = _ring_radii(level)
    draw.ellipse([centre[0] - _APEX_RADIUS, centre[1] - _APEX_RADIUS, centre[0] + _APEX_RADIUS,
                  centre[1] + _APEX_RADIUS], fill=OTHER_COLOUR, outline=BLACK, width=2)
    draw.text(centre, "17", fill=BLACK, font=small_font, anchor="mm")
    for segment, (ring, start, width) in _LAYOUT.items():
        inner, outer = ring_radii[ring]
        on_slice = ring is level
        colour = MOTION_COLOUR if segment in motion else SLICE_COLOUR if on_slice else OTHER_COLOUR
        draw.polygon(_sector(centre, inner, outer, start, width), fill=colour, outline=BLACK, width=2)
        middle = np.radians(start + width / 2.0)
        radius = (inner + outer) / 2.0
        x, y = centre[0] + radius * np.cos(middle), centre[1] - radius * np.sin(middle)
        values = analysis.segment_values.get(segment)
        if on_slice:
            shown = np.nan if values is None or analysis.segmentation_doubtful else values.mean
            draw.text((x, y - 12), _format_ms(shown), fill=BLACK, font=value_font, anchor="mm")
            draw.text((x, y + 14), f"({segment})", fill=BLACK, font=small_font, anchor="mm")
        else:
            draw.text((x, y), str(segment), fill=(110, 110, 110), font=small_font, anchor="mm")
    quantity = _quantity(analysis)
    legend = [f"{quantity} mean (ms) per AHA segment, {level.value} slice"]
    if analysis.segmentation_doubtful:
        legend = [f"{quantity} per AHA segment not shown: automatic contours uncertain, {level.value} slice"]
    if analysis.motion is not None:
        legend.append(f"Red: motion artefact in {segment_list(motion)}" if motion
                      else "No segment with motion artefact")
    description = f"AHA bullseye with the {quantity} mean of each segment of the {level.value} slice"
    rgb = _stack([*_header(verdict, label), image, _text_panel(legend)])
    return ConsoleImage("AHA bullseye", description, rgb, labelled_banner(verdict, label))


# --- study bullseye --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyLevel:
    """The slice of one level on the study bullseye: its segments' means and what the console must know of it.

    ``segment_means_ms`` holds the level's AHA segments (a missing or non-finite mean: no value); ``doubtful``
    says the quality model doubts its contours (its values are not shown); ``source`` names where it came from
    ("series 12").
    """

    level: AhaLevel
    segment_means_ms: dict[int, float]
    motion_checked: bool = False
    motion_segments: tuple[int, ...] = ()
    whole_image_motion: bool = False
    doubtful: bool = False
    level_assumed: bool = False
    source: str = ""


@dataclass(frozen=True)
class StudyBullseye:
    """The study's 16-segment bullseye of one map kind and sequence: one slice per level, basal to apical."""

    quantity: str  # "T1" or "T2"
    sequence: str  # "MOLLI 5(3)3"
    levels: tuple[StudyLevel, ...]
    not_for_diagnostic_use: bool = False

    def level(self, level: AhaLevel) -> StudyLevel | None:
        return next((item for item in self.levels if item.level is level), None)


def _level_names(levels: list[StudyLevel] | list[AhaLevel]) -> str:
    names = [(item.level if isinstance(item, StudyLevel) else item).value for item in levels]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def study_verdict(study: StudyBullseye) -> tuple[str, tuple[int, int, int]]:
    """The study's verdict in words and its colour: motion in any level's segments (red), else doubtful contours
    (amber), else no motion (green), else no motion check (grey)."""
    segments = sorted({s for item in study.levels for s in item.motion_segments})
    moved_whole = [item for item in study.levels if item.whole_image_motion and not item.motion_segments]
    doubtful = [item for item in study.levels if item.doubtful]
    checked = [item for item in study.levels if item.motion_checked]
    parts = []
    if segments:
        parts.append(f"Motion artefact in {segment_list(segments)} - {REPEAT_ADVICE}")
    elif moved_whole:
        parts.append(f"Motion artefact in the {_level_names(moved_whole)} slice - {REPEAT_ADVICE}")
    elif checked:
        parts.append("No motion artefact detected")
    else:
        parts.append("No motion check (no raw images)")
    if doubtful:
        parts.append(f"{UNCERTAIN_CONTOURS} ({_level_names(doubtful)} slice)")
    colour = ALERT if segments or moved_whole else CAUTION if doubtful else GOOD if checked else NEUTRAL
    return "; ".join(parts), colour


def render_study_bullseye(study: StudyBullseye) -> ConsoleImage:
    """The 16-segment AHA bullseye of the study: basal 1-6, mid 7-12 and apical 13-16, each ring from its level's
    slice; segments with motion marked red, a level with doubtful contours amber and without values, a level
    without a slice dark grey."""
    size = WIDTH
    image = Image.new("RGB", (size, size), BLACK)
    draw = ImageDraw.Draw(image)
    centre = (size / 2.0, size / 2.0)
    value_font, small_font = font(VALUE_FONT_PX), font(SMALL_FONT_PX)
    radii, inner = {}, _APEX_RADIUS
    for ring in (AhaLevel.APICAL, AhaLevel.MID, AhaLevel.BASAL):
        radii[ring] = (inner, inner + _STUDY_RING_PX)
        inner += _STUDY_RING_PX
    draw.ellipse([centre[0] - _APEX_RADIUS, centre[1] - _APEX_RADIUS, centre[0] + _APEX_RADIUS,
                  centre[1] + _APEX_RADIUS], fill=NO_SLICE_COLOUR, outline=BLACK, width=2)
    draw.text(centre, "17", fill=OTHER_COLOUR, font=small_font, anchor="mm")
    for segment, (ring, start, width) in _LAYOUT.items():
        inner_px, outer_px = radii[ring]
        item = study.level(ring)
        if item is None:
            colour = NO_SLICE_COLOUR
        elif segment in item.motion_segments:
            colour = MOTION_COLOUR
        elif item.doubtful:
            colour = DOUBTFUL_COLOUR
        else:
            colour = SLICE_COLOUR
        draw.polygon(_sector(centre, inner_px, outer_px, start, width), fill=colour, outline=BLACK, width=2)
        middle = np.radians(start + width / 2.0)
        radius = (inner_px + outer_px) / 2.0
        x, y = centre[0] + radius * np.cos(middle), centre[1] - radius * np.sin(middle)
        if item is None:
            draw.text((x, y), str(segment), fill=OTHER_COLOUR, font=small_font, anchor="mm")
            continue
        # No number where the contours it would come from are in doubt.
        shown = "?" if item.doubtful else _format_ms(item.segment_means_ms.get(segment, float("nan")))
        draw.text((x, y - 12), shown, fill=BLACK, font=value_font, anchor="mm")
        draw.text((x, y + 14), f"({segment})", fill=BLACK, font=small_font, anchor="mm")
    verdict, colour = study_verdict(study)
    missing = [level for level in (AhaLevel.BASAL, AhaLevel.MID, AhaLevel.APICAL) if study.level(level) is None]
    label = ConsoleLabel(
        title=f"Study bullseye, {study.sequence}",
        source_line=f"{study.quantity} map, " + ", ".join(f"{item.level.value} {item.source}".strip()
                                                        for item in study.levels),
        not_for_diagnostic_use=study.not_for_diagnostic_use,
    )
    legend = [f"{study.quantity} mean (ms) per AHA segment: basal 1-6, mid 7-12, apical 13-16"]
    segments = sorted({s for item in study.levels for s in item.motion_segments})
    if segments:
        legend.append(f"Red: motion artefact in {segment_list(segments)}")
    doubtful = [item for item in study.levels if item.doubtful]
    if doubtful:
        legend.append(f"Amber: automatic contours uncertain, values not shown ({_level_names(doubtful)} slice)")
    if missing:
        legend.append(f"Dark grey: no {_level_names(missing)} slice analysed")
    assumed = [item for item in study.levels if item.level_assumed]
    if assumed:
        legend.append(f"Level assumed, not named by the series: {_level_names(assumed)}")
    description = (f"AHA 16-segment bullseye of the study with the {study.quantity} mean of each segment, "
                   f"{study.sequence}")
    rgb = _stack([*_header(verdict, label, colour), image, _text_panel(legend)])
    return ConsoleImage("study bullseye", description, rgb, labelled_banner(verdict, label))


# --- attention map -------------------------------------------------------------------------------------------------


def _heat_overlay(grey: np.ndarray, heat: np.ndarray, colour_strength: float = 0.65) -> np.ndarray:
    """Grey map with a red-to-yellow overlay where ``heat`` (0..1) is high."""
    alpha = (np.clip(heat, 0.0, 1.0) * colour_strength)[..., None]
    colour = np.stack([np.full_like(heat, 255.0), 255.0 * np.clip(heat, 0.0, 1.0), np.zeros_like(heat)], axis=-1)
    base = np.repeat(grey[..., None].astype(np.float32), 3, axis=-1)
    return (base * (1.0 - alpha) + colour * alpha).astype(np.uint8)


def _attention_image(analysis: SliceAnalysis, verdict: str, label: ConsoleLabel | None) -> ConsoleImage:
    motion = analysis.motion
    if motion is None:
        raise ValueError("an attention map needs the result of motion detection")
    segments = motion.motion_segments or tuple(sorted(motion.attention_maps))
    shape = np.shape(analysis.map_ms)
    maps = [np.asarray(motion.attention_maps[s], dtype=np.float32) for s in segments if s in motion.attention_maps]
    heat = np.max(np.stack(maps), axis=0) if maps else np.zeros(shape, dtype=np.float32)
    myocardium = np.asarray(analysis.segmentation.myocardium_mask, dtype=bool)
    grey = _grey(analysis.map_ms, _window(analysis.map_ms, myocardium))
    box = _lv_box(analysis)
    panel = _panel(_heat_overlay(grey[box], heat[box]), analysis.pixel_spacing_mm)
    panel = _Panel(panel.image, panel.scale_x, panel.scale_y, box[1].start, box[0].start)
    draw = ImageDraw.Draw(panel.image)
    _draw_contour(draw, panel, analysis.contours.epi_px, WHITE, width=2)
    _draw_contour(draw, panel, analysis.contours.endo_px, WHITE, width=2)
    listed = segment_list(motion.motion_segments) or "the whole image (no segment named)"
    lines = [f"Where the motion model looked: {listed}"]
    description = "Attention of the motion model on the map, for the segments with a motion artefact"
    rgb = _stack([*_header(verdict, label), panel.image, _text_panel(lines)])
    return ConsoleImage("attention map", description, rgb, labelled_banner(verdict, label), in_image_plane=True)


# --- public ----------------------------------------------------------------------------------------------------------


def render_console_images(analysis: SliceAnalysis, label: ConsoleLabel | None = None) -> list[ConsoleImage]:
    """The map with its contours and the AHA bullseye, plus the attention map when motion was found; ``label``
    names the unit in the banner and its sub-line."""
    verdict = banner_text(analysis)
    images = [_map_image(analysis, verdict, label), _bullseye_image(analysis, verdict, label)]
    if analysis.motion is not None and analysis.motion.has_motion:
        images.append(_attention_image(analysis, verdict, label))
    return images


def render_failure_image(reason: str, map_ms: np.ndarray | None, label: ConsoleLabel | None = None) -> ConsoleImage:
    """A notice that the slice could not be analysed, over the map when there is one."""
    verdict = banner_text(None, reason)
    banner = labelled_banner(verdict, label)
    with_map = map_ms is not None and np.ndim(map_ms) == 2 and np.size(map_ms) > 0
    if map_ms is not None and with_map:  # with_map implies a map; mypy cannot see it through the flag
        body = _panel(_grey(map_ms, _window(map_ms, None)), (1.0, 1.0)).image
    else:
        body = _text_panel(["No map could be made from the images."])
    return ConsoleImage("analysis not possible", banner, _stack([*_header(verdict, label, ALERT), body]), banner,
                        in_image_plane=with_map)


def _outline(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def render_reader_overlay(
    map_ms: np.ndarray,
    reader_mask: np.ndarray,
    reference_mask: np.ndarray,
    scores: dict[str, float],
    reader: str,
    reference: str,
) -> ConsoleImage:
    """A reader's myocardium (red outline) over the reference's (green outline), with the scores below."""
    reader_mask = np.asarray(reader_mask, dtype=bool)
    reference_mask = np.asarray(reference_mask, dtype=bool)
    if reader_mask.shape != np.shape(map_ms) or reference_mask.shape != np.shape(map_ms):
        raise ValueError("the reader and reference masks must have the map's shape")
    grey = _grey(map_ms, _window(map_ms, reference_mask))
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[_outline(reference_mask)] = REFERENCE_COLOUR
    rgb[_outline(reader_mask)] = READER_COLOUR
    if reference_mask.any():
        rows, columns = np.nonzero(reference_mask)
        centre = (float(columns.mean()), float(rows.mean()))
        radius_px = float(np.max(np.hypot(columns - centre[0], rows - centre[1]))) + 1.0
        rgb = rgb[_crop_box(grey.shape, centre, max(MIN_HALF_FOV_MM / 2.0, LV_ZOOM * radius_px), (1.0, 1.0))]
    scale = max(1, int(MAP_BOX // max(rgb.shape[:2])))
    panel = Image.fromarray(np.ascontiguousarray(rgb)).resize((rgb.shape[1] * scale, rgb.shape[0] * scale),
                                                              Image.Resampling.NEAREST)
    if panel.width > WIDTH:
        panel = panel.resize((WIDTH, round(panel.height * WIDTH / panel.width)), Image.Resampling.NEAREST)
    score_text = ", ".join(f"{name} {value:.2f}" for name, value in scores.items())
    banner = f"{reader} compared with {reference}"
    lines = [score_text, f"Red: {reader}, green: {reference}"]
    description = f"Myocardium of {reader} (red) and {reference} (green) with the agreement scores"
    image = _stack([_banner(banner, INFO), panel, _text_panel(lines)])
    return ConsoleImage("reader comparison", description, image, banner, in_image_plane=True)


__all__ = [
    "NOT_FOR_DIAGNOSTIC_USE", "WIDTH", "ConsoleImage", "ConsoleLabel", "StudyBullseye", "StudyLevel", "banner_text",
    "font", "labelled_banner", "render_console_images", "render_failure_image", "render_reader_overlay",
    "render_study_bullseye", "study_verdict",
]
