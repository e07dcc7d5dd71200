"""The scanner's map products: T1/T2 maps, fit-quality (R2) maps and the motion-corrected (MOCO) series.

Encodings (also in docs/phantom.md, "File layout"):

- Siemens map: MR Image, uint16, pixel value = ms, no rescale, ImageType ``DERIVED\\PRIMARY\\T1 MAP\\ND``.
- Philips map: MR Image, uint16, ms = RescaleSlope (0.5) x value, ImageType ``ORIGINAL\\PRIMARY\\T1 MAP\\ND``.
- GE and Enhanced map: Parametric Map Storage, float32 ms (Real World Value Mapping, UCUM ``ms``).
- Siemens FITPARAMS: MR Image, uint16, value = R2 x 4000 (no rescale, the factor is fixed by convention).
- Philips R2 map: MR Image, uint16, value = R2 x 1000, RescaleSlope 0.001 gives R2.
- GE and Enhanced R2: Parametric Map Storage, float32 R2 (UCUM ``1``).
- Pixels where the fit failed or that are background are 0 in every map.
- Siemens display copy (vendor quirk ``display-copy``): an RGB colour rendering of the map in the map's series,
  stored as Secondary Capture (MR Image allows only monochrome pixels) with the map's plane attributes.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from enum import Enum

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, SecondaryCaptureImageStorage
from scipy import ndimage

from phantom.dicom_images import (
    SeriesInfo,
    apply_pixels,
    apply_series,
    new_dataset,
    pin_generated_values,
    window_for,
)
from phantom.identity import StudyContext, dicom_time
from phantom.model import FrameMotion, SliceGeometry

LOGGER = logging.getLogger(__name__)

SIEMENS_R2_SCALE = 4000.0
PHILIPS_R2_SCALE = 1000.0


class MapQuantity(str, Enum):
    """What a map holds."""

    T1 = "T1"
    T2 = "T2"
    R2 = "R2"

    @property
    def image_type_value(self) -> str:
        return {MapQuantity.T1: "T1 MAP", MapQuantity.T2: "T2 MAP", MapQuantity.R2: "OTHER"}[self]

    @property
    def unit(self) -> hd.sr.CodedConcept:
        code = codes.UCUM.NoUnits if self is MapQuantity.R2 else codes.UCUM.Millisecond
        return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


def encode_uint16(values: np.ndarray, scale: float) -> np.ndarray:
    """``round(values * scale)`` as uint16; NaN and negative values become 0, values above the range 65535."""
    scaled = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0) * scale
    return np.rint(np.clip(scaled, 0.0, 65535.0)).astype(np.uint16)


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _derived_from(template: Dataset, sources: Sequence[Dataset], context: StudyContext, series: SeriesInfo,
                  sop_instance_uid: str, description: str) -> Dataset:
    """A classic MR Image derived from ``template`` (a raw image): same acquisition, new identity."""
    ds = copy.deepcopy(template)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)  # what pydicom would convert the str to
    ds.SOPInstanceUID = sop_instance_uid
    apply_series(ds, context, series)
    for keyword in ("ImageComments", "RescaleIntercept", "RescaleSlope", "RescaleType", "TemporalPositionIdentifier"):
        if keyword in ds:
            delattr(ds, keyword)
    if "InversionTime" in ds:
        ds.InversionTime = None
    time = dicom_time(context.patient.study_time, series.start_offset_s)
    ds.ContentTime = time
    ds.InstanceCreationTime = time
    ds.InstanceNumber = 1
    ds.DerivationDescription = description
    ds.SourceImageSequence = DicomSequence([_source_reference(source) for source in sources])
    return ds


def build_classic_map(
    values: np.ndarray,
    quantity: MapQuantity,
    sources: Sequence[Dataset],
    context: StudyContext,
    series: SeriesInfo,
    sop_instance_uid: str,
) -> Dataset:
    """A T1/T2 or R2 map as a single-frame MR Image in the vendor's uint16 encoding (module docstring).

    Parameters
    ----------
    values
        (rows, columns) map: ms for T1/T2, the coefficient of determination for R2; NaN where not fitted.
    quantity
        What ``values`` hold.
    sources
        The raw magnitude images the map was fitted from (classic single-frame).
    context, series, sop_instance_uid
        Identification.

    Raises
    ------
    ValueError
        If ``sources`` is empty or the vendor stores maps as Parametric Maps.
    """
    if not sources:
        raise ValueError("a map needs at least one source image, got none")
    flavour = context.flavour
    if flavour.map_encoding.value == "parametric_map":
        raise ValueError(f"{flavour.vendor.value} stores maps as Parametric Maps, not as MR Images")
    siemens_like = flavour.map_encoding.value == "uint16_ms"
    ds = _derived_from(
        sources[0], sources, context, series, sop_instance_uid,
        f"{quantity.value} fitted from {len(sources)} {'T2-prepared' if quantity is MapQuantity.T2 else 'IR'} images"
        if quantity is not MapQuantity.R2 else f"coefficient of determination of the fit of {len(sources)} images",
    )
    if quantity is MapQuantity.R2:
        ds.ImageType = ["DERIVED", "PRIMARY", quantity.image_type_value, "R2"]
        if siemens_like:
            stored = encode_uint16(values, SIEMENS_R2_SCALE)
        else:
            stored = encode_uint16(values, PHILIPS_R2_SCALE)
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = f"{1.0 / PHILIPS_R2_SCALE:g}"
        center, width = (0.5 * 4000.0, 4000.0) if siemens_like else (500.0, 1000.0)
    else:
        first = "DERIVED" if siemens_like else "ORIGINAL"
        ds.ImageType = [first, "PRIMARY", quantity.image_type_value, "ND"]
        slope = 1.0 if siemens_like else flavour.map_rescale_slope
        stored = encode_uint16(values, 1.0 / slope)
        if not siemens_like:
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = f"{slope:g}"
        center, width = window_for(stored[stored > 0]) if np.any(stored > 0) else (1.0, 2.0)
    apply_pixels(ds, stored)
    ds.WindowCenter = f"{center:.0f}"
    ds.WindowWidth = f"{width:.0f}"
    return ds


#: Colour scale of the display copy: (fraction of the window, (red, green, blue)), blue for short, red for long.
DISPLAY_COLOUR_STOPS = (
    (0.0, (0.0, 0.0, 0.5)),
    (0.125, (0.0, 0.0, 1.0)),
    (0.375, (0.0, 1.0, 1.0)),
    (0.625, (1.0, 1.0, 0.0)),
    (0.875, (1.0, 0.0, 0.0)),
    (1.0, (0.5, 0.0, 0.0)),
)
_PATIENT_DIRECTIONS = (("L", "R"), ("P", "A"), ("H", "F"))


def colour_rendering(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """(rows, columns, 3) uint8 RGB of ``values`` on :data:`DISPLAY_COLOUR_STOPS` over ``window`` (low, high);
    pixels that are 0 or not finite (background, failed fits) are black."""
    low, high = window
    array = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(array) & (array > 0)
    fraction = np.clip((np.where(valid, array, low) - low) / max(high - low, 1e-9), 0.0, 1.0)
    positions = [stop for stop, _ in DISPLAY_COLOUR_STOPS]
    channels = [[colour[channel] for _, colour in DISPLAY_COLOUR_STOPS] for channel in range(3)]
    rgb = np.stack([np.interp(fraction, positions, channel) for channel in channels], axis=-1)
    rgb[~valid] = 0.0
    return np.rint(rgb * 255.0).astype(np.uint8)


def patient_orientation(image_orientation_patient: Sequence[float]) -> list[str]:
    """PatientOrientation (row direction, column direction) as letters from ImageOrientationPatient."""
    letters = []
    for vector in (image_orientation_patient[:3], image_orientation_patient[3:]):
        order = np.argsort(-np.abs(np.asarray(vector, dtype=np.float64)))
        text = "".join(
            _PATIENT_DIRECTIONS[axis][0 if vector[axis] > 0 else 1] for axis in order if abs(vector[axis]) > 0.2
        )
        letters.append(text)
    return letters


def build_display_copy(
    grey_map: Dataset,
    values: np.ndarray,
    quantity: MapQuantity,
    context: StudyContext,
    series: SeriesInfo,
    sop_instance_uid: str,
) -> Dataset:
    """The colour display copy Siemens writes next to a T1/T2 map, in the map's series.

    RGB (SamplesPerPixel 3, 8 bits), ImageType ``DERIVED\\PRIMARY\\T1 MAP\\ND\\COLOR`` (T2 MAP for T2), the
    map's position, orientation and spacing, InstanceNumber one after the map, SourceImageSequence naming the map.
    Stored as Secondary Capture Image Storage because MR Image Storage allows only monochrome pixels.

    Parameters
    ----------
    grey_map
        The classic MR Image map the copy shows.
    values
        (rows, columns) map in ms, as the grey map holds it.
    quantity
        T1 or T2.
    context, series, sop_instance_uid
        Identification (``series`` is the map's).

    Raises
    ------
    ValueError
        If ``quantity`` is R2 (no display copy of the fit quality).
    """
    if quantity is MapQuantity.R2:
        raise ValueError("display copies are made of T1 and T2 maps, not of R2")
    ds = new_dataset(SecondaryCaptureImageStorage, sop_instance_uid, context)
    apply_series(ds, context, series)
    for keyword in ("PixelSpacing", "SliceThickness", "ImageOrientationPatient", "ImagePositionPatient",
                    "SliceLocation", "ContentDate", "ContentTime", "AcquisitionDate", "AcquisitionTime",
                    "InstanceCreationDate", "InstanceCreationTime"):
        if keyword in grey_map:
            setattr(ds, keyword, grey_map[keyword].value)
    ds.ImageType = ["DERIVED", "PRIMARY", quantity.image_type_value, "ND", "COLOR"]
    ds.ConversionType = "WSD"
    ds.InstanceNumber = int(grey_map.InstanceNumber) + 1
    ds.PatientOrientation = patient_orientation([float(v) for v in grey_map.ImageOrientationPatient])
    ds.BurnedInAnnotation = "NO"
    ds.DerivationDescription = f"colour display copy of the {quantity.value} map"
    ds.SourceImageSequence = DicomSequence([_source_reference(grey_map)])
    positive = np.asarray(values, dtype=np.float64)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    center, width = window_for(positive) if positive.size else (0.5, 1.0)
    rgb = colour_rendering(values, (max(center - width, 0.0), center + width))
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.tobytes()
    return ds


def build_parametric_map(
    values: np.ndarray,
    quantity: MapQuantity,
    sources: Sequence[Dataset],
    geometry: SliceGeometry,
    context: StudyContext,
    series: SeriesInfo,
    sop_instance_uid: str,
) -> hd.pm.ParametricMap:
    """A T1/T2 or R2 map as float32 Parametric Map Storage with a Real World Value Mapping.

    Parameters
    ----------
    values
        (rows, columns) map, NaN where not fitted (stored as 0).
    quantity
        What ``values`` hold.
    sources
        The raw magnitude images (classic) or the Enhanced MR instance the map was fitted from.
    geometry
        Slice geometry (the map has one frame at the slice position).
    context, series, sop_instance_uid
        Identification.
    """
    pixels = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    finite_max = float(pixels.max()) if pixels.size else 0.0
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=quantity.value,
        lut_explanation=f"{quantity.value} ({quantity.unit.meaning})",
        unit=quantity.unit,
        value_range=(0.0, max(finite_max, 1.0)),
        slope=1.0,
        intercept=0.0,
        quantity_definition=(
            None if quantity is MapQuantity.R2
            else hd.sr.CodedConcept(
                *(lambda code: (code.value, code.scheme_designator, code.meaning))(
                    codes.DCM.T1 if quantity is MapQuantity.T1 else codes.DCM.T2
                )
            )
        ),
    )
    positive = pixels[pixels > 0]
    center, width = window_for(positive) if positive.size else (0.5, 1.0)
    orientation = hd.PlaneOrientationSequence(
        coordinate_system="PATIENT", image_orientation=geometry.image_orientation_patient
    )
    measures = hd.PixelMeasuresSequence(
        pixel_spacing=geometry.pixel_spacing_mm, slice_thickness=geometry.slice_thickness_mm
    )
    position = hd.PlanePositionSequence(
        coordinate_system="PATIENT", image_position=geometry.image_position_patient_mm
    )
    flavour = context.flavour
    parametric_map = hd.pm.ParametricMap(
        source_images=[sources[0]],
        further_source_images=list(sources[1:]) or None,
        pixel_array=pixels[np.newaxis],
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=flavour.manufacturer,
        manufacturer_model_name=flavour.model_name(context.field),
        software_versions=flavour.software_versions,
        device_serial_number=context.device_serial_number,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=center, window_width=width)],
        content_label=quantity.value + "MAP",
        content_description=series.series_description[:64],
        content_qualification=hd.ContentQualificationValues.PRODUCT,
        pixel_measures=measures,
        plane_orientation=orientation,
        plane_positions=[position],
    )
    parametric_map.SeriesDescription = series.series_description
    parametric_map.ProtocolName = series.protocol_name
    parametric_map.Laterality = None  # Type 2C; the heart is not a paired organ
    pin_generated_values(parametric_map, context, series)
    LOGGER.debug("%s parametric map %s", quantity.value, sop_instance_uid)
    return parametric_map


def rigid_correct(magnitude: np.ndarray, motions: Sequence[FrameMotion], pixel_spacing_mm: tuple[float, float],
                  centre_px: tuple[float, float]) -> np.ndarray:
    """Undo the rigid part (translation and rotation) of each frame's breathing motion; deformation remains.

    The simulation (:mod:`phantom.motion`) shows a displaced frame by sampling the still anatomy at
    ``q - d(q)`` with the rigid displacement ``d(q) = t + (R - I)(q - c)``, i.e. at ``A (q - c) + c - t`` with
    ``A = 2I - R``. The still anatomy at ``p`` is therefore found in the acquired frame at
    ``q = A^-1 (p - c + t) + c``, which is where this correction samples (bilinear).

    Parameters
    ----------
    magnitude
        (n, rows, columns) frames as acquired.
    motions
        One :class:`~phantom.model.FrameMotion` per frame, as the simulation applied it.
    pixel_spacing_mm
        (between rows, between columns).
    centre_px
        (x, y) pixel about which the simulation rotated the frames (the LV centre).

    Raises
    ------
    ValueError
        If the number of motions and frames differ.
    """
    frames = np.asarray(magnitude, dtype=np.float64)
    if len(motions) != frames.shape[0]:
        raise ValueError(f"need one motion per frame: {frames.shape[0]} frames, {len(motions)} motions")
    corrected = np.empty_like(frames)
    row_mm, column_mm = pixel_spacing_mm
    to_mm = np.diag([column_mm, row_mm])  # (x, y) pixels to mm
    to_px = np.diag([1.0 / column_mm, 1.0 / row_mm])
    centre_xy = np.asarray(centre_px, dtype=np.float64)
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # (x, y) <-> (row, column)
    for index, (frame, motion) in enumerate(zip(frames, motions, strict=True)):
        if motion.translation_mm == (0.0, 0.0) and motion.rotation_deg == 0.0:
            corrected[index] = frame
            continue
        angle = np.radians(motion.rotation_deg)
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        inverse = np.linalg.inv(2.0 * np.eye(2) - rotation)
        matrix_xy = to_px @ inverse @ to_mm
        offset_xy = centre_xy - matrix_xy @ centre_xy + to_px @ inverse @ np.asarray(motion.translation_mm)
        corrected[index] = ndimage.affine_transform(
            frame, swap @ matrix_xy @ swap, offset=swap @ offset_xy, order=1, mode="nearest"
        )
    return np.clip(corrected, 0.0, None)
