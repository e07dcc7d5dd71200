"""Coded concepts the report builders share (DICOM PS3.16 DCM codes and UCUM units).

Only standard codes are used here; a private code, if one is ever needed, must be added to the conformance
statement as well.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from inference.mapping import MapKind

#: UCUM millisecond, the unit of every relaxation time the node writes.
UNIT_MS = CodedConcept.from_code(codes.UCUM.Millisecond)
#: UCUM dimensionless unit, for the coefficient of determination of a fit.
UNIT_NO_UNITS = CodedConcept.from_code(codes.UCUM.NoUnits)

#: Quantities (CID 7180 "Abstract Multi-dimensional Image Model Component Semantics").
T1 = CodedConcept.from_code(codes.DCM.T1)  # (113063, DCM, "T1")
T2 = CodedConcept.from_code(codes.DCM.T2)  # (113065, DCM, "T2")
R2_COEFFICIENT = CodedConcept.from_code(codes.DCM.R2Coefficient)  # (126220, DCM, "R2-Coefficient")

#: How a map was obtained.
T1_BY_INVERSION_RECOVERY = CodedConcept.from_code(codes.DCM.T1ByInversionRecovery)  # (126351, DCM)
LEAST_SQUARES_FIT = CodedConcept.from_code(codes.DCM.LeastSquaresFitOfMultipleSamples)  # (113261, DCM)
MODEL_FITTING_METHOD = CodedConcept.from_code(codes.DCM.ModelFittingMethod)  # (113241, DCM)


def quantity_of(kind: MapKind) -> CodedConcept:
    """The coded quantity a map of ``kind`` holds (T1 or T2)."""
    return {MapKind.T1: T1, MapKind.T2: T2}[MapKind(kind)]
