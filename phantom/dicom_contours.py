"""Readers' contours as DICOM: a binary Segmentation (highdicom) and an RT Structure Set (pydicom) per reader.

Both reference the map the reader drew on by its SOP Instance UID. The SEG holds segment 1 "Myocardium" (the
reader's myocardium mask) and segment 2 "Left ventricle cavity" (the pixels whose centres lie inside the
endocardial contour, less the myocardium). The RTSTRUCT holds two CLOSED_PLANAR ROIs, "LV Endocardium" and
"LV Epicardium", in patient coordinates (mm) computed from the map's geometry.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import RTStructureSetStorage
from skimage.draw import polygon2mask

from phantom.dicom_images import SeriesInfo, new_dataset, pin_generated_values
from phantom.identity import StudyContext, dicom_time
from phantom.model import ReaderContour, SliceGeometry
from phantom.sidecar import PHANTOM_VERSION

LOGGER = logging.getLogger(__name__)

MYOCARDIUM_LABEL = "Myocardium"
CAVITY_LABEL = "Left ventricle cavity"
ENDO_ROI_NAME = "LV Endocardium"
EPI_ROI_NAME = "LV Epicardium"
PHANTOM_ALGORITHM_NAME = "myomap phantom"
_CONTOUR_DATA_TAG = Tag(0x3006, 0x0050)
_STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired), as RTSTRUCT expects


class ContourGeometryError(ValueError):
    """Raised when a contour or mask does not fit the image it is drawn on."""


def cavity_mask(endo_contour_px: np.ndarray, myocardium_mask: np.ndarray) -> np.ndarray:
    """Pixels whose centres lie inside the endocardial contour and outside the myocardium."""
    points = np.asarray(endo_contour_px, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 3:
        raise ContourGeometryError(f"endo contour must be (N >= 3, 2) points, got shape {points.shape}")
    inside = polygon2mask(myocardium_mask.shape, points[:, ::-1])
    return inside & ~myocardium_mask.astype(bool)


def pixel_to_patient(points_px: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """(N, 2) pixel (x = column, y = row) points to (N, 3) patient coordinates in mm."""
    points = np.asarray(points_px, dtype=np.float64)
    orientation = np.asarray(geometry.image_orientation_patient, dtype=np.float64)
    row_direction, column_direction = orientation[:3], orientation[3:]
    row_spacing_mm, column_spacing_mm = geometry.pixel_spacing_mm
    origin = np.asarray(geometry.image_position_patient_mm, dtype=np.float64)
    return (
        origin[np.newaxis]
        + points[:, :1] * column_spacing_mm * row_direction[np.newaxis]
        + points[:, 1:2] * row_spacing_mm * column_direction[np.newaxis]
    )


def patient_to_pixel(points_mm: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Inverse of :func:`pixel_to_patient` for points in the image plane: (N, 3) mm to (N, 2) (x, y)."""
    points = np.asarray(points_mm, dtype=np.float64) - np.asarray(geometry.image_position_patient_mm)
    orientation = np.asarray(geometry.image_orientation_patient, dtype=np.float64)
    row_spacing_mm, column_spacing_mm = geometry.pixel_spacing_mm
    x = points @ orientation[:3] / column_spacing_mm
    y = points @ orientation[3:] / row_spacing_mm
    return np.stack([x, y], axis=1)


def _segment(number: int, label: str, property_type: hd.sr.CodedConcept, algorithm: str) -> hd.seg.SegmentDescription:
    identification = None
    if algorithm == "AUTOMATIC":
        identification = hd.AlgorithmIdentificationSequence(
            name=PHANTOM_ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence, version="truth"
        )
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=property_type,
        algorithm_type=algorithm,
        algorithm_identification=identification,
    )


def build_reader_seg(
    reader: ReaderContour,
    map_dataset: Dataset,
    context: StudyContext,
    series: SeriesInfo,
    sop_instance_uid: str,
) -> hd.seg.Segmentation:
    """A BINARY Segmentation of one reader's myocardium and LV cavity on ``map_dataset``.

    Parameters
    ----------
    reader
        The reader's contours and myocardium mask.
    map_dataset
        The map the reader drew on (single-frame MR Image or a one-frame Parametric Map).
    context, series, sop_instance_uid
        Identification; ContentCreatorName is the reader's name.

    Raises
    ------
    ContourGeometryError
        If the mask's shape differs from the map's.
    """
    shape = (int(map_dataset.Rows), int(map_dataset.Columns))
    myocardium = np.asarray(reader.myocardium_mask, dtype=bool)
    if myocardium.shape != shape:
        raise ContourGeometryError(f"myocardium mask shape {myocardium.shape} differs from the map's {shape}")
    cavity = cavity_mask(reader.endo_contour_px, myocardium)
    algorithm = "AUTOMATIC" if reader.role == "truth" else "MANUAL"
    descriptions = [
        _segment(1, MYOCARDIUM_LABEL, hd.sr.CodedConcept("74281007", "SCT", "Myocardium"), algorithm),
        _segment(2, CAVITY_LABEL, hd.sr.CodedConcept("87878005", "SCT", "Left ventricle"), algorithm),
    ]
    pixels = np.stack([myocardium, cavity], axis=-1)[np.newaxis]
    with warnings.catch_warnings():
        # Reader names ("expert1") are single-component person names on purpose.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        seg = _segmentation(map_dataset, pixels, descriptions, context, series, sop_instance_uid, reader)
    seg.SeriesDescription = series.series_description
    pin_generated_values(seg, context, series)
    return seg


def _segmentation(map_dataset: Dataset, pixels: np.ndarray, descriptions: list[hd.seg.SegmentDescription],
                  context: StudyContext, series: SeriesInfo, sop_instance_uid: str,
                  reader: ReaderContour) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=[map_dataset],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="myomap",
        manufacturer_model_name="phantom readers",
        software_versions=PHANTOM_VERSION,
        device_serial_number=context.device_serial_number,
        content_description=f"{reader.role} contours",
        content_creator_name=reader.reader,
        content_label=_content_label(reader.reader),
        omit_empty_frames=False,
    )


def _content_label(name: str) -> str:
    """A CS-valid ContentLabel (upper case, digits, underscore) from a reader name."""
    cleaned = "".join(char if char.isalnum() else "_" for char in name.upper())
    return (cleaned or "READER")[:16]


def _contour_data_element(points_mm: np.ndarray) -> RawDataElement:
    """ContourData as an already-encoded DS element: thousands of values, formatted once, not one by one."""
    text = "\\".join(f"{value:.6f}" for value in np.asarray(points_mm, dtype=np.float64).ravel())
    if len(text) % 2:
        text += " "
    value = text.encode("ascii")
    return RawDataElement(_CONTOUR_DATA_TAG, "DS", len(value), value, 0, False, True)


def _image_reference(map_dataset: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = map_dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = map_dataset.SOPInstanceUID
    if int(getattr(map_dataset, "NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in map_dataset:
        item.ReferencedFrameNumber = 1
    return item


def build_reader_rtstruct(
    reader: ReaderContour,
    map_dataset: Dataset,
    geometry: SliceGeometry,
    context: StudyContext,
    series: SeriesInfo,
    sop_instance_uid: str,
) -> Dataset:
    """An RT Structure Set with the reader's endocardial and epicardial contours (CLOSED_PLANAR, mm).

    StructureSetLabel, OperatorsName and ROIInterpreter carry the reader's name.

    Raises
    ------
    ContourGeometryError
        If a contour has fewer than three points.
    """
    ds = new_dataset(RTStructureSetStorage, sop_instance_uid, context)
    date = context.patient.study_date
    time = dicom_time(context.patient.study_time, series.start_offset_s)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.series_description
    ds.SeriesDate = date
    ds.SeriesTime = time
    ds.OperatorsName = reader.reader
    ds.FrameOfReferenceUID = context.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.StructureSetLabel = reader.reader[:16]
    ds.StructureSetName = f"{reader.role} {reader.reader}"[:64]
    ds.StructureSetDescription = f"LV endocardial and epicardial contours drawn by {reader.reader} ({reader.role})"
    ds.StructureSetDate = date
    ds.StructureSetTime = time

    contour_image = _image_reference(map_dataset)
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = map_dataset.SeriesInstanceUID
    referenced_series.ContourImageSequence = DicomSequence([contour_image])
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = _STUDY_COMPONENT_SOP_CLASS
    referenced_study.ReferencedSOPInstanceUID = context.study_instance_uid
    referenced_study.RTReferencedSeriesSequence = DicomSequence([referenced_series])
    frame_of_reference = Dataset()
    frame_of_reference.FrameOfReferenceUID = context.frame_of_reference_uid
    frame_of_reference.RTReferencedStudySequence = DicomSequence([referenced_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame_of_reference])

    rois, contours, observations = [], [], []
    roi_specs: Sequence[tuple[str, np.ndarray, str, tuple[int, int, int]]] = (
        (ENDO_ROI_NAME, reader.endo_contour_px, "CAVITY", (255, 64, 64)),
        (EPI_ROI_NAME, reader.epi_contour_px, "ORGAN", (64, 200, 64)),
    )
    for number, (name, points_px, interpreted_type, colour) in enumerate(roi_specs, start=1):
        points = np.asarray(points_px, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 3:
            raise ContourGeometryError(f"{name} contour must be (N >= 3, 2) points, got shape {points.shape}")
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = context.frame_of_reference_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC" if reader.role == "truth" else "MANUAL"
        rois.append(roi)
        contour = Dataset()
        contour.ContourImageSequence = DicomSequence([_image_reference(map_dataset)])
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = int(points.shape[0])
        contour.ContourNumber = 1
        contour[_CONTOUR_DATA_TAG] = _contour_data_element(pixel_to_patient(points, geometry))
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = list(colour)
        roi_contour.ContourSequence = DicomSequence([contour])
        contours.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = interpreted_type
        observation.ROIInterpreter = reader.reader
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    ds.ApprovalStatus = "UNAPPROVED"
    LOGGER.debug("RTSTRUCT %s of %s", sop_instance_uid, reader.role)
    return ds


def read_seg_masks(seg: Dataset) -> dict[str, np.ndarray]:
    """Masks of a BINARY Segmentation by segment label, (rows, columns) bool each (one-frame SEGs)."""
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    labels = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    masks = {label: np.zeros(frames.shape[1:], dtype=bool) for label in labels.values()}
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        masks[labels[number]] |= frame.astype(bool)
    return masks


def read_rtstruct_contours(rtstruct: Dataset, geometry: SliceGeometry) -> dict[str, np.ndarray]:
    """Contours of an RT Structure Set by ROI name, as (N, 2) pixel (x, y) points on ``geometry``."""
    names = {int(item.ROINumber): str(item.ROIName) for item in rtstruct.StructureSetROISequence}
    contours = {}
    for roi_contour in rtstruct.ROIContourSequence:
        data = np.asarray([float(value) for value in roi_contour.ContourSequence[0].ContourData]).reshape(-1, 3)
        contours[names[int(roi_contour.ReferencedROINumber)]] = patient_to_pixel(data, geometry)
    return contours
