"""Raw magnitude and phase series as a scanner writes them: classic single-frame MR or Enhanced MR multi-frame.

Pixel encoding (also in docs/phantom.md, "File layout"):

- magnitude: uint16, one scale factor per series so that the brightest pixel of the series is 65535; relative
  intensities between the images of a series are kept, so fits on the stored values are valid. No rescale.
- phase: uint16, ``stored = floor((phase_rad + pi) * 65536 / (2 pi))``; RescaleSlope ``2 pi / 65536`` and
  RescaleIntercept ``-pi`` give radians in [-pi, pi).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from phantom.identity import StudyContext, dicom_time
from phantom.model import AcquiredSeries, SequenceKind, SliceGeometry

LOGGER = logging.getLogger(__name__)

PHASE_LEVELS = 65536
PHASE_RESCALE_SLOPE = 2.0 * math.pi / PHASE_LEVELS
PHASE_RESCALE_INTERCEPT = -math.pi
MAGNITUDE_FULL_SCALE = 65535
_LARMOR_MHZ_PER_T = 42.577478  # proton gyromagnetic ratio / 2 pi


class ImagePart(str, Enum):
    """Which component of the complex image a series holds (ImageType value 3)."""

    MAGNITUDE = "M"
    PHASE = "P"


class GeComponent(IntEnum):
    """GE's private image type (0043,102F): which component of the complex image an image holds."""

    MAGNITUDE = 0
    PHASE = 1
    REAL = 2
    IMAGINARY = 3


#: The order of the components of one TI in a GE mixed series.
GE_COMPONENTS = (GeComponent.MAGNITUDE, GeComponent.PHASE, GeComponent.REAL, GeComponent.IMAGINARY)
GE_PRIVATE_CREATOR = "GEMS_PARM_01"
GE_PRIVATE_CREATOR_TAG = (0x0043, 0x0010)
GE_IMAGE_TYPE_TAG = (0x0043, 0x102F)
#: Real and imaginary images: the largest magnitude of the series is stored as this (int16).
GE_SIGNED_FULL_SCALE = 32767.0


@dataclass(frozen=True)
class SeriesInfo:
    """Identification of one series within a study."""

    series_instance_uid: str
    series_number: int
    series_description: str
    protocol_name: str
    start_offset_s: float  # start of the series after StudyTime


class PixelEncodingError(ValueError):
    """Raised when an array cannot be stored with the encoding asked for."""


def encode_magnitude(magnitude: np.ndarray) -> np.ndarray:
    """Scale a series of magnitude images to uint16 with one factor, brightest pixel 65535.

    Raises
    ------
    PixelEncodingError
        If the series holds negative, non-finite or only zero values.
    """
    values = np.asarray(magnitude, dtype=np.float64)
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise PixelEncodingError(f"magnitude must be finite and >= 0, got min {np.nanmin(values)}")
    peak = float(values.max())
    if peak <= 0:
        raise PixelEncodingError("magnitude series is all zero; expected some signal")
    return np.rint(values * (MAGNITUDE_FULL_SCALE / peak)).astype(np.uint16)


def encode_phase(phase_rad: np.ndarray) -> np.ndarray:
    """Map phases in [-pi, pi) to uint16 (see the module docstring for the rescale)."""
    values = np.asarray(phase_rad, dtype=np.float64)
    wrapped = np.mod(values + math.pi, 2.0 * math.pi)
    return np.minimum(np.floor(wrapped / PHASE_RESCALE_SLOPE), PHASE_LEVELS - 1).astype(np.uint16)


def decode_phase(stored: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_phase`, to the lower edge of each quantisation step."""
    return stored.astype(np.float64) * PHASE_RESCALE_SLOPE + PHASE_RESCALE_INTERCEPT


def new_dataset(sop_class_uid: str, sop_instance_uid: str, context: StudyContext) -> Dataset:
    """A dataset with file meta, SOP Common, Patient, General Study and General Equipment filled in."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)  # UID: what pydicom would convert the str to anyway
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    apply_patient_study(ds, context)
    return ds


def apply_patient_study(ds: Dataset, context: StudyContext) -> None:
    """Set the Patient, General Study, Patient Study and General Equipment attributes of ``ds``."""
    patient = context.patient
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = patient.age
    ds.PatientSize = f"{patient.height_m:.2f}"
    ds.PatientWeight = f"{patient.weight_kg:.1f}"
    ds.StudyInstanceUID = context.study_instance_uid
    ds.StudyDate = patient.study_date
    ds.StudyTime = patient.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = patient.study_id
    ds.AccessionNumber = patient.accession_number
    ds.StudyDescription = context.study_description
    ds.Manufacturer = context.flavour.manufacturer
    ds.ManufacturerModelName = context.flavour.model_name(context.field)
    ds.DeviceSerialNumber = context.device_serial_number
    ds.SoftwareVersions = context.flavour.software_versions
    ds.StationName = context.flavour.station_name
    ds.InstitutionName = context.flavour.institution_name


def apply_series(ds: Dataset, context: StudyContext, series: SeriesInfo) -> None:
    """General Series and Frame of Reference attributes."""
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.series_description
    ds.ProtocolName = series.protocol_name
    ds.SeriesDate = context.patient.study_date
    ds.SeriesTime = dicom_time(context.patient.study_time, series.start_offset_s)
    if context.body_part:
        ds.BodyPartExamined = context.body_part
    elif ds.get("SOPClassUID") != EnhancedMRImageStorage:  # Enhanced MR says it per frame (FrameLaterality)
        ds.Laterality = None  # Type 2C: without a body part, the series must say (empty: not paired)
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = context.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""


def apply_plane(ds: Dataset, geometry: SliceGeometry) -> None:
    """Image Plane attributes of a classic single-frame image."""
    ds.PixelSpacing = [f"{value:.6g}" for value in geometry.pixel_spacing_mm]
    ds.SliceThickness = f"{geometry.slice_thickness_mm:.6g}"
    ds.ImageOrientationPatient = [f"{value:.8f}" for value in geometry.image_orientation_patient]
    ds.ImagePositionPatient = [f"{value:.6f}" for value in geometry.image_position_patient_mm]
    ds.SliceLocation = f"{geometry.slice_location_mm:.6f}"


def apply_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Image Pixel attributes for uint16 monochrome pixels (single frame or multi-frame)."""
    array = np.ascontiguousarray(pixels, dtype=np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(array.shape[-2]), int(array.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = array.astype("<u2").tobytes()


def window_for(pixels: np.ndarray) -> tuple[float, float]:
    """WindowCenter and WindowWidth covering the 1st-99th percentile of ``pixels``."""
    low, high = np.percentile(pixels, [1.0, 99.0])
    width = max(float(high - low), 1.0)
    return float(np.round((low + high) / 2.0)), float(np.round(width))


def _is_inversion_recovery(kind: SequenceKind) -> bool:
    return kind is not SequenceKind.T2PREP


def image_comment(series: AcquiredSeries, index: int, writes_inversion_time: bool) -> str | None:
    """ImageComments of one raw image: the effective TI (vendors without InversionTime) or the T2-prep time."""
    if series.t2_prep_ms is not None:
        return f"T2prep {float(series.t2_prep_ms[index]):.0f} ms"
    if series.inversion_times_ms is not None and not writes_inversion_time:
        return f"TIeff {float(series.inversion_times_ms[index]):.0f} ms"
    return None


def _apply_mr_acquisition(ds: Dataset, acquired: AcquiredSeries, context: StudyContext, columns: int) -> None:
    """Acquisition attributes shared by every image of a classic raw series."""
    inversion = _is_inversion_recovery(acquired.sequence)
    ds.ScanningSequence = ["GR", "IR"] if inversion else "GR"
    ds.SequenceVariant = ["SK", "SS", "MP"] if inversion else ["SK", "SS"]
    ds.ScanOptions = "CG"  # cardiac gating: TriggerTime applies
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = context.flavour.sequence_name(acquired.sequence, columns)
    ds.AngioFlag = "N"
    ds.RepetitionTime = f"{acquired.repetition_time_ms:.4g}"
    ds.EchoTime = f"{acquired.echo_time_ms:.4g}"
    ds.EchoTrainLength = 1
    ds.NumberOfAverages = 1
    ds.ImagingFrequency = f"{_LARMOR_MHZ_PER_T * context.field.tesla:.6f}"
    ds.ImagedNucleus = "1H"
    if context.writes_field_strength:
        ds.MagneticFieldStrength = context.field.value
    else:  # the header says nothing of the field, not even through the Larmor frequency
        del ds.ImagingFrequency
    ds.FlipAngle = f"{acquired.flip_angle_deg:.4g}"
    ds.NominalInterval = f"{acquired.rr_ms:.0f}"
    ds.HeartRate = f"{60000.0 / acquired.rr_ms:.0f}"
    ds.CardiacNumberOfImages = int(acquired.magnitude.shape[0])
    ds.ImagesInAcquisition = int(acquired.magnitude.shape[0])
    ds.NumberOfTemporalPositions = int(acquired.magnitude.shape[0])
    ds.BeatRejectionFlag = "N"
    ds.TransmitCoilName = "Body"
    ds.ReceiveCoilName = "Body18"
    ds.PatientPosition = "HFS"


def build_classic_series(
    acquired: AcquiredSeries,
    geometry: SliceGeometry,
    context: StudyContext,
    series: SeriesInfo,
    part: ImagePart,
    sop_instance_uids: Sequence[str],
    *,
    image_indices: Sequence[int] | None = None,
) -> list[Dataset]:
    """Single-frame MR Image instances of one raw series, InstanceNumber in acquisition order.

    Parameters
    ----------
    acquired
        The simulated images, in acquisition order.
    geometry
        Slice geometry shared by every image.
    context
        Study-wide identification.
    series
        Series identification.
    part
        Magnitude or phase.
    sop_instance_uids
        One UID per image of the series.
    image_indices
        The images (acquisition-order indices) this series holds; all when None. Pixels are scaled over all
        images of ``acquired`` either way, so series that split one acquisition (one series per TI) keep the
        ratios between their images.

    Raises
    ------
    ValueError
        If the number of UIDs does not match the number of images.
    """
    indices = _indices(acquired, image_indices)
    if len(sop_instance_uids) != len(indices):
        raise ValueError(f"need {len(indices)} SOP Instance UIDs, got {len(sop_instance_uids)}")
    stored = encode_magnitude(acquired.magnitude) if part is ImagePart.MAGNITUDE else encode_phase(acquired.phase_rad)
    center, width = window_for(stored) if part is ImagePart.MAGNITUDE else (32768.0, 65536.0)
    datasets = []
    for number, index in enumerate(indices, start=1):
        ds = _classic_image(acquired, geometry, context, series, index, sop_instance_uids[number - 1], number,
                            len(indices))
        ds.ImageType = ["ORIGINAL", "PRIMARY", part.value, "ND"]
        apply_pixels(ds, stored[index])
        ds.WindowCenter = f"{center:.0f}"
        ds.WindowWidth = f"{width:.0f}"
        if part is ImagePart.PHASE:
            ds.RescaleIntercept = f"{PHASE_RESCALE_INTERCEPT:.10f}"
            ds.RescaleSlope = f"{PHASE_RESCALE_SLOPE:.10e}"
            ds.RescaleType = "RAD"
        datasets.append(ds)
    LOGGER.debug("classic %s series %s: %d images", part.name.lower(), series.series_instance_uid, len(indices))
    return datasets


def build_ge_mixed_series(
    acquired: AcquiredSeries,
    geometry: SliceGeometry,
    context: StudyContext,
    series: SeriesInfo,
    sop_instance_uids: Sequence[str],
    *,
    image_indices: Sequence[int] | None = None,
) -> list[Dataset]:
    """A GE raw series that holds the magnitude, phase, real and imaginary image of every TI (or T2-prep time).

    The component is marked only by GE's private image type (0043,102F) in block ``GEMS_PARM_01`` (0 magnitude,
    1 phase, 2 real, 3 imaginary); ImageType is ``ORIGINAL\\PRIMARY\\OTHER`` for all. Magnitude is uint16 as in
    :func:`build_classic_series`; phase int16 in milliradians; real and imaginary int16 with one scale over the
    series (the largest magnitude is 32767), so they hold negative values. No rescale. Instances follow
    acquisition order, each TI's four components together (magnitude, phase, real, imaginary).

    Parameters
    ----------
    sop_instance_uids
        Four UIDs per image (its magnitude, phase, real and imaginary instance).
    image_indices
        As :func:`build_classic_series`.

    Raises
    ------
    ValueError
        If the number of UIDs is not four per image.
    """
    indices = _indices(acquired, image_indices)
    if len(sop_instance_uids) != len(GE_COMPONENTS) * len(indices):
        raise ValueError(f"need {len(GE_COMPONENTS) * len(indices)} SOP Instance UIDs, got {len(sop_instance_uids)}")
    magnitude = encode_magnitude(acquired.magnitude)
    center, width = window_for(magnitude)
    values = np.asarray(acquired.magnitude, dtype=np.float64)
    phase = np.asarray(acquired.phase_rad, dtype=np.float64)
    scale = GE_SIGNED_FULL_SCALE / float(values.max())
    signed = {
        GeComponent.PHASE: np.rint(phase * 1000.0),
        GeComponent.REAL: np.rint(values * np.cos(phase) * scale),
        GeComponent.IMAGINARY: np.rint(values * np.sin(phase) * scale),
    }
    datasets = []
    n_instances = len(sop_instance_uids)
    for position, index in enumerate(indices):
        for offset, component in enumerate(GE_COMPONENTS):
            number = position * len(GE_COMPONENTS) + offset + 1
            ds = _classic_image(acquired, geometry, context, series, index, sop_instance_uids[number - 1], number,
                                n_instances)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.add_new(GE_PRIVATE_CREATOR_TAG, "LO", GE_PRIVATE_CREATOR)
            ds.add_new(GE_IMAGE_TYPE_TAG, "SS", int(component))
            if component is GeComponent.MAGNITUDE:
                apply_pixels(ds, magnitude[index])
                ds.WindowCenter, ds.WindowWidth = f"{center:.0f}", f"{width:.0f}"
            else:
                apply_signed_pixels(ds, signed[component][index])
                low, high = (-3142.0, 3142.0) if component is GeComponent.PHASE else (-GE_SIGNED_FULL_SCALE,
                                                                                        GE_SIGNED_FULL_SCALE)
                ds.WindowCenter, ds.WindowWidth = f"{(low + high) / 2:.0f}", f"{high - low:.0f}"
            datasets.append(ds)
    LOGGER.debug("GE mixed series %s: %d instances", series.series_instance_uid, len(datasets))
    return datasets


def _indices(acquired: AcquiredSeries, image_indices: Sequence[int] | None) -> list[int]:
    n_images = int(acquired.magnitude.shape[0])
    indices = list(range(n_images)) if image_indices is None else [int(i) for i in image_indices]
    if not indices or any(not 0 <= index < n_images for index in indices):
        raise ValueError(f"image_indices must be non-empty and within 0-{n_images - 1}, got {image_indices}")
    return indices


def _classic_image(acquired: AcquiredSeries, geometry: SliceGeometry, context: StudyContext, series: SeriesInfo,
                   index: int, sop_instance_uid: str, instance_number: int, instances_in_series: int) -> Dataset:
    """One classic raw image without its pixels and ImageType: identity, timing and acquisition attributes."""
    flavour = context.flavour
    ds = new_dataset(MRImageStorage, sop_instance_uid, context)
    apply_series(ds, context, series)
    acquisition_time = dicom_time(
        context.patient.study_time, series.start_offset_s + float(acquired.acquisition_times_s[index])
    )
    ds.InstanceCreationDate = context.patient.study_date
    ds.InstanceCreationTime = dicom_time(context.patient.study_time, series.start_offset_s + 20.0)
    ds.AcquisitionDate = context.patient.study_date
    ds.AcquisitionTime = acquisition_time
    ds.ContentDate = context.patient.study_date
    ds.ContentTime = acquisition_time
    ds.InstanceNumber = instance_number
    ds.AcquisitionNumber = 1
    ds.TemporalPositionIdentifier = index + 1
    _apply_mr_acquisition(ds, acquired, context, geometry.columns)
    ds.ImagesInAcquisition = instances_in_series
    if acquired.inversion_times_ms is not None:
        ds.InversionTime = (
            f"{float(acquired.inversion_times_ms[index]):.4g}" if flavour.writes_inversion_time else None
        )
    ds.TriggerTime = f"{float(acquired.trigger_times_ms[index]):.4g}"
    comment = image_comment(acquired, index, flavour.writes_inversion_time)
    if comment is not None:
        ds.ImageComments = comment
    apply_plane(ds, geometry)
    return ds


def apply_signed_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Image Pixel attributes for int16 monochrome pixels (PixelRepresentation 1); values clipped to int16."""
    array = np.ascontiguousarray(np.clip(pixels, -32768, 32767), dtype=np.int16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(array.shape[-2]), int(array.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = array.astype("<i2").tobytes()


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _single(item: Dataset) -> DicomSequence:
    return DicomSequence([item])


def _enhanced_shared_groups(
    acquired: AcquiredSeries, geometry: SliceGeometry, part: ImagePart, field_tesla: float
) -> Dataset:
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{value:.6g}" for value in geometry.pixel_spacing_mm]
    measures.SliceThickness = f"{geometry.slice_thickness_mm:.6g}"
    shared.PixelMeasuresSequence = _single(measures)
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{value:.8f}" for value in geometry.image_orientation_patient]
    shared.PlaneOrientationSequence = _single(orientation)
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = _single(_code_item("80891009", "SCT", "Heart"))
    anatomy.FrameLaterality = "U"
    shared.FrameAnatomySequence = _single(anatomy)
    timing = Dataset()
    timing.RepetitionTime = acquired.repetition_time_ms
    timing.FlipAngle = acquired.flip_angle_deg
    timing.EchoTrainLength = 1
    timing.RFEchoTrainLength = 1
    timing.GradientEchoTrainLength = 1
    timing.GradientOutputType = "DB_DT"
    timing.GradientOutput = 0.0
    sar = Dataset()
    sar.SpecificAbsorptionRateDefinition = "IEC_WHOLE_BODY"
    sar.SpecificAbsorptionRateValue = 1.5
    timing.SpecificAbsorptionRateSequence = _single(sar)
    modes = []
    for mode_type in ("STATIC FIELD", "RF", "GRADIENT"):
        mode = Dataset()
        mode.OperatingModeType = mode_type
        mode.OperatingMode = "IEC_NORMAL"
        modes.append(mode)
    timing.OperatingModeSequence = DicomSequence(modes)
    shared.MRTimingAndRelatedParametersSequence = _single(timing)
    fov = Dataset()
    fov.InPlanePhaseEncodingDirection = "ROW"
    fov.MRAcquisitionFrequencyEncodingSteps = geometry.columns
    fov.MRAcquisitionPhaseEncodingStepsInPlane = geometry.rows
    fov.PercentSampling = 100.0
    fov.PercentPhaseFieldOfView = round(
        100.0 * geometry.rows * geometry.pixel_spacing_mm[0] / (geometry.columns * geometry.pixel_spacing_mm[1]), 4
    )
    shared.MRFOVGeometrySequence = _single(fov)
    echo = Dataset()
    echo.EffectiveEchoTime = acquired.echo_time_ms
    shared.MREchoSequence = _single(echo)
    imaging = Dataset()
    imaging.PixelBandwidth = 930.0
    imaging.MagnetizationTransfer = "NONE"
    imaging.BloodSignalNulling = "NO"
    imaging.Tagging = "NONE"
    imaging.TransmitterFrequency = round(_LARMOR_MHZ_PER_T * field_tesla, 6)
    shared.MRImagingModifierSequence = _single(imaging)
    receive = Dataset()
    receive.ReceiveCoilName = "Body18"
    receive.ReceiveCoilManufacturerName = ""
    receive.ReceiveCoilType = "MULTICOIL"
    receive.QuadratureReceiveCoil = "NO"
    element = Dataset()
    element.MultiCoilElementName = "B1"
    element.MultiCoilElementUsed = "YES"
    receive.MultiCoilDefinitionSequence = _single(element)
    shared.MRReceiveCoilSequence = _single(receive)
    transmit = Dataset()
    transmit.TransmitCoilName = "Body"
    transmit.TransmitCoilManufacturerName = ""
    transmit.TransmitCoilType = "BODY"
    shared.MRTransmitCoilSequence = _single(transmit)
    averages = Dataset()
    averages.NumberOfAverages = 1
    shared.MRAveragesSequence = _single(averages)
    transformation = Dataset()
    if part is ImagePart.PHASE:
        transformation.RescaleIntercept = f"{PHASE_RESCALE_INTERCEPT:.10f}"
        transformation.RescaleSlope = f"{PHASE_RESCALE_SLOPE:.10e}"
        transformation.RescaleType = "RAD"
    else:
        transformation.RescaleIntercept = "0"
        transformation.RescaleSlope = "1"
        transformation.RescaleType = "US"
    shared.PixelValueTransformationSequence = _single(transformation)
    return shared


def _image_description(ds: Dataset, part: ImagePart, frame_type: Sequence[str]) -> None:
    ds.FrameType = list(frame_type)
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE" if part is ImagePart.MAGNITUDE else "PHASE"
    ds.AcquisitionContrast = "T1" if part is ImagePart.MAGNITUDE else "UNKNOWN"


def build_enhanced_series(
    acquired: AcquiredSeries,
    geometry: SliceGeometry,
    context: StudyContext,
    series: SeriesInfo,
    part: ImagePart,
    sop_instance_uid: str,
) -> Dataset:
    """One Enhanced MR Image multi-frame instance holding every image of a raw series, frames in acquisition order.

    Each frame carries its plane position, trigger delay (Cardiac Synchronization), InversionTimes or the T2
    preparation (MR Modifier) and its acquisition time (Frame Content); the dimension is the temporal position.
    """
    n_frames = int(acquired.magnitude.shape[0])
    stored = encode_magnitude(acquired.magnitude) if part is ImagePart.MAGNITUDE else encode_phase(acquired.phase_rad)
    inversion = _is_inversion_recovery(acquired.sequence)
    date = context.patient.study_date
    ds = new_dataset(EnhancedMRImageStorage, sop_instance_uid, context)
    apply_series(ds, context, series)
    image_type = ["ORIGINAL", "PRIMARY", "CARDIAC_GATED", "NONE"]
    ds.ImageType = image_type
    _image_description(ds, part, image_type)
    del ds.FrameType
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.ContentDate = date
    ds.ContentTime = dicom_time(context.patient.study_time, series.start_offset_s)
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = dicom_time(context.patient.study_time, series.start_offset_s + 20.0)
    ds.AcquisitionDateTime = date + dicom_time(context.patient.study_time, series.start_offset_s)
    duration_s = float(acquired.acquisition_times_s[-1] - acquired.acquisition_times_s[0]) + acquired.rr_ms / 1000.0
    ds.AcquisitionDuration = round(duration_s, 3)
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = context.field.value
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = DicomSequence([])
    # MR Pulse Sequence module
    ds.PulseSequenceName = context.flavour.sequence_name(acquired.sequence, geometry.columns)
    ds.MRAcquisitionType = "2D"
    ds.EchoPulseSequence = "GRADIENT"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "FREE_PRECESSION"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.NumberOfKSpaceTrajectories = 1
    # Cardiac Synchronization module
    ds.CardiacSynchronizationTechnique = "PROSPECTIVE"
    ds.CardiacSignalSource = "ECG"
    ds.CardiacRRIntervalSpecified = round(acquired.rr_ms, 1)
    ds.CardiacBeatRejectionTechnique = "NONE"
    ds.LowRRValue = int(acquired.rr_ms * 0.8)
    ds.HighRRValue = int(acquired.rr_ms * 1.2)
    ds.IntervalsAcquired = n_frames
    ds.IntervalsRejected = 0
    ds.SkipBeats = 0
    ds.CardiacFramingType = "FORW"
    # Multi-frame Dimension module: one dimension, the temporal position (acquisition order)
    dimension_uid = context.uids.uid("dimension", series.series_instance_uid)
    organization = Dataset()
    organization.DimensionOrganizationUID = dimension_uid
    ds.DimensionOrganizationSequence = _single(organization)
    ds.DimensionOrganizationType = "3D_TEMPORAL"
    index = Dataset()
    index.DimensionOrganizationUID = dimension_uid
    index.DimensionIndexPointer = 0x00209128
    index.FunctionalGroupPointer = 0x00209111
    index.DimensionDescriptionLabel = "Temporal Position"
    ds.DimensionIndexSequence = _single(index)
    ds.SharedFunctionalGroupsSequence = _single(
        _enhanced_shared_groups(acquired, geometry, part, context.field.tesla)
    )
    frames = []
    for frame in range(n_frames):
        group = Dataset()
        offset_s = series.start_offset_s + float(acquired.acquisition_times_s[frame])
        content = Dataset()
        content.FrameAcquisitionNumber = frame + 1
        content.FrameReferenceDateTime = date + dicom_time(context.patient.study_time, offset_s)
        content.FrameAcquisitionDateTime = date + dicom_time(context.patient.study_time, offset_s)
        content.FrameAcquisitionDuration = round(acquired.repetition_time_ms * geometry.rows / 2.0, 1)
        content.CardiacCyclePosition = "END_DIASTOLE"
        content.TemporalPositionIndex = frame + 1
        content.DimensionIndexValues = [frame + 1]
        group.FrameContentSequence = _single(content)
        position = Dataset()
        position.ImagePositionPatient = [f"{value:.6f}" for value in geometry.image_position_patient_mm]
        group.PlanePositionSequence = _single(position)
        cardiac = Dataset()
        trigger_ms = float(acquired.trigger_times_ms[frame])
        cardiac.NominalPercentageOfCardiacPhase = round(100.0 * trigger_ms / acquired.rr_ms, 2)
        cardiac.NominalCardiacTriggerDelayTime = round(trigger_ms, 2)
        cardiac.ActualCardiacTriggerDelayTime = round(trigger_ms, 2)
        cardiac.IntervalsAcquired = 1
        cardiac.IntervalsRejected = 0
        cardiac.RRIntervalTimeNominal = round(acquired.rr_ms, 1)
        group.CardiacSynchronizationSequence = _single(cardiac)
        modifier = Dataset()
        modifier.InversionRecovery = "YES" if inversion else "NO"
        if inversion and acquired.inversion_times_ms is not None:
            modifier.InversionTimes = [round(float(acquired.inversion_times_ms[frame]), 2)]
        modifier.T2Preparation = "NO" if inversion else "YES"
        modifier.FlowCompensation = "NONE"
        modifier.Spoiling = "NONE"
        modifier.SpectrallySelectedExcitation = "NONE"
        modifier.SpatialPresaturation = "NONE"
        modifier.PartialFourier = "NO"
        modifier.ParallelAcquisition = "NO"
        group.MRModifierSequence = _single(modifier)
        frame_type = Dataset()
        _image_description(frame_type, part, image_type)
        group.MRImageFrameTypeSequence = _single(frame_type)
        comment = image_comment(acquired, frame, context.flavour.writes_inversion_time)
        if comment is not None:
            group.FrameContentSequence[0].FrameComments = comment
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.NumberOfFrames = n_frames
    apply_pixels(ds, stored)
    if part is ImagePart.MAGNITUDE:
        center, width = window_for(stored)
        ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence = _single(_voi(center, width))
    LOGGER.debug("enhanced %s series %s: %d frames", part.name.lower(), series.series_instance_uid, n_frames)
    return ds


def _voi(center: float, width: float) -> Dataset:
    item = Dataset()
    item.WindowCenter = f"{center:.0f}"
    item.WindowWidth = f"{width:.0f}"
    return item


def pin_generated_values(ds: Dataset, context: StudyContext, series: SeriesInfo) -> None:
    """Replace the wall-clock times and random UIDs a builder (highdicom) generated with the study's own.

    Dates and times become the study date and the series start; the dimension organisation UID is derived from
    the SOP Instance UID, so the same seed always gives the same bytes.
    """
    date = context.patient.study_date
    time = dicom_time(context.patient.study_time, series.start_offset_s)
    for keyword in ("ContentDate", "SeriesDate", "InstanceCreationDate"):
        if keyword in ds:
            setattr(ds, keyword, date)
    for keyword in ("ContentTime", "SeriesTime", "InstanceCreationTime"):
        if keyword in ds:
            setattr(ds, keyword, time)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time
    dimension_uid = context.uids.uid("dimension", ds.SOPInstanceUID)
    for keyword in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in ds.get(keyword, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = dimension_uid

