"""The models' segmentation of the map slices as a binary DICOM Segmentation, built with highdicom.

Segments: 1 "Left ventricle cavity" and 2 "Myocardium" (AUTOMATIC, the node's analysis as the algorithm), and 3
"Consensus myocardium" (SEMIAUTOMATIC: the consensus model's myocardium drawn from a reader's contour) when asked
for and at least one slice has one. One frame per source image and segment, empty frames kept, so every slice can
be read back from the object whatever it holds. The source images are the map images the analysis ran on: single-
frame images of one series (the node's maps), or one single-slice multi-frame map.
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
        hd.seg.SegmentDescription(
            segment_number=1, segment_label=CAVITY_LABEL, segmented_property_category=codes.ANATOMICAL_STRUCTURE,
            segmented_property_type=codes.LEFT_VENTRICLE, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ),
        hd.seg.SegmentDescription(
            segment_number=2, segment_label=MYOCARDIUM_LABEL, segmented_property_category=codes.ANATOMICAL_STRUCTURE,
            segmented_property_type=codes.MYOCARDIUM, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ),
    ]
    if with_consensus:
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=3, segment_label=CONSENSUS_LABEL, segmented_property_category=codes.ANATOMICAL_STRUCTURE,
            segmented_property_type=codes.MYOCARDIUM,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm_identification=algorithm,
        ))
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


__all__ = ["CAVITY_LABEL", "CONSENSUS_LABEL", "MYOCARDIUM_LABEL", "SERIES_DESCRIPTION", "build_model_segmentation"]
