"""Is the segmentation a left ventricle in short axis? A plausibility check before anything is measured.

The segmentation model labels every map it is given, whatever it shows. On a phantom of vials, a long-axis slice
or a liver map it still returns some "myocardium", and the measurements that follow (a mean T1, a bullseye, a
wall thickness that may come out negative) look like a result. :func:`check_left_ventricle` measures the shape
of what was found and says, in plain words, why it is not a short-axis LV when it is not.

What a short-axis LV looks like, and the bounds used (sizes in mm on the patient, from the pixel spacing):

======================== ======================================================= ===============================
quantity                 how it is measured                                      accepted
======================== ======================================================= ===============================
myocardium pieces        8-connected pieces holding >= 10 % of the myocardium    exactly one
enclosure                fraction of the pixels just outside the cavity that     >= 0.75
                         are myocardium (1 for a closed ring)
cavity area              LV blood pool                                           50 to 8000 mm2 (0.5 to 80 cm2)
epicardial diameter      diameter of the circle of the same area as myocardium   20 to 110 mm
                         and cavity together
mean wall thickness      epicardial minus endocardial equivalent radius          2 to 25 mm
aspect ratio             long over short axis of the epicardial region, from     <= 1.5
                         its second moments in mm
solidity                 epicardial region area over its convex hull's           >= 0.85
cavity offset            distance of the cavity's centre from the epicardial     <= 0.4
                         region's centre, over the epicardial radius
======================== ======================================================= ===============================

Evidence. On the 37 expert-contoured Sunnybrook short-axis slices with both borders (tests/unit/inference/
test_heart_check.py; patient SC-HF-I-6, whose epicardium is displaced, left out) the ranges are: enclosure
0.85-1.00 (below 1 where the experts' endocardium touches the epicardium), cavity 1.9-41.6 cm2 (1.6 cm2 over all 96
endocardial contours, the apical ones), epicardial diameter 31-88 mm (dilated hearts of heart-failure patients),
wall thickness 4.4-9.2 mm, aspect ratio 1.02-1.30, solidity 0.963-0.986, cavity offset 0.00-0.19. The phantom's
truth anatomy (60 slices, three levels) and the segmentation model's masks of 72 phantom maps (MOLLI, ShMOLLI,
T2-prep; three levels) stay inside the same ranges (model masks: enclosure 1.00, cavity 5.4-20.4 cm2, aspect at
most 1.13, solidity at least 0.96). Each bound leaves a margin around those data (the cavity bound a third of the
smallest apical cavity, so small apical slices pass) and follows anatomy beyond them: a dilated LV of 80-90 mm
end-diastolic diameter still passes, a wall thinner than 2 mm is not a segmented LV wall at mapping resolution
(1.4-2 mm pixels) and a mean wall above 25 mm exceeds even hypertrophic hearts. A long-axis LV is 1.5-2 times as
long as wide; vials are discs (no enclosed cavity, or a cavity beside rather than inside the "myocardium"). A basal
ring left open at the outflow tract passes while at least 75 % of its cavity border is myocardium; the contour fit
bridges the gap.

Known limit: the check sees shapes, not values. When the model splits a single uniform vial into a rim
("myocardium") and a core ("cavity"), the shape is that of a small LV and passes. Cavity and wall then hold the
same value, but a rule on that contrast would also refuse real post-contrast maps in cardiac amyloidosis, where
blood and myocardial T1 converge (ECV near 1 - haematocrit), so none is applied here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from inference.contour_fit import check_spacing
from inference.errors import AnalysisError, ShapeMismatchError
from inference.masks import enclosed, fill_holes, mask_window

LOGGER = logging.getLogger(__name__)

#: A piece of myocardium counts when it holds at least this fraction of the myocardium (smaller specks do not).
MIN_PIECE_FRACTION = 0.10
MIN_ENCLOSURE = 0.75
CAVITY_AREA_MM2 = (50.0, 8000.0)
EPICARDIAL_DIAMETER_MM = (20.0, 110.0)
WALL_THICKNESS_MM = (2.0, 25.0)
MAX_ASPECT_RATIO = 1.5
MIN_SOLIDITY = 0.85
MAX_CAVITY_OFFSET = 0.4
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class NoLeftVentricleError(AnalysisError):
    """The segmentation is not a left ventricle in short axis; the message starts "no left ventricle found"."""


@dataclass(frozen=True)
class HeartCheck:
    """The shape of a segmentation and whether it passes as a short-axis LV.

    ``reason`` says in plain words why it does not (None when it passes); measurements not reached are NaN.
    """

    reason: str | None
    myocardium_pieces: int = 0
    enclosure: float = float("nan")
    cavity_area_mm2: float = float("nan")
    epicardial_diameter_mm: float = float("nan")
    wall_thickness_mm: float = float("nan")
    aspect_ratio: float = float("nan")
    solidity: float = float("nan")
    cavity_offset: float = float("nan")

    @property
    def passed(self) -> bool:
        return self.reason is None


def _pieces(myocardium: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 8-connected piece and the number of pieces holding MIN_PIECE_FRACTION of the myocardium."""
    labels, count = ndimage.label(myocardium, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    significant = int(np.count_nonzero(sizes >= MIN_PIECE_FRACTION * sizes.sum()))
    return labels == int(np.argmax(sizes)) + 1, significant


def _cavity(myocardium: np.ndarray, cavity_mask: np.ndarray) -> np.ndarray:
    """The given cavity's largest piece outside the myocardium, else the largest hole of the myocardium."""
    cavity = cavity_mask & ~myocardium
    if not cavity.any():
        cavity = enclosed(myocardium)
    if not cavity.any():
        return cavity
    labels, count = ndimage.label(cavity)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels == int(np.argmax(sizes)) + 1


def _axes_mm(region: np.ndarray, spacing: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Centre (row, column) in mm and long-over-short axis ratio of a region, from its second moments."""
    rows, columns = np.nonzero(region)
    points = np.stack([rows * spacing[0], columns * spacing[1]])
    centre = points.mean(axis=1)
    if rows.size < 3:
        return centre, float("inf")
    eigenvalues = np.linalg.eigvalsh(np.cov(points))
    short, long = max(float(eigenvalues[0]), 1e-12), float(eigenvalues[1])
    return centre, float(np.sqrt(long / short))


def _outside(value: float, bounds: tuple[float, float]) -> bool:
    return not bounds[0] <= value <= bounds[1]


def check_left_ventricle(
    myocardium_mask: np.ndarray, cavity_mask: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> HeartCheck:
    """Measure the segmentation and judge whether it is a short-axis LV, by the bounds of the module docstring.

    Parameters
    ----------
    myocardium_mask, cavity_mask
        Boolean (rows, columns) masks; an empty cavity mask takes the hole of the myocardium.
    pixel_spacing_mm
        (row, column) spacing in mm.

    Raises
    ------
    ShapeMismatchError
        If the masks differ in shape or are not 2-D.
    AnalysisError
        If the spacing is not two positive numbers.
    """
    spacing = check_spacing(pixel_spacing_mm)
    myocardium = np.asarray(myocardium_mask, dtype=bool)
    given_cavity = np.asarray(cavity_mask, dtype=bool)
    if myocardium.shape != given_cavity.shape or myocardium.ndim != 2:
        raise ShapeMismatchError(
            f"myocardium_mask {myocardium.shape} and cavity_mask {given_cavity.shape} must be the same 2-D shape"
        )
    if not myocardium.any():
        return HeartCheck("the segmentation found no myocardium")
    # Measured in the masks' box with a margin of one pixel (inside the image): a ring in a large matrix; every
    # measure below is the same there, the box's edge being background or the image's edge.
    window = mask_window(myocardium | given_cavity)
    assert window is not None
    myocardium, given_cavity = myocardium[window], given_cavity[window]
    piece, pieces = _pieces(myocardium)
    if pieces > 1:
        return HeartCheck(f"the myocardium is in {pieces} separate pieces, expected one ring", pieces)
    cavity = _cavity(piece, given_cavity)
    if not cavity.any():
        return HeartCheck("the myocardium surrounds no cavity, expected a ring around the blood pool", pieces)
    padded_cavity = np.pad(cavity, 1)  # the image edge counts as not myocardium
    border = ndimage.binary_dilation(padded_cavity, structure=_EIGHT_CONNECTED) & ~padded_cavity
    enclosure = float(np.count_nonzero(border & np.pad(piece, 1)) / np.count_nonzero(border))
    pixel_mm2 = spacing[0] * spacing[1]
    heart = fill_holes(piece | cavity)
    cavity_mm2 = float(np.count_nonzero(cavity)) * pixel_mm2
    heart_mm2 = float(np.count_nonzero(heart)) * pixel_mm2
    epi_radius_mm = float(np.sqrt(heart_mm2 / np.pi))
    thickness_mm = epi_radius_mm - float(np.sqrt(cavity_mm2 / np.pi))
    heart_centre, aspect = _axes_mm(heart, spacing)
    cavity_centre, _ = _axes_mm(cavity, spacing)
    offset = float(np.hypot(*(cavity_centre - heart_centre))) / epi_radius_mm
    rows, columns = np.nonzero(heart)
    box = heart[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    solidity = float(np.count_nonzero(box) / np.count_nonzero(convex_hull_image(box)))
    reason = None
    if enclosure < MIN_ENCLOSURE:
        reason = (
            # Rounded down: 74.6 % must not read as the 75 % it falls short of.
            f"the myocardium surrounds only {np.floor(100.0 * enclosure):.0f} % of the cavity's border, expected at "
            f"least {100.0 * MIN_ENCLOSURE:.0f} % (a ring around the blood pool)"
        )
    elif _outside(cavity_mm2, CAVITY_AREA_MM2):
        reason = (
            f"the cavity measures {cavity_mm2 / 100.0:.1f} cm2, expected {CAVITY_AREA_MM2[0] / 100.0:g} to "
            f"{CAVITY_AREA_MM2[1] / 100.0:g} cm2"
        )
    elif _outside(2.0 * epi_radius_mm, EPICARDIAL_DIAMETER_MM):
        reason = (
            f"the ring measures {2.0 * epi_radius_mm:.0f} mm across, expected {EPICARDIAL_DIAMETER_MM[0]:g} to "
            f"{EPICARDIAL_DIAMETER_MM[1]:g} mm"
        )
    elif _outside(thickness_mm, WALL_THICKNESS_MM):
        reason = (
            f"the wall is {thickness_mm:.1f} mm thick on average, expected {WALL_THICKNESS_MM[0]:g} to "
            f"{WALL_THICKNESS_MM[1]:g} mm"
        )
    elif aspect > MAX_ASPECT_RATIO:
        reason = (
            f"the ring is {aspect:.1f} times as long as it is wide, expected at most {MAX_ASPECT_RATIO:g} "
            "(a short-axis view is round; is this a long-axis slice?)"
        )
    elif solidity < MIN_SOLIDITY:
        reason = f"the outline of the ring is not convex (solidity {solidity:.2f}, expected at least {MIN_SOLIDITY:g})"
    elif offset > MAX_CAVITY_OFFSET:
        reason = (
            f"the cavity lies off the centre of the ring by {100.0 * offset:.0f} % of its radius, expected at most "
            f"{100.0 * MAX_CAVITY_OFFSET:.0f} %"
        )
    return HeartCheck(reason, pieces, enclosure, cavity_mm2, 2.0 * epi_radius_mm, thickness_mm, aspect, solidity,
                      offset)


def require_left_ventricle(
    myocardium_mask: np.ndarray, cavity_mask: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> HeartCheck:
    """:func:`check_left_ventricle`, raising when the segmentation is not a short-axis LV.

    Raises
    ------
    NoLeftVentricleError
        With the message "no left ventricle found: " and the reason in plain words.
    ShapeMismatchError, AnalysisError
        As for :func:`check_left_ventricle`.
    """
    result = check_left_ventricle(myocardium_mask, cavity_mask, pixel_spacing_mm)
    if result.reason is not None:
        LOGGER.info("segmentation rejected: %s", result.reason)
        raise NoLeftVentricleError(f"no left ventricle found: {result.reason}")
    return result
