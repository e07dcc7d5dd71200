"""The models' segmentation of the map slices as a binary DICOM Segmentation, built with highdicom.

Segments: 1 "Left ventricle cavity" and 2 "Myocardium" (AUTOMATIC, the node's analysis as the algorithm), and 3
"Consensus myocardium" (SEMIAUTOMATIC: the consensus model's myocardium drawn from a reader's contour) when asked
for and at least one slice has one. The segments are coded as :mod:`reports.codes` codes the structures, the same
way as the measurement reports' contours (cavity: Blood, Anatomic Region Left ventricle; myocardium: Left Ventricle
Myocardium), and carry a recommended display colour. One frame per source image and segment, empty frames kept, so
every slice can be read back from the object whatever it holds. The source images are the map images the analysis
ran on: single-frame images of one series (the node's maps), or one single-slice multi-frame map.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from inference.slice_analysis import ALGORITHM_NAME, SliceAnalysis
from reports import codes
from reports.sr_measurement import check_slice

LOGGER = logging.getLogger(__name__)

SERIES_DESCRIPTION = "myomap segmentation"
CAVITY_LABEL = "Left ventricle cavity"
MYOCARDIUM_LABEL = "Myocardium"
CONSENSUS_LABEL = "Consensus myocardium"
#: Recommended display colours (sRGB; written as CIELab): the console images draw the endocardium red and the
#: epicardium green, so a viewer shows the cavity and the wall in the same colours; the consensus is blue.
CAVITY_RGB = (255, 40, 40)
MYOCARDIUM_RGB = (40, 220, 60)
CONSENSUS_RGB = (60, 120, 255)


def _segment(number: int, label: str, structure: codes.Structure, rgb: tuple[int, int, int],
             algorithm_type: hd.seg.SegmentAlgorithmTypeValues, algorithm: hd.AlgorithmIdentificationSequence,
             ) -> hd.seg.SegmentDescription:
    """A segment coded as ``structure`` (the SRs code their contours the same way), with its display colour."""
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label, segmented_property_category=structure.category,
        segmented_property_type=structure.property_type, anatomic_regions=[structure.region],
        algorithm_type=algorithm_type, algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*rgb),
    )


def _check_sources(sources: Sequence[Dataset]) -> None:
    if len({str(source.SeriesInstanceUID) for source in sources}) > 1:
        raise ValueError("the source images of one segmentation must belong to one series")
    if len(sources) > 1 and any("NumberOfFrames" in source for source in sources):
        raise ValueError("a segmentation of several slices needs single-frame source images, one per slice")


def build_model_segmentation(
    slices: Sequence[tuple[Dataset, SliceAnalysis]],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    algorithm_version: str,
    include_consensus: bool = True,
) -> hd.seg.Segmentation:
    """Build a BINARY Segmentation of the LV cavity and myocardium of every analysed slice.

    Parameters
    ----------
    slices
        (source map image, analysis of it) per slice.
    series_instance_uid, sop_instance_uid, series_number
        Identification of the new SEG series and instance.
    algorithm_version
        Version of the analysis, written in each segment's algorithm identification.
    include_consensus
        Add the "Consensus myocardium" segment where an analysis carries a consensus mask.

    Raises
    ------
    ValueError
        If no slice is given, an analysis does not match its source image, or the sources are not single-frame
        images of one series (or one multi-frame image).
    """
    if not slices:
        raise ValueError("a segmentation needs at least one analysed slice")
    sources = [source for source, _ in slices]
    _check_sources(sources)
    for source, analysis in slices:
        check_slice(source, analysis)
    with_consensus = include_consensus and any(analysis.consensus_mask is not None for _, analysis in slices)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.ALGORITHM_FAMILY, version=algorithm_version
    )
    descriptions = [
        _segment(1, CAVITY_LABEL, codes.LV_BLOOD_POOL, CAVITY_RGB, hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                 algorithm),
        _segment(2, MYOCARDIUM_LABEL, codes.LV_MYOCARDIUM, MYOCARDIUM_RGB,
                 hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm),
    ]
    if with_consensus:
        descriptions.append(_segment(3, CONSENSUS_LABEL, codes.LV_MYOCARDIUM, CONSENSUS_RGB,
                                     hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm))
    masks = []
    for _, analysis in slices:
        planes = [analysis.segmentation.cavity_mask, analysis.segmentation.myocardium_mask]
        if with_consensus:
            consensus = analysis.consensus_mask
            planes.append(np.zeros_like(planes[0]) if consensus is None else consensus)
        masks.append(np.stack([np.asarray(plane, dtype=bool) for plane in planes], axis=-1))
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.stack(masks),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="myomap",
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=algorithm_version,
        device_serial_number="0",
        content_label="MYOMAP",
        content_description="LV cavity and myocardium",
        omit_empty_frames=False,
    )
    segmentation.SeriesDescription = SERIES_DESCRIPTION
    LOGGER.debug("segmentation %s: %d slices, %d segments", sop_instance_uid, len(slices), len(descriptions))
    return segmentation


__all__ = ["CAVITY_LABEL", "CAVITY_RGB", "CONSENSUS_LABEL", "CONSENSUS_RGB", "MYOCARDIUM_LABEL", "MYOCARDIUM_RGB",
           "SERIES_DESCRIPTION", "build_model_segmentation"]
