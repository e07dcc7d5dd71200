"""What a series is to the mapping workflow, and how many instances its protocol promises, from one instance.

Vendors mark their series differently (see docs/design "Real-world series conventions"): Siemens names map
series ``..._T1MAP`` / ``..._MOCO_T1`` and writes ``T1 MAP`` into ImageType, Philips leaves InversionTime empty and
writes ``TIeff 180 ms`` into ImageComments, Enhanced MR puts inversion times and T2 preparation into its functional
groups. Protocol names are free text (a raw series may be called ``T1map_long_MOLLI``), so description tokens only
decide where stronger evidence (ImageType, inversion times, T2 preparation) is absent.

Which component of the complex image an instance holds comes from
:func:`dicomnode.io.series_loader.complex_component` (GE's private image type, ComplexImageComponent, ImageType).
Vendors that mix components in one series (GE magnitude, phase, real and imaginary; Philips ``M_FFE`` with
``P_FFE``) make one instance a weak witness for its series: :func:`classify_series` gives a series holding any
magnitude image its raw role, and the phase role only to a series of phase images alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

from pydicom import Dataset

from db.models import SeriesRole
from dicomnode.io.series_loader import MAGNITUDE, PHASE, complex_component
from dicomnode.sop_classes import (
    ENHANCED_MR_SOP_CLASSES,
    MR_IMAGE,
    PARAMETRIC_MAP,
    RT_STRUCTURE_SET,
    SEGMENTATION_SOP_CLASSES,
)

LOGGER = logging.getLogger(__name__)

MAPPING_SOP_CLASSES = frozenset({MR_IMAGE, PARAMETRIC_MAP, *ENHANCED_MR_SOP_CLASSES})

TI_COMMENT = re.compile(r"\bTI\s*(?:eff)?\s*[:=]?\s*(\d+(?:\.\d+)?)\s*ms\b", re.IGNORECASE)
T2_PREP_COMMENT = re.compile(
    r"\bT2\s*[-_]?\s*prep(?:\.|aration)?\s*(?:duration)?\s*[:=]?\s*(\d+(?:\.\d+)?)\s*ms\b", re.IGNORECASE
)
# Patterns over the series description upper-cased with every run of separators turned into "_".
FIT_QUALITY_TOKENS = re.compile(r"FITPARAMS|FIT_?PARAM|(?:^|_)R\^?2(?:_?MAP)?(?:_|$)|GOODNESS_?OF_?FIT")
T2_PREP_TOKENS = re.compile(r"T2_?PREP|(?:^|_)T2P(?:_|$)|T2_?MAP_RAW|RAW_T2_?MAP")
T1_MAP_SUFFIX = re.compile(r"(?:T1_?MAP|MOCO_T1)$")
T2_MAP_SUFFIX = re.compile(r"(?:T2_?MAP|MOCO_T2)$")
T1_MAP_TOKEN = re.compile(r"T1_?MAP")
T2_MAP_TOKEN = re.compile(r"T2_?MAP")
MOCO_TOKEN = re.compile(r"(?:^|_)MOCO(?:_|$)")
IR_TOKENS = re.compile(r"MOLLI|SHMOLLI|SASHA|LOOK_?LOCKER")
T1_MAP_IMAGE_TYPES = frozenset({"T1 MAP", "T1MAP", "T1_MAP"})
T2_MAP_IMAGE_TYPES = frozenset({"T2 MAP", "T2MAP", "T2_MAP"})
FIT_QUALITY_IMAGE_TYPES = frozenset({"R2", "R2 MAP", "FITPARAMS", "FIT PARAMS"})
PHASE_ROLES = {SeriesRole.RAW_IR: SeriesRole.RAW_IR_PHASE, SeriesRole.T2_PREP: SeriesRole.T2_PREP_PHASE}


def classify(dataset: Dataset) -> SeriesRole:
    """The role of the series an instance belongs to, from that instance alone.

    Parameters
    ----------
    dataset : Dataset
        One instance of the series (any instance: the markers used are the same on all of them).

    Returns
    -------
    SeriesRole
        ``OTHER`` when nothing marks the series as part of a mapping workflow.
    """
    role = _base_role(dataset)
    if role in PHASE_ROLES and _is_phase(dataset):
        return PHASE_ROLES[role]
    return role


def classify_series(datasets: Iterable[Dataset]) -> SeriesRole:
    """The role of a series from all its instances (or the headers received so far).

    A series that holds a magnitude image (or one whose component nothing names) takes that image's role, so a
    series mixing magnitude with phase, real or imaginary images (GE, Philips) is ``RAW_IR`` or ``T2_PREP``; a
    series of phase images without magnitude takes the phase role, even where each instance alone is ambiguous
    (GE's private image type). Instances whose own role is ``OTHER`` (e.g. a colour display copy, stored as
    Secondary Capture, next to a T1 map) are passed over; ``OTHER`` when no instance names a role.

    Raises
    ------
    ValueError
        If ``datasets`` is empty.
    """
    instances = list(datasets)
    if not instances:
        raise ValueError("classify_series needs at least one instance, got none")
    # Instances that name no role (a colour display copy in a map series) do not speak for the series.
    known = [(role, _components(ds)) for ds in instances if (role := _base_role(ds)) is not SeriesRole.OTHER]
    if not known:
        return SeriesRole.OTHER
    for role, held in known:
        if held & {MAGNITUDE, ""}:
            return role
    role = known[0][0]
    if role in PHASE_ROLES and any(PHASE in held for _, held in known):
        return PHASE_ROLES[role]
    return role


def _base_role(dataset: Dataset) -> SeriesRole:
    """The role before magnitude and phase are told apart."""
    sop_class_uid = str(dataset.get("SOPClassUID", ""))
    if sop_class_uid in SEGMENTATION_SOP_CLASSES:
        return SeriesRole.SEG
    if sop_class_uid == RT_STRUCTURE_SET:
        return SeriesRole.RTSTRUCT
    if sop_class_uid not in MAPPING_SOP_CLASSES:
        return SeriesRole.OTHER
    description = _normalised(str(dataset.get("SeriesDescription", "")))
    image_types = set(_image_type_values(dataset))
    return _mapping_role(dataset, sop_class_uid, description, image_types)


#: Roles of fitted maps: a scanner derives each from a raw acquisition and may copy that acquisition's counters
#: (8 or 11 IR images, 16 with their phase images) into the map, whose series holds one image per slice.
FITTED_MAP_ROLES = frozenset({SeriesRole.T1_MAP, SeriesRole.T2_MAP, SeriesRole.FIT_QUALITY})


def expected_instances(dataset: Dataset, role: SeriesRole | None = None) -> int | None:
    """How many instances the series holds, when the protocol's tags say so; None means "wait for quiet".

    Enhanced MR, segmentations and structure sets carry a whole series in one instance. Otherwise
    ImagesInAcquisition (0020,1002) is trusted from 1 up; CardiacNumberOfImages (0018,1090) and
    NumberOfTemporalPositions (0020,0105) only from 2 up, because scanners write 1 there for series that are not
    cine or dynamic at all, and a premature "complete" would re-open the series on every later image. A fitted
    map's count (``role`` in :data:`FITTED_MAP_ROLES`) is not trusted when it is at least the number of images the
    map says it was fitted from (SourceImageSequence): then it counts that acquisition, not the map's series, which
    completes when quiet. A map that states a smaller count, or no sources, is trusted as before (a series of one
    map per slice completes with its last map, without the quiet period the console would wait for).
    """
    sop_class_uid = str(dataset.get("SOPClassUID", ""))
    if sop_class_uid in ENHANCED_MR_SOP_CLASSES or sop_class_uid in SEGMENTATION_SOP_CLASSES:
        return 1
    if sop_class_uid == RT_STRUCTURE_SET:
        return 1
    for keyword, minimum in (
        ("ImagesInAcquisition", 1),
        ("CardiacNumberOfImages", 2),
        ("NumberOfTemporalPositions", 2),
    ):
        count = _int_or_none(dataset.get(keyword))
        if count is not None and count >= minimum:
            return None if role in FITTED_MAP_ROLES and count >= _fitted_from(dataset) > 0 else count
    return None


def _fitted_from(dataset: Dataset) -> int:
    """How many source images a derived image references (0 when it names none)."""
    sources = dataset.get("SourceImageSequence")
    return len(sources) if sources is not None else 0


def inversion_time_ms(dataset: Dataset) -> float | None:
    """The (effective) inversion time of an image: InversionTime, then ImageComments, then Enhanced MR groups."""
    value = _float_or_none(dataset.get("InversionTime"))
    if value is not None and value > 0:
        return value
    match = TI_COMMENT.search(str(dataset.get("ImageComments", "")))
    if match:
        return float(match.group(1))
    for modifier in _functional_items(dataset, "MRModifierSequence"):
        times = modifier.get("InversionTimes")
        if times is not None:
            values = [float(t) for t in (times if isinstance(times, list | tuple) else [times])]
            if values and values[0] > 0:
                return values[0]
    return None


def _mapping_role(
    dataset: Dataset, sop_class_uid: str, description: str, image_types: set[str]
) -> SeriesRole:
    if FIT_QUALITY_TOKENS.search(description) or image_types & FIT_QUALITY_IMAGE_TYPES:
        return SeriesRole.FIT_QUALITY
    if image_types & T1_MAP_IMAGE_TYPES:
        return SeriesRole.T1_MAP
    if image_types & T2_MAP_IMAGE_TYPES:
        return SeriesRole.T2_MAP
    if sop_class_uid == PARAMETRIC_MAP:
        return _parametric_map_role(dataset, description)
    derived = "DERIVED" in image_types
    has_ti = inversion_time_ms(dataset) is not None
    t2_prepared = _has_t2_prep(dataset, description)
    if T1_MAP_SUFFIX.search(description) and (derived or not has_ti):
        return SeriesRole.T1_MAP
    if T2_MAP_SUFFIX.search(description) and (derived or not t2_prepared):
        return SeriesRole.T2_MAP
    # Motion-corrected images keep their inversion or T2-prep markers, so MOCO is decided before raw.
    if "MOCO" in image_types or MOCO_TOKEN.search(description):
        return SeriesRole.MOCO
    if t2_prepared:
        return SeriesRole.T2_PREP
    if has_ti or IR_TOKENS.search(description):
        return SeriesRole.RAW_IR
    if T2_MAP_TOKEN.search(description) and not derived:
        # A T2 mapping protocol's own (underived) images: the T2-prepared raw series.
        return SeriesRole.T2_PREP
    if derived and T1_MAP_TOKEN.search(description):
        return SeriesRole.T1_MAP
    if derived and T2_MAP_TOKEN.search(description):
        return SeriesRole.T2_MAP
    return SeriesRole.OTHER


def _parametric_map_role(dataset: Dataset, description: str) -> SeriesRole:
    labels = [description]
    for mapping in _functional_items(dataset, "RealWorldValueMappingSequence"):
        labels += [_normalised(str(mapping.get(k, ""))) for k in ("LUTLabel", "LUTExplanation")]
        for quantity in mapping.get("QuantityDefinitionSequence", []):
            for code in quantity.get("ConceptCodeSequence", []):
                labels.append(_normalised(str(code.get("CodeMeaning", ""))))
    text = "_".join(labels)
    if FIT_QUALITY_TOKENS.search(text):
        return SeriesRole.FIT_QUALITY
    if T1_MAP_TOKEN.search(text) or re.search(r"(?:^|_)T1(?:_|$)", text):
        return SeriesRole.T1_MAP
    if T2_MAP_TOKEN.search(text) or re.search(r"(?:^|_)T2(?:_|$)", text):
        return SeriesRole.T2_MAP
    return SeriesRole.OTHER


def _has_t2_prep(dataset: Dataset, description: str) -> bool:
    if T2_PREP_COMMENT.search(str(dataset.get("ImageComments", ""))):
        return True
    if T2_PREP_TOKENS.search(description) or T2_PREP_TOKENS.search(
        _normalised(str(dataset.get("SequenceName", "")))
    ):
        return True
    return any(
        str(m.get("T2Preparation", "")).upper() == "YES"
        for m in _functional_items(dataset, "MRModifierSequence")
    )


def _is_phase(dataset: Dataset) -> bool:
    """Whether one instance shows a series of phase images: it holds phase images only, and says so otherwise than
    by GE's private image type alone. GE writes all components of an acquisition into one series, so a GE phase
    image may be the first of a mixed series; the raw role then keeps its job (the loader picks the magnitude
    images) and :func:`classify_series` gives the phase role once all instances are known."""
    if _components(dataset) != {PHASE}:
        return False
    without_private = Dataset()
    for keyword in ("ImageType", "ComplexImageComponent"):
        if keyword in dataset:
            without_private[keyword] = dataset[keyword]
    return complex_component(without_private) == PHASE or any(
        str(item.get("ComplexImageComponent", "")).upper() == PHASE for item in _frame_type_items(dataset)
    )


def _components(dataset: Dataset) -> set[str]:
    """The components an instance holds: one for a classic image; for Enhanced MR those its frames name (the top
    level when it names one other than MIXED), "" standing for images whose component nothing names."""
    top = complex_component(dataset)
    if top or "PerFrameFunctionalGroupsSequence" not in dataset:
        return {top}
    held = set()
    for group in dataset.PerFrameFunctionalGroupsSequence:
        items = list(group.get("MRImageFrameTypeSequence", [])) or list(
            _functional_items(dataset, "MRImageFrameTypeSequence")
        )
        for item in items[:1]:
            held.add(complex_component(_as_image(item)))
        if not items:
            held.add("")
    return held or {""}


def _as_image(frame_type: Dataset) -> Dataset:
    """A frame type item (FrameType, ComplexImageComponent) as the ImageType and component of an image."""
    image = Dataset()
    if "FrameType" in frame_type:
        image.ImageType = frame_type.FrameType
    if "ComplexImageComponent" in frame_type:
        image.ComplexImageComponent = frame_type.ComplexImageComponent
    return image


def _image_type_values(dataset: Dataset) -> Iterator[str]:
    for value in _multi(dataset.get("ImageType")):
        yield value.upper()
    for item in _frame_type_items(dataset):
        for value in _multi(item.get("FrameType")):
            yield value.upper()


def _frame_type_items(dataset: Dataset) -> Iterator[Dataset]:
    for keyword in ("MRImageFrameTypeSequence", "ParametricMapFrameTypeSequence"):
        yield from _functional_items(dataset, keyword)


def _functional_items(dataset: Dataset, keyword: str) -> Iterator[Dataset]:
    """Items of a functional group macro: top level, shared groups, then the first frame's groups."""
    yield from dataset.get(keyword, [])
    for groups_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = dataset.get(groups_keyword)
        if groups:
            yield from groups[0].get(keyword, [])


def _multi(value: str | Iterable[object] | None) -> list[str]:
    """A multi-valued string element as a list: pydicom gives a str for one value, a MultiValue for several."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def _normalised(text: str) -> str:
    return re.sub(r"[^A-Z0-9^]+", "_", text.upper()).strip("_")


def _int_or_none(value: object) -> int | None:
    try:
        # Any value is tried on purpose: int() raises TypeError for those it cannot take, answered with None.
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _float_or_none(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
