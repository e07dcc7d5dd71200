"""The T1 acquisition as the raw series' tags describe it, for the Bloch correction of MOLLI/ShMOLLI maps."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.io.series_loader import LoadedSeries, SliceStack
from inference.mapping import MappingScheme
from inference.molli_correction import MolliProtocol, ProtocolError, protocol_from_tags

LOGGER = logging.getLogger(__name__)

#: The field whose T2 model ``AssumedT2.for_field`` takes when the header gives none (the tests check it does).
ASSUMED_FIELD_STRENGTH_T = 1.5
#: MagneticFieldStrength at or above this is in gauss (older GE headers write 15000 for 1.5 T).
_GAUSS_THRESHOLD = 100.0
FIELD_STRENGTH_NOTE = f"field strength not in the header; T2 model assumed {ASSUMED_FIELD_STRENGTH_T:g} T"


def field_strength_t(source: Dataset) -> float | None:
    """MagneticFieldStrength in tesla from the data set (Enhanced MR: top level, shared or first frame groups); None
    when absent, zero or not a number. Values of 100 and more are gauss (older GE headers) and are converted."""
    value = _number(source, "MagneticFieldStrength")
    if value is not None and value >= _GAUSS_THRESHOLD:
        return value / 10000.0
    return value


def field_strength_note(source: Dataset) -> str | None:
    """The sentence a result must carry when the header gives no field strength, else None.

    The Bloch correction of MOLLI/ShMOLLI maps picks its assumed T2 by field (``AssumedT2.for_field``); without
    MagneticFieldStrength it takes the 1.5 T model, which must be stated, never silently assumed.
    """
    if field_strength_t(source) is not None:
        return None
    return FIELD_STRENGTH_NOTE


def t1_protocol(
    stack: SliceStack, loaded: LoadedSeries, scheme: MappingScheme, rr_ms: float | None
) -> MolliProtocol | None:
    """The protocol of one slice's raw images, or None when the tags do not allow the correction (then logged).

    Images are put in acquisition order (by AcquisitionTime), as the correction simulates them.
    """
    if scheme is MappingScheme.T2PREP:
        return None
    source = stack.sources[0]
    order, acquisition_times_s = acquisition_order(stack)
    note = field_strength_note(source)
    if note is not None:
        LOGGER.warning("series %s: %s", loaded.series_instance_uid, note)
    try:
        return protocol_from_tags(
            stack.times_ms[order],
            fit="shmolli" if scheme is MappingScheme.SHMOLLI else "molli",
            rr_ms=rr_ms if rr_ms is not None else loaded.nominal_interval_ms,
            heart_rate_bpm=_number(source, "HeartRate"),
            acquisition_times_s=acquisition_times_s,
            flip_angle_deg=_number(source, "FlipAngle"),
            repetition_time_ms=_number(source, "RepetitionTime"),
            phase_encoding_lines=_phase_encoding_lines(source),
            field_strength_t=field_strength_t(source),
        )
    except ProtocolError as error:
        LOGGER.warning("series %s: T1 map left uncorrected: %s", loaded.series_instance_uid, error)
        return None


def acquisition_order(stack: SliceStack) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices that put the stack's images in acquisition order, and their acquisition times when known.

    By AcquisitionTime when every image has a distinct one; else by InstanceNumber (Enhanced MR: frame number),
    which scanners assign in acquisition order, and the times are left to the protocol's heartbeat layout.
    """
    times_s = stack.acquisition_times_s
    if np.all(np.isfinite(times_s)) and np.unique(times_s).size == times_s.size:
        order = np.argsort(times_s, kind="stable")
        return order, times_s[order]
    numbers = [
        int(ds.get("InstanceNumber") or 0) if int(ds.get("NumberOfFrames") or 1) == 1 else frame
        for ds, frame in zip(stack.sources, stack.frame_numbers, strict=True)
    ]
    return np.argsort(numbers, kind="stable"), None


def _find(ds: Dataset, keyword: str) -> Any:
    """A value from the data set itself or, for Enhanced MR, from its shared or first per-frame groups; None when
    absent. Its type follows the keyword's VR, hence Any (as pydicom's DataElement.value)."""
    if keyword in ds and ds[keyword].value not in (None, ""):
        return ds[keyword].value
    for groups_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(groups_keyword, [])[:1]:
            for macro in group:
                if macro.VR == "SQ":
                    for item in macro.value[:1]:
                        if keyword in item and item[keyword].value not in (None, ""):
                            return item[keyword].value
    return None


def _number(ds: Dataset, keyword: str) -> float | None:
    value = _find(ds, keyword)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _phase_encoding_lines(ds: Dataset) -> int | None:
    """Phase-encoding lines from AcquisitionMatrix (frequency rows, frequency columns, phase rows, phase columns)."""
    matrix = _find(ds, "AcquisitionMatrix")
    if matrix is None or len(matrix) != 4:
        return None
    direction = str(_find(ds, "InPlanePhaseEncodingDirection") or "").upper()
    lines = matrix[2] if direction == "ROW" else matrix[3] if direction == "COL" else max(matrix[2], matrix[3])
    return int(lines) if lines else None
