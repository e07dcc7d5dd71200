"""Relaxation times and proton density of the phantom's tissues at 1.5 T and 3 T, and myocardial pathology.

The values and their sources are listed in docs/phantom.md ("Tissue values"). T1 is the true (accurate-method)
value: myocardium from saturation-recovery (SASHA) measurements, blood such that the simulated MOLLI reads it at
the published MOLLI reference, the other tissues from inversion-recovery relaxometry. A plain MOLLI fit of the
phantom's images therefore reads myocardium and blood low, as clinical MOLLI maps do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from phantom.model import FieldStrength, SliceLevel, Tissue

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TissueProperties:
    """Relaxation times (ms) and proton density (relative to blood) of one tissue."""

    t1_ms: float
    t2_ms: float
    proton_density: float


# (T1 ms, T2 ms, proton density) per field strength; see docs/phantom.md for the sources.
_MYOCARDIUM = {FieldStrength.T1_5: (1170.0, 50.0, 0.80), FieldStrength.T3: (1520.0, 45.0, 0.80)}
_BLOOD = {FieldStrength.T1_5: (1650.0, 250.0, 1.00), FieldStrength.T3: (2030.0, 200.0, 1.00)}
_FAT = {FieldStrength.T1_5: (343.0, 58.0, 0.90), FieldStrength.T3: (382.0, 68.0, 0.90)}
_LIVER = {FieldStrength.T1_5: (586.0, 46.0, 0.75), FieldStrength.T3: (809.0, 34.0, 0.75)}
_SPLEEN = {FieldStrength.T1_5: (1057.0, 79.0, 0.85), FieldStrength.T3: (1328.0, 61.0, 0.85)}
_LUNG = {FieldStrength.T1_5: (1200.0, 40.0, 0.15), FieldStrength.T3: (1270.0, 35.0, 0.15)}
_SKELETAL_MUSCLE = {FieldStrength.T1_5: (856.0, 27.0, 0.75), FieldStrength.T3: (898.0, 29.0, 0.75)}
# Air outside the body: no signal; the relaxation times only keep the signal model finite.
_AIR = (1000.0, 50.0, 0.0)


def tissue_properties(field: FieldStrength) -> dict[Tissue, TissueProperties]:
    """Nominal properties of every tissue label at ``field``.

    Parameters
    ----------
    field
        Field strength.

    Returns
    -------
    dict
        One entry per :class:`Tissue`, background included (proton density 0).
    """
    field = FieldStrength(field)
    myocardium = TissueProperties(*_MYOCARDIUM[field])
    fat = TissueProperties(*_FAT[field])
    return {
        Tissue.BACKGROUND: TissueProperties(*_AIR),
        Tissue.LV_BLOOD: TissueProperties(*_BLOOD[field]),
        Tissue.MYOCARDIUM: myocardium,
        Tissue.PAPILLARY: myocardium,
        Tissue.RV_BLOOD: TissueProperties(*_BLOOD[field]),
        Tissue.RV_WALL: myocardium,
        Tissue.EPICARDIAL_FAT: fat,
        Tissue.LIVER: TissueProperties(*_LIVER[field]),
        Tissue.SPLEEN: TissueProperties(*_SPLEEN[field]),
        Tissue.LUNG: TissueProperties(*_LUNG[field]),
        Tissue.CHEST_WALL: TissueProperties(*_SKELETAL_MUSCLE[field]),
    }


def sample_tissue_properties(
    rng: np.random.Generator, field: FieldStrength, *, relative_sd: float = 0.03
) -> dict[Tissue, TissueProperties]:
    """Properties of one study: the nominal values with a per-study variation of a few percent.

    Myocardium, papillary muscles and RV wall share one draw (they are one tissue), and so do LV and RV blood.

    Parameters
    ----------
    rng
        Random generator of the study.
    field
        Field strength.
    relative_sd
        Standard deviation of the relative variation of T1 and T2 (proton density varies by half as much).

    Raises
    ------
    ValueError
        If ``relative_sd`` is negative or 0.2 or more.
    """
    if not 0.0 <= relative_sd < 0.2:
        raise ValueError(f"relative_sd must be in [0, 0.2), got {relative_sd}")
    nominal = tissue_properties(field)
    shared = {Tissue.PAPILLARY: Tissue.MYOCARDIUM, Tissue.RV_WALL: Tissue.MYOCARDIUM, Tissue.RV_BLOOD: Tissue.LV_BLOOD}
    varied: dict[Tissue, TissueProperties] = {}
    for tissue in Tissue:
        if tissue in shared:
            continue
        props = nominal[tissue]
        t1_factor, t2_factor, pd_factor = 1.0 + rng.normal(0.0, relative_sd, 3) * (1.0, 1.0, 0.5)
        varied[tissue] = TissueProperties(
            t1_ms=props.t1_ms * float(np.clip(t1_factor, 0.85, 1.15)),
            t2_ms=props.t2_ms * float(np.clip(t2_factor, 0.85, 1.15)),
            proton_density=props.proton_density * float(np.clip(pd_factor, 0.9, 1.1)),
        )
    for tissue, source in shared.items():
        varied[tissue] = varied[source]
    return {tissue: varied[tissue] for tissue in Tissue}


class PathologyKind(str, Enum):
    """Myocardial changes the phantom can place in a slice."""

    FOCAL_OEDEMA = "focal_oedema"  # acute injury: raised T1 and T2 in a few contiguous segments
    FOCAL_FIBROSIS = "focal_fibrosis"  # scar: raised T1, T2 near normal, a few contiguous segments
    DIFFUSE_FIBROSIS = "diffuse_fibrosis"  # raised T1 in the whole slice
    DIFFUSE_OEDEMA = "diffuse_oedema"  # myocarditis-like raised T1 and T2 in the whole slice
    IRON_OVERLOAD = "iron_overload"  # low T1 and T2 in the whole slice, liver and spleen too
    FABRY = "fabry"  # sphingolipid storage: low T1 in the whole slice

    @property
    def is_focal(self) -> bool:
        return self in (PathologyKind.FOCAL_OEDEMA, PathologyKind.FOCAL_FIBROSIS)


@dataclass(frozen=True)
class Pathology:
    """A change of myocardial T1 and T2 in some AHA segments of one slice.

    ``t1_factor`` and ``t2_factor`` multiply the tissue's values at the centre of the lesion; focal lesions fade
    to normal at their angular edges.
    """

    kind: PathologyKind
    segments: tuple[int, ...]
    t1_factor: float
    t2_factor: float

    def __post_init__(self) -> None:
        if not self.segments or any(not 1 <= s <= 16 for s in self.segments):
            raise ValueError(f"segments must be AHA numbers 1-16, got {self.segments}")
        for name in ("t1_factor", "t2_factor"):
            value = getattr(self, name)
            if not 0.3 <= value <= 2.5:
                raise ValueError(f"{name} must be in [0.3, 2.5], got {value}")


# Ranges of (t1_factor, t2_factor) per kind, from the changes reported in the literature (docs/phantom.md).
_FACTOR_RANGES: dict[PathologyKind, tuple[tuple[float, float], tuple[float, float]]] = {
    PathologyKind.FOCAL_OEDEMA: ((1.10, 1.25), (1.20, 1.45)),
    PathologyKind.FOCAL_FIBROSIS: ((1.10, 1.30), (0.97, 1.08)),
    PathologyKind.DIFFUSE_FIBROSIS: ((1.04, 1.10), (0.98, 1.04)),
    PathologyKind.DIFFUSE_OEDEMA: ((1.06, 1.12), (1.10, 1.25)),
    PathologyKind.IRON_OVERLOAD: ((0.70, 0.88), (0.70, 0.90)),
    PathologyKind.FABRY: ((0.85, 0.92), (0.98, 1.04)),
}
_KIND_WEIGHTS = {
    PathologyKind.FOCAL_OEDEMA: 0.25,
    PathologyKind.FOCAL_FIBROSIS: 0.25,
    PathologyKind.DIFFUSE_FIBROSIS: 0.15,
    PathologyKind.DIFFUSE_OEDEMA: 0.1,
    PathologyKind.IRON_OVERLOAD: 0.15,
    PathologyKind.FABRY: 0.1,
}


def level_segments(level: SliceLevel) -> tuple[int, ...]:
    """AHA segment numbers of a short-axis level (1-6 basal, 7-12 mid, 13-16 apical)."""
    level = SliceLevel(level)
    if level is SliceLevel.BASAL:
        return (1, 2, 3, 4, 5, 6)
    if level is SliceLevel.MID:
        return (7, 8, 9, 10, 11, 12)
    return (13, 14, 15, 16)


def sample_pathology(rng: np.random.Generator, level: SliceLevel, *, probability: float = 0.4) -> Pathology | None:
    """Draw the pathology of one slice, or None for normal myocardium.

    Focal lesions cover 1 to 3 contiguous segments of the level; diffuse changes cover all of its segments.

    Raises
    ------
    ValueError
        If ``probability`` is outside [0, 1].
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if rng.random() >= probability:
        return None
    kinds = list(_KIND_WEIGHTS)
    weights = np.array([_KIND_WEIGHTS[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    segments = level_segments(level)
    if kind.is_focal:
        count = int(rng.integers(1, 4))
        start = int(rng.integers(len(segments)))
        chosen = tuple(segments[(start + i) % len(segments)] for i in range(count))
    else:
        chosen = segments
    (t1_low, t1_high), (t2_low, t2_high) = _FACTOR_RANGES[kind]
    return Pathology(
        kind=kind,
        segments=chosen,
        t1_factor=float(rng.uniform(t1_low, t1_high)),
        t2_factor=float(rng.uniform(t2_low, t2_high)),
    )


def apply_iron_to_organs(
    properties: dict[Tissue, TissueProperties], pathology: Pathology | None
) -> dict[Tissue, TissueProperties]:
    """Lower liver and spleen T1/T2 as well when the heart is iron loaded (iron deposits there first)."""
    if pathology is None or pathology.kind is not PathologyKind.IRON_OVERLOAD:
        return properties
    out = dict(properties)
    for organ in (Tissue.LIVER, Tissue.SPLEEN):
        props = out[organ]
        out[organ] = replace(
            props,
            t1_ms=props.t1_ms * pathology.t1_factor**1.5,
            t2_ms=props.t2_ms * pathology.t2_factor**1.5,
        )
    return out
