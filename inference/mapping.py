"""One entry point for map reconstruction from raw images: MOLLI, ShMOLLI or T2-prep.

T1 maps are corrected for the known bias of the plain fit by a Bloch simulation of the protocol
(:mod:`inference.molli_correction`) when the protocol is given; see docs/mapping.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

import numpy as np

from inference.errors import TimingError, UnknownSchemeError
from inference.molli_correction import MolliProtocol, PlainFit, ProtocolError, correct_t1
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


class T1Correction(str, Enum):
    """Bias correction applied to a T1 map."""

    BLOCH = "bloch"  # Bloch simulation of the protocol, plain -> true T1 (inference.molli_correction)
    NONE = "none"  # the plain fit as it stands, as scanners' MOLLI maps


_METHODS = {
    MappingScheme.MOLLI: "MOLLI 3-parameter + Look-Locker",
    MappingScheme.SHMOLLI: "ShMOLLI conditional",
    MappingScheme.T2PREP: "T2-prep 2-parameter",
}
_BLOCH_SUFFIX = " + Bloch correction"
_PLAIN_FITS = {MappingScheme.MOLLI: PlainFit.MOLLI, MappingScheme.SHMOLLI: PlainFit.SHMOLLI}
#: Protocol and image TIs must agree this closely (DICOM rounds InversionTime).
_TI_TOLERANCE_MS = 2.0


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
    correction
        The bias correction that ran (``NONE`` for T2 maps and uncorrected T1 maps).
    plain_map_ms
        T1 only: the plain fit before any correction, what the vendor's own MOLLI/ShMOLLI map shows (the same
        array as ``map_ms`` when no correction ran); None for T2 maps.
    """

    kind: MapKind
    map_ms: np.ndarray
    r2: np.ndarray
    valid: np.ndarray
    method: str
    scheme: MappingScheme
    correction: T1Correction = T1Correction.NONE
    plain_map_ms: np.ndarray | None = None


def reconstruct_map(
    magnitude: np.ndarray,
    times_ms: np.ndarray,
    scheme: MappingScheme | str,
    *,
    rr_ms: float | None = None,
    inversion_index: np.ndarray | None = None,
    protocol: MolliProtocol | None = None,
    correction: T1Correction | str = T1Correction.BLOCH,
    t2_map_ms: np.ndarray | None = None,
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
        RR interval in ms; required for ShMOLLI (taken from ``protocol`` when omitted), ignored otherwise.
    inversion_index
        ShMOLLI only: which inversion each image follows (see :func:`inference.shmolli.fit_t1_shmolli`).
    protocol
        The T1 acquisition (:func:`inference.molli_correction.protocol_from_tags`); the Bloch correction needs
        it, and without it the T1 map is the plain fit (``result.correction`` says so).
    correction
        ``"bloch"`` (default: correct T1 when ``protocol`` is given) or ``"none"`` (the plain fit, as a
        scanner's MOLLI map). Ignored for T2 maps.
    t2_map_ms
        T2 map of the same slice, used by the correction instead of its assumed T2 where valid.

    Returns
    -------
    MappingResult

    Raises
    ------
    UnknownSchemeError
        If ``scheme`` is not one of the known schemes.
    TimingError
        If ShMOLLI is asked for without ``rr_ms`` or ``protocol``.
    ProtocolError
        If ``protocol`` does not describe these images (another fit, other inversion times).
    ShapeMismatchError, SignalError
        As raised by the fits.
    """
    try:
        scheme = MappingScheme(scheme)
    except ValueError:
        known = ", ".join(s.value for s in MappingScheme)
        raise UnknownSchemeError(f"scheme must be one of {known}, got {scheme!r}") from None
    correction = T1Correction(correction)

    applied = T1Correction.NONE
    method = _METHODS[scheme]
    plain_ms = None
    if scheme is MappingScheme.T2PREP:
        t2 = fit_t2_prep(magnitude, times_ms)
        kind, map_ms, r2, valid = MapKind.T2, t2.t2_ms, t2.r2, t2.valid
    else:
        if protocol is not None:
            _check_protocol(protocol, scheme, times_ms)
        if scheme is MappingScheme.SHMOLLI:
            rr_ms = rr_ms if rr_ms is not None else (protocol.rr_ms if protocol is not None else None)
            if rr_ms is None:
                raise TimingError("ShMOLLI reconstruction needs rr_ms (the RR interval), got None")
            t1 = fit_t1_shmolli(magnitude, times_ms, rr_ms=rr_ms, inversion_index=inversion_index)
        else:
            t1 = fit_t1_molli(magnitude, times_ms)
        kind, map_ms, r2, valid = MapKind.T1, t1.t1_ms, t1.r2, t1.valid
        plain_ms = t1.t1_ms
        if correction is T1Correction.BLOCH and protocol is not None:
            map_ms = correct_t1(t1.t1_ms, protocol, t2_ms=t2_map_ms, samples_used=t1.samples_used)
            applied, method = T1Correction.BLOCH, method + _BLOCH_SUFFIX
        elif correction is T1Correction.BLOCH:
            LOGGER.info("T1 map left uncorrected: no acquisition protocol was given")
    LOGGER.info(
        "%s map reconstructed (%s, correction %s): %d valid pixels",
        kind.value, scheme.value, applied.value, int(np.sum(valid)),
    )
    return MappingResult(
        kind=kind, map_ms=map_ms, r2=r2, valid=valid, method=method, scheme=scheme, correction=applied,
        plain_map_ms=plain_ms,
    )


def _check_protocol(protocol: MolliProtocol, scheme: MappingScheme, times_ms: np.ndarray) -> None:
    """The protocol must name the same fit and, sorted, the same inversion times as the images."""
    if protocol.fit is not _PLAIN_FITS[scheme]:
        raise ProtocolError(f"the protocol describes a {protocol.fit.value} fit, the images are {scheme.value}")
    given = np.sort(np.asarray(times_ms, dtype=np.float64).ravel())
    expected = np.sort(np.array(protocol.inversion_times_ms))
    if given.shape != expected.shape or not np.allclose(given, expected, rtol=0.0, atol=_TI_TOLERANCE_MS):
        raise ProtocolError(
            f"the protocol's inversion times {expected.round(1).tolist()} do not match the images' "
            f"{given.round(1).tolist()}"
        )
