"""A reconstructed T1 or T2 map as an MR Image Storage instance, the form scanner consoles and PACS viewers show.

highdicom has no builder for the MR Image IOD, so the dataset is assembled here with pydicom, module by module
(PS3.3 A.4: Patient, General Study, Patient Study, General Series, Frame of Reference, General Equipment, General
Acquisition, General Image, Image Plane, Image Pixel, Contrast/Bolus, MR Image, VOI LUT, SOP Common). Pixels are
uint16 milliseconds, like the maps scanners write, with an identity rescale so that readers that apply one get
milliseconds as well.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage

from inference.mapping import MapKind

LOGGER = logging.getLogger(__name__)

def _installed_version() -> str:
    try:
        return importlib.metadata.version("myomap")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


#: Software version written into every map (General Equipment).
SOFTWARE_VERSION = _installed_version()

_UINT16_MAX = 65535
_MAP_IMAGE_TYPE = {MapKind.T1: "T1 MAP", MapKind.T2: "T2 MAP"}
_SERIES_SUFFIX = {MapKind.T1: "T1MAP", MapKind.T2: "T2MAP"}

_PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "StudyID", "AccessionNumber", "StudyDescription",
)
_TYPE_2_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
_ACQUISITION_KEYWORDS = (
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "SequenceName", "RepetitionTime",
    "EchoTime", "EchoTrainLength", "FlipAngle", "MagneticFieldStrength", "ImagedNucleus", "ImagingFrequency",
    "NumberOfAverages", "AcquisitionDate", "AcquisitionTime", "AcquisitionNumber", "HeartRate",
    "BodyPartExamined", "ProtocolName", "PatientPosition",
)
_CONTRAST_KEYWORDS = ("ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusVolume", "ContrastBolusIngredient")


@dataclass(frozen=True)
class DisplayWindow:
    """Window centre and width in ms for showing a map."""

    centre_ms: float
    width_ms: float


def display_window(kind: MapKind, field_strength_t: float | None) -> DisplayWindow:
    """A window that shows myocardium mid-grey and blood bright: native T1 is about 950-1000 ms at 1.5 T and
    1150-1250 ms at 3 T; T2 about 45-55 ms at either field."""
    kind = MapKind(kind)
    if kind is MapKind.T2:
        return DisplayWindow(centre_ms=60.0, width_ms=100.0)
    if field_strength_t is not None and field_strength_t >= 2.0:
        return DisplayWindow(centre_ms=1200.0, width_ms=1400.0)
    return DisplayWindow(centre_ms=1000.0, width_ms=1200.0)


def map_to_uint16(map_ms: np.ndarray) -> np.ndarray:
    """Round to whole ms and clip to 0..65535; NaN (no valid fit) becomes 0."""
    values = np.nan_to_num(np.asarray(map_ms, dtype=np.float64), nan=0.0, posinf=_UINT16_MAX, neginf=0.0)
    return np.clip(np.rint(values), 0, _UINT16_MAX).astype(np.uint16)


def build_mr_map(
    map_ms: np.ndarray,
    source_image: Dataset,
    kind: MapKind,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    series_description: str | None = None,
    derivation_description: str = "",
    further_source_images: Sequence[Dataset] = (),
    manufacturer: str = "myomap",
    manufacturer_model_name: str = "myomap",
    software_versions: str = SOFTWARE_VERSION,
) -> Dataset:
    """Build an MR Image Storage instance holding a T1 or T2 map in ms.

    Parameters
    ----------
    map_ms
        (Rows, Columns) map in ms of the source image's slice; NaN where there is no value.
    source_image
        An image of the raw series: geometry, patient, study and acquisition attributes are copied from it.
    kind
        T1 or T2.
    series_instance_uid, sop_instance_uid
        Identifiers of the new series and instance.
    series_number, instance_number
        Numbers of the new series (in the source's study) and instance.
    series_description
        Defaults to ``"MYOMAP T1MAP"`` or ``"MYOMAP T2MAP"``; must end with ``T1MAP`` / ``T2MAP``.
    derivation_description
        How the map was computed (e.g. ``"MOLLI 3-parameter + Look-Locker, 8 images"``).
    further_source_images
        Other images the map was computed from; referenced in SourceImageSequence with ``source_image``.
    manufacturer, manufacturer_model_name, software_versions
        The equipment that made the map.

    Returns
    -------
    pydicom.dataset.Dataset
        The instance, with file meta information, ready for ``save_as``.

    Raises
    ------
    TypeError
        If ``source_image`` is not a pydicom Dataset.
    ValueError
        If the map does not match the source's matrix, the source lacks geometry, or the series description does
        not end as the kind requires.
    """
    if not isinstance(source_image, Dataset):
        raise TypeError(f"source_image must be a pydicom Dataset, got {type(source_image).__name__}")
    kind = MapKind(kind)
    pixels = map_to_uint16(map_ms)
    rows, columns = int(source_image.Rows), int(source_image.Columns)
    if pixels.shape != (rows, columns):
        raise ValueError(f"map_ms must have the source's shape ({rows}, {columns}), got {pixels.shape}")
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "FrameOfReferenceUID"):
        if keyword not in source_image:
            raise ValueError(f"source_image must carry {keyword} to place the map, it has none")
    description = series_description or f"MYOMAP {_SERIES_SUFFIX[kind]}"
    if not description.endswith(_SERIES_SUFFIX[kind]) or len(description) > 64:
        raise ValueError(
            f"series_description must end with {_SERIES_SUFFIX[kind]!r} and fit in 64 characters, "
            f"got {description!r}"
        )

    now = datetime.datetime.now()
    ds = Dataset()
    if "SpecificCharacterSet" in source_image:
        ds.SpecificCharacterSet = source_image.SpecificCharacterSet
    # SOP Common
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient, General Study, Patient Study: copied so the map files into the source's study
    for keyword in _PATIENT_STUDY_KEYWORDS:
        if keyword in source_image:
            setattr(ds, keyword, source_image[keyword].value)
        elif keyword in _TYPE_2_KEYWORDS:
            setattr(ds, keyword, None)
    # General Series
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesTime = now.strftime("%H%M%S")
    ds.SeriesDescription = description
    # Laterality is for paired body parts only; the heart is not one
    if source_image.get("Laterality"):
        ds.Laterality = source_image.Laterality
    # Frame of Reference
    ds.FrameOfReferenceUID = source_image.FrameOfReferenceUID
    ds.PositionReferenceIndicator = source_image.get("PositionReferenceIndicator", None)
    # General Equipment
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = manufacturer_model_name
    ds.SoftwareVersions = software_versions
    # MR acquisition attributes of the raw series (General Acquisition, General Series, MR Image)
    for keyword in _ACQUISITION_KEYWORDS:
        if keyword in source_image:
            setattr(ds, keyword, source_image[keyword].value)
    _complete_mr_acquisition(ds)
    if not ds.get("BodyPartExamined"):
        ds.BodyPartExamined = "HEART"
    # Contrast/Bolus, only where the raw images were taken after contrast
    if source_image.get("ContrastBolusAgent"):
        for keyword in _CONTRAST_KEYWORDS:
            if keyword in source_image:
                setattr(ds, keyword, source_image[keyword].value)
    # General Image
    ds.InstanceNumber = instance_number
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "PRIMARY", _MAP_IMAGE_TYPE[kind]]
    ds.DerivationDescription = derivation_description[:1024] or f"{kind.value} map in ms"
    ds.SourceImageSequence = DicomSequence(
        [_reference(image) for image in unique_images([source_image, *further_source_images])]
    )
    ds.BurnedInAnnotation = "NO"
    # Image Plane
    ds.PixelSpacing = source_image.PixelSpacing
    ds.ImageOrientationPatient = source_image.ImageOrientationPatient
    ds.ImagePositionPatient = source_image.ImagePositionPatient
    ds.SliceThickness = source_image.get("SliceThickness", None)
    if "SliceLocation" in source_image:
        ds.SliceLocation = source_image.SliceLocation
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    # identity rescale: stored values are ms
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    # VOI LUT
    window = display_window(kind, field_strength_t(source_image))
    ds.WindowCenter = window.centre_ms
    ds.WindowWidth = window.width_ms
    ds.WindowCenterWidthExplanation = f"{kind.value} in ms"

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)  # what pydicom would convert the str to
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    LOGGER.debug("built %s map %s in series %s", kind.value, sop_instance_uid, series_instance_uid)
    return ds


def _complete_mr_acquisition(ds: Dataset) -> None:
    """Fill the MR Image module's type 1 and 2 attributes the source did not have."""
    if not ds.get("ScanningSequence"):
        ds.ScanningSequence = "GR"
    if not ds.get("SequenceVariant"):
        ds.SequenceVariant = "NONE"
    for keyword in ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength", "RepetitionTime",
                    "PatientPosition"):
        if keyword not in ds:
            setattr(ds, keyword, None)
    scan_options = ds.ScanOptions
    scan_options = [] if scan_options is None else [scan_options] if isinstance(scan_options, str) else scan_options
    if "TriggerTime" not in ds and {"CG", "PPG"} & set(scan_options):
        ds.TriggerTime = None  # type 2C for gated scans; a map spans the trigger times of all its images
    scanning = ds.ScanningSequence
    scanning = [scanning] if isinstance(scanning, str) else list(scanning)
    if "IR" in scanning:
        ds.InversionTime = None  # type 2C: a map is fitted over many inversion times, none is its own


def field_strength_t(source_image: Dataset) -> float | None:
    """MagneticFieldStrength in tesla, or None where absent or unreadable."""
    value = source_image.get("MagneticFieldStrength")
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def unique_images(images: Sequence[Dataset]) -> list[Dataset]:
    """``images`` without repeats of a SOP Instance UID, in their order."""
    seen: set[str] = set()
    unique = []
    for image in images:
        if image.SOPInstanceUID not in seen:
            seen.add(image.SOPInstanceUID)
            unique.append(image)
    return unique


def _reference(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def read_map_ms(dataset: Dataset) -> np.ndarray:
    """Map values in ms of an instance written by :func:`build_mr_map` (rescale applied)."""
    stored = dataset.pixel_array.astype(np.float64)
    return stored * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))


__all__ = [
    "SOFTWARE_VERSION", "DisplayWindow", "build_mr_map", "display_window", "field_strength_t", "map_to_uint16",
    "read_map_ms", "unique_images",
]
