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
from collections.abc import Mapping, Sequence
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
# Where an Enhanced MR image (PS3.3 C.8.13) keeps what a classic MR image has at the top level: (functional group
# sequence, keyword in it, classic keyword).
_FRAME_GEOMETRY = (
    ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness", "SliceThickness"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", "ImageOrientationPatient"),
    ("PlanePositionSequence", "ImagePositionPatient", "ImagePositionPatient"),
)
_FRAME_ACQUISITION = (
    ("MRTimingAndRelatedParametersSequence", "RepetitionTime", "RepetitionTime"),
    ("MRTimingAndRelatedParametersSequence", "FlipAngle", "FlipAngle"),
    ("MRTimingAndRelatedParametersSequence", "EchoTrainLength", "EchoTrainLength"),
    ("MREchoSequence", "EffectiveEchoTime", "EchoTime"),
    ("MRAveragesSequence", "NumberOfAverages", "NumberOfAverages"),
)


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
    frame_number: int = 1,
    referenced_frame_numbers: Mapping[str, Sequence[int]] | None = None,
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
    frame_number
        1-based frame of a multi-frame (Enhanced MR) ``source_image`` whose functional groups place the map; a
        single-frame source carries its geometry at the top level and ignores it.
    referenced_frame_numbers
        SOP Instance UID -> the frames of that multi-frame source the map was computed from (Referenced Frame
        Number in SourceImageSequence); a multi-frame source not listed is referenced as a whole.
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
    frame = single_frame_view(source_image, frame_number)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "FrameOfReferenceUID"):
        if keyword not in frame:
            raise ValueError(f"source_image must carry {keyword} to place the map (at the top level or in frame "
                             f"{frame_number}'s functional groups), it has none")
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
        if keyword in frame:
            setattr(ds, keyword, frame[keyword].value)
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
    frames = referenced_frame_numbers or {}
    ds.SourceImageSequence = DicomSequence(
        [_reference(image, frames.get(str(image.SOPInstanceUID), ()))
         for image in unique_images([source_image, *further_source_images])]
    )
    ds.BurnedInAnnotation = "NO"
    # Image Plane
    ds.PixelSpacing = frame.PixelSpacing
    ds.ImageOrientationPatient = frame.ImageOrientationPatient
    ds.ImagePositionPatient = frame.ImagePositionPatient
    ds.SliceThickness = frame.get("SliceThickness", None)
    if "SliceLocation" in frame:
        ds.SliceLocation = frame.SliceLocation
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


def single_frame_view(source_image: Dataset, frame_number: int = 1) -> Dataset:
    """``source_image`` as a classic single-frame MR image would carry it: for an Enhanced MR image (per-frame
    functional groups) a shallow copy with frame ``frame_number``'s geometry and acquisition parameters at the
    top level (per-frame group first, then shared), its scanning sequence read from the frame's modifiers; any
    other image as it is.

    Raises
    ------
    ValueError
        If ``frame_number`` is not a frame of the image.
    """
    per_frame = source_image.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return source_image
    if not 1 <= frame_number <= len(per_frame):
        raise ValueError(f"frame_number must be in 1..{len(per_frame)}, got {frame_number}")
    shared_items = source_image.get("SharedFunctionalGroupsSequence")
    holders = (per_frame[frame_number - 1], shared_items[0] if shared_items else Dataset())
    # A new mapping of the same elements: what is set below replaces elements of the view only (copy.copy of a
    # Dataset would share its element dictionary with the source).
    view = Dataset(dict(source_image.items()))
    view.file_meta = getattr(source_image, "file_meta", FileMetaDataset())
    for sequence, keyword, classic in (*_FRAME_GEOMETRY, *_FRAME_ACQUISITION):
        for holder in holders:
            items = holder.get(sequence)
            if items and keyword in items[0]:
                if classic in view:
                    del view[classic]
                setattr(view, classic, items[0][keyword].value)
                break
    if "ScanningSequence" not in view:
        view.ScanningSequence = _scanning_sequence(source_image, holders)
    return view


def _scanning_sequence(source_image: Dataset, holders: Sequence[Dataset]) -> list[str]:
    """The classic Scanning Sequence of an Enhanced MR frame: its echo type, plus IR for an inversion."""
    echo = str(source_image.get("EchoPulseSequence", "") or "")
    scanning = ["SE"] if echo == "SPIN" else ["GR"]
    for holder in holders:
        modifier = holder.get("MRModifierSequence")
        if modifier and modifier[0].get("InversionRecovery") == "YES":
            scanning.append("IR")
            break
    return scanning


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


def _reference(image: Dataset, frame_numbers: Sequence[int] = ()) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    # Type 1C: only for a multi-frame image, and only when the map comes from some of its frames
    n_frames = int(image.get("NumberOfFrames", 1) or 1)
    used = sorted({int(number) for number in frame_numbers})
    if n_frames > 1 and used and len(used) < n_frames:
        item.ReferencedFrameNumber = used if len(used) > 1 else used[0]
    return item


def read_map_ms(dataset: Dataset) -> np.ndarray:
    """Map values in ms of an instance written by :func:`build_mr_map` (rescale applied)."""
    stored = dataset.pixel_array.astype(np.float64)
    return stored * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))


__all__ = [
    "SOFTWARE_VERSION", "DisplayWindow", "build_mr_map", "display_window", "field_strength_t", "map_to_uint16",
    "read_map_ms", "single_frame_view", "unique_images",
]
