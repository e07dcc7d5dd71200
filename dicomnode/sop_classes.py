"""The SOP classes the node knows (accepts as a Storage SCP, reads, writes) and the transfer syntaxes it accepts.

Every SOP Class UID the node compares or writes is named here once; other modules import it from here.
"""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

VERIFICATION = UID("1.2.840.10008.1.1")

MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")
ENHANCED_MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4.1")
LEGACY_CONVERTED_ENHANCED_MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4.4")
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
MULTIFRAME_SINGLE_BIT_SC = UID("1.2.840.10008.5.1.4.1.1.7.1")
MULTIFRAME_GRAYSCALE_BYTE_SC = UID("1.2.840.10008.5.1.4.1.1.7.2")
MULTIFRAME_GRAYSCALE_WORD_SC = UID("1.2.840.10008.5.1.4.1.1.7.3")
MULTIFRAME_TRUE_COLOR_SC = UID("1.2.840.10008.5.1.4.1.1.7.4")
PARAMETRIC_MAP = UID("1.2.840.10008.5.1.4.1.1.30")
SEGMENTATION = UID("1.2.840.10008.5.1.4.1.1.66.4")
LABEL_MAP_SEGMENTATION = UID("1.2.840.10008.5.1.4.1.1.66.7")
RT_STRUCTURE_SET = UID("1.2.840.10008.5.1.4.1.1.481.3")
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
ENHANCED_SR = UID("1.2.840.10008.5.1.4.1.1.88.22")
COMPREHENSIVE_SR = UID("1.2.840.10008.5.1.4.1.1.88.33")
COMPREHENSIVE_3D_SR = UID("1.2.840.10008.5.1.4.1.1.88.34")
ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")

# Storage SOP classes whose instances are images: they must carry pixel data.
IMAGE_STORAGE_SOP_CLASSES: tuple[UID, ...] = (
    MR_IMAGE,
    ENHANCED_MR_IMAGE,
    LEGACY_CONVERTED_ENHANCED_MR_IMAGE,
    SECONDARY_CAPTURE,
    MULTIFRAME_SINGLE_BIT_SC,
    MULTIFRAME_GRAYSCALE_BYTE_SC,
    MULTIFRAME_GRAYSCALE_WORD_SC,
    MULTIFRAME_TRUE_COLOR_SC,
    PARAMETRIC_MAP,
    SEGMENTATION,
    LABEL_MAP_SEGMENTATION,
)
IMAGE_SOP_CLASSES: frozenset[str] = frozenset(IMAGE_STORAGE_SOP_CLASSES)

# Image SOP classes whose pixels may be float (Float Pixel Data or Double Float Pixel Data instead of Pixel Data).
FLOAT_PIXEL_SOP_CLASSES: frozenset[str] = frozenset({PARAMETRIC_MAP})

# Multi-frame image SOP classes that put a whole series into one instance.
ENHANCED_MR_SOP_CLASSES: frozenset[str] = frozenset({ENHANCED_MR_IMAGE, LEGACY_CONVERTED_ENHANCED_MR_IMAGE})
SEGMENTATION_SOP_CLASSES: frozenset[str] = frozenset({SEGMENTATION, LABEL_MAP_SEGMENTATION})
SR_SOP_CLASSES: frozenset[str] = frozenset(
    {BASIC_TEXT_SR, ENHANCED_SR, COMPREHENSIVE_SR, COMPREHENSIVE_3D_SR}
)

STORAGE_SOP_CLASSES: tuple[UID, ...] = (
    *IMAGE_STORAGE_SOP_CLASSES,
    RT_STRUCTURE_SET,
    BASIC_TEXT_SR,
    ENHANCED_SR,
    COMPREHENSIVE_SR,
    COMPREHENSIVE_3D_SR,
    ENCAPSULATED_PDF,
)

# Uncompressed first: an SCU that proposes several syntaxes in one context gets the first one both sides support.
NATIVE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
COMPRESSED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
TRANSFER_SYNTAXES: tuple[UID, ...] = NATIVE_TRANSFER_SYNTAXES + COMPRESSED_TRANSFER_SYNTAXES
