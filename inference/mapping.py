"""One entry point for map reconstruction from raw images: MOLLI, ShMOLLI or T2-prep."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

import numpy as np

from inference.errors import TimingError, UnknownSchemeError
from inference.shmolli import fit_t1_shmolli
from inference.t1_fit import fit_t1_molli
from inference.t2_fit import fit_t2_prep

LOGGER = logging.getLogger(__name__)


class MapKind(Enum):
    """The relaxation time a map holds."""

    T1 = "T1"
    T2 = "T2"


class MappingScheme(str, Enum):
    """Acquisition schemes the reconstruction knows."""

    MOLLI = "molli"  # any MOLLI variant: 5(3)3, 5s(3s)3s, 4(1)3(1)2, 3(3)3(3)5
    SHMOLLI = "shmolli"  # 5(1)1(1)1 with conditional use of the later inversions
    T2PREP = "t2prep"  # T2-prepared bSSFP, e.g. 0/25/55 ms


_METHODS = {
    MappingScheme.MOLLI: "MOLLI 3-parameter + Look-Locker",
    MappingScheme.SHMOLLI: "ShMOLLI conditional",
    MappingScheme.T2PREP: "T2-prep 2-parameter",
}


@dataclass(frozen=True)
class MappingResult:
    """A reconstructed map and its fit quality; arrays have the images' trailing shape.

    Attributes
    ----------
    kind
        T1 or T2.
    map_ms
        Relaxation time in ms, NaN where not valid.
    r2
        Coefficient of determination of each pixel's fit, 0..1 (the "R2 map"); 0 in the background.
    valid
        Pixels where the fit is valid.
    method
        Human-readable fit method, for derivation descriptions and reports.
    scheme
        The acquisition scheme the images were fitted as.
    """

    kind: MapKind
    map_ms: np.ndarray
    r2: np.ndarray
    valid: np.ndarray
    method: str
    scheme: MappingScheme


def reconstruct_map(
    magnitude: np.ndarray,
    times_ms: np.ndarray,
    scheme: MappingScheme | str,
    *,
    rr_ms: float | None = None,
    inversion_index: np.ndarray | None = None,
) -> MappingResult:
    """Reconstruct a T1 or T2 map from raw magnitude images.

    Parameters
    ----------
    magnitude
        (n, ...) magnitude images, in any order.
    times_ms
        (n,) effective inversion times (MOLLI, ShMOLLI) or T2-preparation durations (T2-prep) in ms.
    scheme
        ``"molli"``, ``"shmolli"`` or ``"t2prep"`` (or the :class:`MappingScheme`).
    rr_ms
        RR interval in ms; required for ShMOLLI, ignored otherwise.
    inversion_index
        ShMOLLI only: which inversion each image follows (see :func:`inference.shmolli.fit_t1_shmolli`).

    Returns
    -------
    MappingResult

    Raises
    ------
    UnknownSchemeError
        If ``scheme`` is not one of the known schemes.
    TimingError
        If ShMOLLI is asked for without ``rr_ms``.
    ShapeMismatchError, SignalError
        As raised by the fits.
    """
    try:
        scheme = MappingScheme(scheme)
    except ValueError:
        known = ", ".join(s.value for s in MappingScheme)
        raise UnknownSchemeError(f"scheme must be one of {known}, got {scheme!r}") from None

    if scheme is MappingScheme.T2PREP:
        t2 = fit_t2_prep(magnitude, times_ms)
        kind, map_ms, r2, valid = MapKind.T2, t2.t2_ms, t2.r2, t2.valid
    else:
        if scheme is MappingScheme.SHMOLLI:
            if rr_ms is None:
                raise TimingError("ShMOLLI reconstruction needs rr_ms (the RR interval), got None")
            t1 = fit_t1_shmolli(magnitude, times_ms, rr_ms=rr_ms, inversion_index=inversion_index)
        else:
            t1 = fit_t1_molli(magnitude, times_ms)
        kind, map_ms, r2, valid = MapKind.T1, t1.t1_ms, t1.r2, t1.valid
    LOGGER.info("%s map reconstructed (%s): %d valid pixels", kind.value, scheme.value, int(np.sum(valid)))
    return MappingResult(kind=kind, map_ms=map_ms, r2=r2, valid=valid, method=_METHODS[scheme], scheme=scheme)
