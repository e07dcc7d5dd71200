"""Vendor flavours: how each simulated scanner names, encodes and stores its mapping series.

The conventions follow what the node meets in practice (docs/phantom.md, "File layout", lists them per vendor):
Siemens writes InversionTime and uint16 maps in ms with a FITPARAMS series (R2 x 4000) and a MOCO series;
Philips leaves InversionTime empty, writes the effective TI in ImageComments and stores maps as uint16 with a
RescaleSlope; GE writes InversionTime, no private tags, and float Parametric Maps; the Enhanced flavour (a newer
scanner generation) writes one Enhanced MR multi-frame instance per series and float Parametric Maps.

:class:`VendorQuirk` names the rougher conventions of real data, imitated only on request: GE's mixed complex
components in one series, one series per TI (GE, Philips), Siemens' colour display copy of a map, and headers
without the field strength.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from phantom.model import FieldStrength, SequenceKind, Vendor

LOGGER = logging.getLogger(__name__)


class MapEncoding(str, Enum):
    """How a T1/T2 map is stored."""

    UINT16_MS = "uint16_ms"  # MR Image, pixel value = ms, no rescale
    UINT16_RESCALED = "uint16_rescaled"  # MR Image, ms = RescaleSlope * value + RescaleIntercept
    PARAMETRIC_MAP = "parametric_map"  # Parametric Map Storage, float32 in ms (UCUM "ms")


class FitQualityEncoding(str, Enum):
    """How the fit-quality (R2) map is stored."""

    UINT16_X4000 = "uint16_x4000"  # MR Image "FITPARAMS": value = R2 * 4000
    UINT16_X1000 = "uint16_x1000"  # MR Image: value = R2 * 1000, RescaleSlope 0.001 says so
    PARAMETRIC_MAP = "parametric_map"  # Parametric Map Storage, float32 R2 (UCUM "1")


_SEQUENCE_LABEL = {
    SequenceKind.MOLLI_533: "MOLLI 5(3)3",
    SequenceKind.MOLLI_5S3S3S: "MOLLI 5s(3s)3s",
    SequenceKind.SHMOLLI: "ShMOLLI",
    SequenceKind.T2PREP: "T2prep",
}


@dataclass(frozen=True)
class VendorFlavour:
    """Naming and storage conventions of one simulated scanner."""

    vendor: Vendor
    manufacturer: str
    model_1_5t: str
    model_3t: str
    software_versions: str
    station_name: str
    institution_name: str
    enhanced: bool  # one Enhanced MR multi-frame instance per series
    writes_inversion_time: bool  # False: InversionTime empty, TI only in ImageComments
    map_encoding: MapEncoding
    map_rescale_slope: float  # for UINT16_RESCALED
    fit_quality_encoding: FitQualityEncoding
    writes_moco: bool

    def model_name(self, field: FieldStrength) -> str:
        """ManufacturerModelName of the scanner at ``field``."""
        return self.model_3t if field is FieldStrength.T3 else self.model_1_5t

    def series_base(self, kind: SequenceKind, level_label: str) -> str:
        """SeriesDescription of the raw series; derived series append a suffix to it."""
        label = _SEQUENCE_LABEL[kind]
        if self.vendor is Vendor.SIEMENS or self.vendor is Vendor.ENHANCED:
            return f"{label.replace(' ', '_')}_SAX_{level_label.upper()}"
        if self.vendor is Vendor.PHILIPS:
            return f"{label} SA {level_label}"
        return f"{label} SAX {level_label.capitalize()}"

    def map_suffix(self, kind: SequenceKind) -> str:
        """Suffix of the map series (T1MAP or T2MAP, with the vendor's separator)."""
        name = "T2MAP" if kind is SequenceKind.T2PREP else "T1MAP"
        return f"_{name}" if self.vendor in (Vendor.SIEMENS, Vendor.ENHANCED) else f" {name}"

    def fit_quality_suffix(self) -> str:
        """Suffix of the fit-quality series."""
        return "_FITPARAMS" if self.vendor in (Vendor.SIEMENS, Vendor.ENHANCED) else " R2MAP"

    def sequence_name(self, kind: SequenceKind, columns: int) -> str:
        """SequenceName of the raw images."""
        if self.vendor in (Vendor.SIEMENS, Vendor.ENHANCED):
            return f"*tfi2d1_{columns}" if kind is not SequenceKind.T2PREP else f"*tfi2d1_T2p{columns}"
        if self.vendor is Vendor.PHILIPS:
            return "B-TFE" if kind is SequenceKind.T2PREP else "IR-B-TFE"
        return "FIESTA-T2PREP" if kind is SequenceKind.T2PREP else "FIESTA-IR"


_FLAVOURS = {
    Vendor.SIEMENS: VendorFlavour(
        vendor=Vendor.SIEMENS,
        manufacturer="SIEMENS",
        model_1_5t="Aera",
        model_3t="Prisma",
        software_versions="syngo MR E11",
        station_name="PHMRSIE01",
        institution_name="Phantom Imaging Centre",
        enhanced=False,
        writes_inversion_time=True,
        map_encoding=MapEncoding.UINT16_MS,
        map_rescale_slope=1.0,
        fit_quality_encoding=FitQualityEncoding.UINT16_X4000,
        writes_moco=True,
    ),
    Vendor.PHILIPS: VendorFlavour(
        vendor=Vendor.PHILIPS,
        manufacturer="Philips Medical Systems",
        model_1_5t="Ingenia",
        model_3t="Ingenia Elition X",
        software_versions="5.6.1",
        station_name="PHMRPHI01",
        institution_name="Phantom Imaging Centre",
        enhanced=False,
        writes_inversion_time=False,
        map_encoding=MapEncoding.UINT16_RESCALED,
        map_rescale_slope=0.5,
        fit_quality_encoding=FitQualityEncoding.UINT16_X1000,
        writes_moco=False,
    ),
    Vendor.GE: VendorFlavour(
        vendor=Vendor.GE,
        manufacturer="GE MEDICAL SYSTEMS",
        model_1_5t="SIGNA Artist",
        model_3t="SIGNA Premier",
        software_versions="29.1",
        station_name="PHMRGE01",
        institution_name="Phantom Imaging Centre",
        enhanced=False,
        writes_inversion_time=True,
        map_encoding=MapEncoding.PARAMETRIC_MAP,
        map_rescale_slope=1.0,
        fit_quality_encoding=FitQualityEncoding.PARAMETRIC_MAP,
        writes_moco=False,
    ),
    Vendor.ENHANCED: VendorFlavour(
        vendor=Vendor.ENHANCED,
        manufacturer="SIEMENS",
        model_1_5t="MAGNETOM Sola",
        model_3t="MAGNETOM Vida",
        software_versions="syngo MR XA31",
        station_name="PHMRXA01",
        institution_name="Phantom Imaging Centre",
        enhanced=True,
        writes_inversion_time=True,
        map_encoding=MapEncoding.PARAMETRIC_MAP,
        map_rescale_slope=1.0,
        fit_quality_encoding=FitQualityEncoding.PARAMETRIC_MAP,
        writes_moco=False,
    ),
}


def flavour_for(vendor: Vendor | str) -> VendorFlavour:
    """The flavour of ``vendor``.

    Raises
    ------
    ValueError
        If ``vendor`` is not one of the :class:`~phantom.model.Vendor` values.
    """
    return _FLAVOURS[Vendor(vendor)]


class VendorQuirk(str, Enum):
    """Conventions of real scanners the phantom imitates on request (off by default; docs/phantom.md)."""

    GE_MIXED = "ge-mixed"  # each raw series also holds phase, real and imaginary images, marked by (0043,102F)
    PER_TI = "per-ti"  # one raw series per inversion (or T2-prep) time
    DISPLAY_COPY = "display-copy"  # the map series also holds an RGB colour copy of each map
    NO_FIELD_STRENGTH = "no-field-strength"  # raw headers without MagneticFieldStrength (and ImagingFrequency)


#: The vendor flavours each quirk belongs to.
QUIRK_VENDORS: dict[VendorQuirk, frozenset[Vendor]] = {
    VendorQuirk.GE_MIXED: frozenset({Vendor.GE}),
    VendorQuirk.PER_TI: frozenset({Vendor.GE, Vendor.PHILIPS}),
    VendorQuirk.DISPLAY_COPY: frozenset({Vendor.SIEMENS}),
    # Enhanced MR must carry MagneticFieldStrength (Type 1); classic MR Image may leave it out (Type 3).
    VendorQuirk.NO_FIELD_STRENGTH: frozenset({Vendor.SIEMENS, Vendor.PHILIPS, Vendor.GE}),
}


def parse_quirks(text: str | None) -> frozenset[VendorQuirk]:
    """Quirks from a comma-separated list (``ge-mixed,per-ti``); empty or None gives none.

    Raises
    ------
    ValueError
        If a name is not a :class:`VendorQuirk` value.
    """
    names = [part.strip().lower() for part in (text or "").split(",") if part.strip()]
    unknown = sorted(name for name in names if name not in {quirk.value for quirk in VendorQuirk})
    if unknown:
        choices = ", ".join(quirk.value for quirk in VendorQuirk)
        raise ValueError(f"vendor quirks are {choices}; got {unknown}")
    return frozenset(VendorQuirk(name) for name in names)


def quirks_for(vendor: Vendor | str, quirks: frozenset[VendorQuirk]) -> frozenset[VendorQuirk]:
    """The quirks of ``quirks`` that ``vendor``'s scanners have."""
    return frozenset(quirk for quirk in quirks if Vendor(vendor) in QUIRK_VENDORS[quirk])
