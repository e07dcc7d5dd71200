"""The short-axis level of a series (basal, mid, apical) from its description, as scanners and sites name them."""

from __future__ import annotations

import re

from inference.aha import AhaLevel

_LEVEL_TOKENS = (
    (re.compile(r"(?:^|[^A-Z])BAS(?:AL|E)?(?:[^A-Z]|$)"), AhaLevel.BASAL),
    (re.compile(r"(?:^|[^A-Z])MID(?:[^A-Z]|$)"), AhaLevel.MID),
    (re.compile(r"(?:^|[^A-Z])API(?:CAL|CES|X)?(?:[^A-Z]|$)"), AhaLevel.APICAL),
)
#: Where the level came from when the description names none.
ASSUMED = "assumed"
FROM_DESCRIPTION = "series description"


def level_from_description(series_description: str) -> tuple[AhaLevel, str]:
    """The level the description names, and ``"series description"``; mid and ``"assumed"`` when it names none."""
    text = series_description.upper()
    for pattern, level in _LEVEL_TOKENS:
        if pattern.search(text):
            return level, FROM_DESCRIPTION
    return AhaLevel.MID, ASSUMED
