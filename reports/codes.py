"""Coded concepts the report builders share (DICOM PS3.16: DCM, SCT, LOINC, RadLex codes and UCUM units).

Standard codes come first; the few concepts without a standard code use the private scheme ``99MYOMAP`` at the
end of this module, and every one of them is listed in the conformance statement (docs/conformance.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
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


# --- Measurement reports, segmentations and screen captures of the analysis --------------------------------------

#: UCUM units of the measurements.
UNIT_MM = CodedConcept.from_code(codes.UCUM.Millimeter)
UNIT_MM2 = CodedConcept("mm2", "UCUM", "square millimeter")
UNIT_ONE = UNIT_NO_UNITS

#: TID 1500 document and procedure.
PROCEDURE_CARDIAC_MR = CodedConcept("241620005", "SCT", "Magnetic resonance imaging of heart")
DEVICE_OBSERVER = CodedConcept.from_code(codes.DCM.Device)
ALGORITHM_FAMILY = CodedConcept.from_code(codes.DCM.ArtificialIntelligence)  # (123110, DCM)

#: Statistics of a region (CID 7464 "General Region of Interest Measurement Modifier").
MEAN = CodedConcept.from_code(codes.SCT.Mean)  # (373098007, SCT)
MEDIAN = CodedConcept.from_code(codes.SCT.Median)  # (373099004, SCT)
STANDARD_DEVIATION = CodedConcept.from_code(codes.SCT.StandardDeviation)  # (386136009, SCT)

#: Geometric measurements.
AREA = CodedConcept.from_code(codes.SCT.Area)  # (42798000, SCT)
WALL_THICKNESS = CodedConcept.from_code(codes.DCM.WallThickness)  # (122445, DCM)
ENDOCARDIAL_AREA = CodedConcept.from_code(codes.LN.EndocardialArea)  # (59094-3, LN)
EPICARDIAL_AREA = CodedConcept.from_code(codes.LN.EpicardialArea)  # (59093-5, LN)

#: Anatomy. Each structure the node outlines is coded once, as a :class:`Structure`, and written the same way in the
#: SEG (Segmented Property Category / Type, Anatomic Region of the segment) and in the SRs (Finding Category, Finding,
#: Finding Site of the TID 1410 groups), as dcmqi pairs them. Code values and meanings are those of PS3.16.
#: CID 7150 "Segmentation Property Category".
ANATOMICAL_STRUCTURE = CodedConcept.from_code(codes.SCT.AnatomicalStructure)  # (91723000, SCT)
TISSUE = CodedConcept.from_code(codes.SCT.Tissue)  # (85756007, SCT)
#: CID 4 "Anatomic Region" (also CID 4031 "Common Anatomic Region" for the heart; CID 7152 "Cardiac Structure
#: Segmentation Type" for both).
HEART = CodedConcept.from_code(codes.SCT.Heart)  # (80891009, SCT)
LEFT_VENTRICLE = CodedConcept.from_code(codes.SCT.LeftVentricle)  # (87878005, SCT): the whole ventricle, wall included
#: CID 7191 "Tissue Segmentation Property Type" (within CID 7151 and CID 7166): the blood pool is blood in the left
#: ventricle; PS3.16 has no code for the cavity itself.
BLOOD = CodedConcept.from_code(codes.SCT.Blood)  # (87612001, SCT)
#: CID 12305 "Basic Echo Anatomic Site" (SNOMED "Structure of myocardium of left ventricle"). CID 7151 is extensible
#: and none of its groups holds a myocardium; the generic "Myocardium structure" (74281007, SCT) is in no CID.
LEFT_VENTRICLE_MYOCARDIUM = CodedConcept("49848007", "SCT", "Left Ventricle Myocardium")


@dataclass(frozen=True)
class Structure:
    """An outlined structure: category (CID 7150), property type or finding (CID 7151), anatomic region or finding
    site (CID 4)."""

    category: CodedConcept
    property_type: CodedConcept
    region: CodedConcept


#: Inside the endocardial contour: the blood pool (the models' "cavity" class).
LV_BLOOD_POOL = Structure(TISSUE, BLOOD, LEFT_VENTRICLE)
#: Between the contours.
LV_MYOCARDIUM = Structure(ANATOMICAL_STRUCTURE, LEFT_VENTRICLE_MYOCARDIUM, LEFT_VENTRICLE)
#: Inside the epicardial contour: blood pool and wall.
LV_WHOLE = Structure(ANATOMICAL_STRUCTURE, LEFT_VENTRICLE, HEART)

#: AHA 17-segment model, segments 1-16 (CID 3782 basal, 3783 mid-level and 3784 apical wall segments).
AHA_SEGMENTS: dict[int, CodedConcept] = {
    number: CodedConcept(value, "SCT", meaning)
    for number, (value, meaning) in {
        1: ("264850008", "left ventricle basal anterior segment"),
        2: ("396482007", "left ventricle basal anteroseptal segment"),
        3: ("396646008", "left ventricle basal inferoseptal segment"),
        4: ("264846001", "left ventricle basal inferior segment"),
        5: ("396652009", "left ventricle basal inferolateral segment"),
        6: ("396654005", "left ventricle basal anterolateral segment"),
        7: ("264848000", "left ventricle mid anterior segment"),
        8: ("396647004", "left ventricle mid anteroseptal segment"),
        9: ("396649001", "left ventricle mid inferoseptal segment"),
        10: ("264847005", "left ventricle mid inferior segment"),
        11: ("396655006", "left ventricle mid inferolateral segment"),
        12: ("396656007", "left ventricle mid anterolateral segment"),
        13: ("264844003", "left ventricle apical anterior segment"),
        14: ("264845002", "left ventricle apical septal segment"),
        15: ("264849008", "left ventricle apical inferior segment"),
        16: ("264853005", "left ventricle apical lateral segment"),
    }.items()
}

#: Motion artefact findings: CID 6316 "MR Imaging Artifact" with CID 240 "Present-Absent".
MOTION_ARTEFACT = CodedConcept.from_code(codes.RADLEX.MotionRelatedArtifact)  # (RID11423, RADLEX)
PRESENT = CodedConcept.from_code(codes.SCT.Present)  # (52101004, SCT)
ABSENT = CodedConcept.from_code(codes.SCT.Absent)  # (272519000, SCT)

# --- Private codes (no standard code exists); listed in docs/conformance.md, section 5 -----------------------------

#: Coding scheme of the private codes; "99" marks a private scheme (PS3.16 section 8).
PRIVATE_SCHEME = "99MYOMAP"
PRIVATE_SCHEME_NAME = "myomap private codes"
PRIVATE_SCHEME_ORGANIZATION = "myomap"


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


PREDICTED_DICE = _private("QC-DICE", "Predicted myocardium Dice similarity coefficient")
MOTION_PROBABILITY = _private("MOTION-PROB", "Motion artefact probability")
DICE = _private("DICE", "Dice similarity coefficient")
HAUSDORFF_DISTANCE = _private("HAUSDORFF", "Hausdorff distance")
MEAN_SURFACE_DISTANCE = _private("MSD", "Mean surface distance")
MAP_DIFFERENCE = _private("MAP-DIFF", "Myocardial map value difference")
WALL_THICKNESS_DIFFERENCE = _private("WT-DIFF", "Mean wall thickness difference")
CONTOUR_ERROR_MODE = _private("ERROR-MODE", "Contouring error mode")
#: The node's reconstruction against the scanner's map of the same slice: median of (node - scanner) / scanner.
CROSS_CHECK_DIFFERENCE = _private("XCHECK-DIFF", "Median difference of the reconstruction from the scanner map")
#: The T1 estimate the report does not give as its primary value (see dicomnode.analysis.map_sources).
SECOND_T1_ESTIMATE = _private("T1-SECOND", "Second T1 estimate")
UNIT_PERCENT = CodedConcept("%", "UCUM", "percent")
#: Values of CONTOUR_ERROR_MODE, keyed by inference.trainee_scoring.ErrorMode values.
ERROR_MODES: dict[str, CodedConcept] = {
    "good": _private("EM-GOOD", "No contouring error"),
    "shifted": _private("EM-SHIFTED", "Both borders shifted"),
    "epicardial_fat": _private("EM-EPI-FAT", "Epicardial fat included"),
    "blood_pool": _private("EM-BLOOD-POOL", "Blood pool included"),
    "papillary": _private("EM-PAPILLARY", "Papillary muscles included"),
    "too_smooth": _private("EM-TOO-SMOOTH", "Borders too smooth"),
    "jagged": _private("EM-JAGGED", "Borders jagged"),
    "part_missed": _private("EM-PART-MISSED", "Part of the wall missed"),
}


def private_coding_scheme() -> Dataset:
    """An item of CodingSchemeIdentificationSequence (0008,0110) that describes the private scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME_ORGANIZATION
    return item
