"""What the node's outputs call a unit of analysis: its sequence ("MOLLI 5(3)3"), its slice level and its source
series, in the console banner and in the Series Description of every output series.

The sequence comes from the acquisition the node fitted (its scheme and number of images) and the series
descriptions (the protocol name scanners put there, e.g. ``MOLLI_5s(3s)3s_SAX_MID``); the level from
:func:`dicomnode.io.slice_level.level_from_description`, as the analysis reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from dicomnode.io.slice_level import ASSUMED, level_from_description
from inference.aha import AhaLevel
from inference.mapping import MapKind, MappingScheme

#: DICOM's limit on Series Description (VR LO).
MAX_DESCRIPTION_CHARS = 64
#: A MOLLI variant as protocols write it: 5(3)3, 5s(3s)3s, 4(1)3(1)2, 3(3)3(3)5.
_MOLLI_VARIANT = re.compile(r"(?<![\d(])(\d+s?\(\d+s?\)\d+s?(?:\(\d+s?\)\d+s?)*)(?![\d)])", re.IGNORECASE)
#: MOLLI variants recognised from the number of images alone (the others share a count with another variant).
_MOLLI_BY_IMAGES = {8: "5(3)3", 9: "4(1)3(1)2"}
_FAMILY_NAMES = (("SHMOLLI", "ShMOLLI"), ("SASHA", "SASHA"), ("MOLLI", "MOLLI"))
_T2_PREP = re.compile(r"T2[\s_-]*PREP|T2P(?:[^A-Z]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class UnitLabel:
    """How a unit's outputs name it.

    ``family`` is the sequence without its variant ("MOLLI"), ``sequence`` with it ("MOLLI 5(3)3"); both are the
    map kind's name ("T1 map") when nothing names the sequence. ``level_assumed`` is true when no series
    description names the level (the analysis then assumes mid).
    """

    kind: MapKind
    family: str
    sequence: str
    level: AhaLevel
    level_assumed: bool
    source_series_number: int | None
    source_description: str = ""

    @property
    def quantity(self) -> str:
        return "T1" if MapKind(self.kind) is MapKind.T1 else "T2"

    @property
    def level_words(self) -> str:
        """"mid", or "mid (assumed)" when no description names the level."""
        return f"{self.level.value} (assumed)" if self.level_assumed else self.level.value

    @property
    def title(self) -> str:
        """The head of the console banner: "MOLLI 5(3)3, mid"."""
        return f"{self.sequence}, {self.level_words}"

    @property
    def source_line(self) -> str:
        """The banner's sub-line: "T1 map, source series 12 (MOLLI_5(3)3_SAX_MID)"."""
        series = "source series unnumbered" if self.source_series_number is None else \
            f"source series {self.source_series_number}"
        described = f" ({self.source_description})" if self.source_description else ""
        return f"{self.quantity} map, {series}{described}"

    def series_description(self, suffix: str) -> str:
        """``myomap T1 MOLLI mid <suffix>`` within DICOM's 64 characters; the source series stands in for a
        level no description names. The suffix is kept whole (a map's must end in T1MAP / T2MAP)."""
        sequence = "" if self.family.endswith(" map") else f" {self.family}"
        if self.level_assumed:
            where = "" if self.source_series_number is None else f" series {self.source_series_number}"
        else:
            where = f" {self.level.value}"
        head = f"myomap {self.quantity}{sequence}{where}"
        return f"{head[:MAX_DESCRIPTION_CHARS - len(suffix) - 1].rstrip()} {suffix}"


def sequence_names(descriptions: Iterable[str], scheme: MappingScheme | None, n_images: int | None,
                   kind: MapKind) -> tuple[str, str]:
    """(family, sequence) of a unit: ("MOLLI", "MOLLI 5s(3s)3s"), ("ShMOLLI", "ShMOLLI"), ("T2-prep", "T2-prep").

    The fitted scheme decides the family where there is one (the scanner's names only where the node fitted
    nothing); the MOLLI variant is the protocol's, else the one the number of images gives.
    """
    text = " ".join(descriptions)
    upper = text.upper()
    family = ""
    if scheme is MappingScheme.T2PREP or (scheme is None and _T2_PREP.search(text)):
        family = "T2-prep"
    elif scheme is MappingScheme.SHMOLLI:
        family = "ShMOLLI"
    elif scheme is MappingScheme.MOLLI and "SASHA" not in upper:
        family = "MOLLI"
    else:
        family = next((name for token, name in _FAMILY_NAMES if token in upper), "")
    if not family:
        name = f"{'T1' if MapKind(kind) is MapKind.T1 else 'T2'} map"
        return name, name
    if family != "MOLLI":
        return family, family
    variant = _MOLLI_VARIANT.search(text)
    if variant is not None:
        return family, f"MOLLI {variant.group(1)}"
    by_images = _MOLLI_BY_IMAGES.get(n_images or 0) if scheme is MappingScheme.MOLLI else None
    return family, f"MOLLI {by_images}" if by_images else family


def unit_label(descriptions: Iterable[str], *, kind: MapKind, scheme: MappingScheme | None, n_images: int | None,
               source_series_number: int | None) -> UnitLabel:
    """The label of a unit from its series' descriptions (in order), the fitted scheme and image count."""
    named = [d for d in dict.fromkeys(descriptions) if d]
    family, sequence = sequence_names(named, scheme, n_images, kind)
    level, level_from = level_from_description(" ".join(named))
    return UnitLabel(kind=MapKind(kind), family=family, sequence=sequence, level=level,
                     level_assumed=level_from == ASSUMED, source_series_number=source_series_number,
                     source_description=named[0] if named else "")
