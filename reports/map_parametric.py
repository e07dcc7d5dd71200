"""A reconstructed T1 or T2 map as a float Parametric Map (PS3.3 A.75), built with highdicom.

The pixels are float32 milliseconds with a Real World Value Mapping (slope 1, intercept 0, UCUM ``ms``) whose
quantity is the DCM code for T1 or T2, and every frame references the source images it was fitted from. The series'
modality is MR, that of the images the map was fitted from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from inference.mapping import MapKind
from reports.codes import UNIT_MS, quantity_of
from reports.map_mr import SOFTWARE_VERSION, display_window, field_strength_t, single_frame_view

LOGGER = logging.getLogger(__name__)

_CONTENT_LABEL = {MapKind.T1: "T1MAP", MapKind.T2: "T2MAP"}
#: The maps are fitted from MR images.
MODALITY = "MR"


_FrameGeometry = tuple[
    hd.PixelMeasuresSequence | None, hd.PlaneOrientationSequence | None, list[hd.PlanePositionSequence] | None
]


def _frame_geometry(source: Dataset, frame_number: int) -> _FrameGeometry:
    """highdicom's geometry arguments for a map of one frame of a multi-frame source (highdicom would otherwise
    give the map one plane per source frame); nothing for a single-frame source, whose geometry it reads."""
    if "PerFrameFunctionalGroupsSequence" not in source:
        return None, None, None
    frame = single_frame_view(source, frame_number)
    for keyword in ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"):
        if keyword not in frame:
            raise ValueError(f"frame {frame_number} of the source image must carry {keyword} to place the map")
    thickness = frame.get("SliceThickness")
    return (
        hd.PixelMeasuresSequence(
            pixel_spacing=[float(v) for v in frame.PixelSpacing],
            slice_thickness=float(thickness) if thickness not in (None, "") else None,
        ),
        hd.PlaneOrientationSequence(
            coordinate_system="PATIENT", image_orientation=[float(v) for v in frame.ImageOrientationPatient],
        ),
        [hd.PlanePositionSequence(
            coordinate_system="PATIENT", image_position=[float(v) for v in frame.ImagePositionPatient],
        )],
    )


def build_parametric_map(
    map_ms: np.ndarray,
    source_images: Sequence[Dataset],
    kind: MapKind,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    content_description: str | None = None,
    series_description: str | None = None,
    manufacturer: str = "myomap",
    manufacturer_model_name: str = "myomap",
    software_versions: str = SOFTWARE_VERSION,
    device_serial_number: str = "0",
    frame_number: int = 1,
) -> hd.pm.ParametricMap:
    """Build a float32 Parametric Map of a T1 or T2 map in ms.

    Parameters
    ----------
    map_ms
        (Rows, Columns) map in ms on the grid of the source images (one slice); NaN where there is no value,
        written as 0 ms (no relaxation time is 0 ms, so a reader can tell).
    source_images
        The images the map was fitted from, all of the same slice; the first gives geometry, patient and study.
    kind
        T1 or T2.
    series_instance_uid, sop_instance_uid
        Identifiers of the new series and instance.
    series_number, instance_number
        Numbers of the new series (in the source's study) and instance.
    content_description
        How the map was computed, e.g. ``"MOLLI 3-parameter + Look-Locker"``.
    series_description
        Defaults to ``"MYOMAP T1MAP"`` or ``"MYOMAP T2MAP"``.
    manufacturer, manufacturer_model_name, software_versions, device_serial_number
        The equipment that made the map.
    frame_number
        1-based frame of a multi-frame (Enhanced MR) first source image whose functional groups place the map.

    Returns
    -------
    highdicom.pm.ParametricMap

    Raises
    ------
    ValueError
        If there are no source images or the map does not match their matrix.
    """
    kind = MapKind(kind)
    if len(source_images) == 0:
        raise ValueError("source_images must hold at least one image, got none")
    first = source_images[0]
    values = np.nan_to_num(np.asarray(map_ms, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if values.shape != (int(first.Rows), int(first.Columns)):
        raise ValueError(
            f"map_ms must have the source images' shape ({int(first.Rows)}, {int(first.Columns)}), "
            f"got {values.shape}"
        )
    quantity = quantity_of(kind)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=kind.value,
        lut_explanation=f"{kind.value} in ms",
        unit=UNIT_MS,
        value_range=(float(values.min()), float(values.max())),
        slope=1.0,
        intercept=0.0,
        quantity_definition=quantity,
    )
    window = display_window(kind, field_strength_t(first))
    pixel_measures, plane_orientation, plane_positions = _frame_geometry(first, frame_number)
    parametric_map = hd.pm.ParametricMap(
        source_images=[first],
        pixel_array=values,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=software_versions,
        device_serial_number=device_serial_number,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(
                window_center=window.centre_ms,
                window_width=window.width_ms,
                window_explanation=f"{kind.value} in ms",
            )
        ],
        content_label=_CONTENT_LABEL[kind],
        content_description=content_description,
        further_source_images=list(source_images[1:]) or None,
        pixel_measures=pixel_measures,
        plane_orientation=plane_orientation,
        plane_positions=plane_positions,
    )
    parametric_map.SeriesDescription = series_description or f"MYOMAP {_CONTENT_LABEL[kind]}"
    # highdicom writes "OT"; PS3.3 C.8.32.1 (Parametric Map Series) expects the acquisition modality, "OT" only for
    # maps of several modalities, and viewers file an "OT" series away from the study's MR series.
    parametric_map.Modality = MODALITY
    # General Series: naming the (unpaired) body part settles the Laterality condition
    parametric_map.BodyPartExamined = first.get("BodyPartExamined") or "HEART"
    LOGGER.debug("built %s parametric map %s", kind.value, sop_instance_uid)
    return parametric_map
