"""A contour's error mode (inference.trainee_scoring.ErrorMode values) in words, with what to do about it."""

from __future__ import annotations

from inference.trainee_scoring import ErrorMode

# (what the contour does, what the reader should do instead)
_WORDS: dict[str, tuple[str, str]] = {
    ErrorMode.GOOD.value: ("no systematic error", ""),
    ErrorMode.SHIFTED.value: (
        "both borders displaced together",
        "Check that the contour lies on this image and was not moved while editing: both borders sit beside the "
        "wall, taking blood on one side and fat or lung on the other.",
    ),
    ErrorMode.EPICARDIAL_FAT.value: (
        "epicardial border drawn outside the fat",
        "Keep the epicardial border inside the epicardial fat: fat has a short T1 and pulls the myocardial value "
        "down.",
    ),
    ErrorMode.BLOOD_POOL.value: (
        "endocardial border drawn inside the blood pool",
        "Draw the endocardial border at the blood-myocardium edge, slightly inside the wall: blood has a long T1 "
        "and pushes the myocardial value up.",
    ),
    ErrorMode.PAPILLARY.value: (
        "papillary muscles included in the myocardium",
        "Leave the papillary muscles and trabeculae in the cavity and trace the compact wall.",
    ),
    ErrorMode.TOO_SMOOTH.value: (
        "borders reduced to a near-ellipse",
        "Follow the wall's own shape with more points where it bends: an ellipse cuts wall off in places and adds "
        "blood or fat in others.",
    ),
    ErrorMode.JAGGED.value: (
        "borders wobble from point to point",
        "Place fewer, deliberate points along each border: a wobbling border mixes blood and fat into the wall.",
    ),
    ErrorMode.PART_MISSED.value: (
        "a sector of the wall left out",
        "Contour the whole circumference of the wall, including thin segments next to the RV insertion.",
    ),
}


def error_mode_words(mode: str | None) -> str:
    """What the error mode means, in words; "" when there is none."""
    if not mode:
        return ""
    return _WORDS.get(mode, (mode.replace("_", " "), ""))[0]


def error_mode_advice(mode: str | None) -> str:
    """What the reader should do about the error mode; "" for a good contour or an unknown mode."""
    if not mode:
        return ""
    return _WORDS.get(mode, ("", ""))[1]


#: Every error mode a contour can show except a good one; by default each is critical for accreditation.
ERROR_MODES: tuple[str, ...] = tuple(mode.value for mode in ErrorMode if mode is not ErrorMode.GOOD)
