"""Real labelled short-axis slices for the segmentation model: the Sunnybrook Cardiac Data in shared/data.

Radau et al., "Evaluation framework for algorithms segmenting short axis cardiac MRI", MIDAS Journal 2009 (the
MICCAI 2009 LV segmentation challenge), CC0: GE 1.5 T cine SSFP short-axis images (256 x 256, about 1.3 mm
pixels) of heart-failure patients with expert endocardial contours (``i``, the cavity with the papillary
muscles) and on about half of the images epicardial ones (``o``). Contour ``IM-0001-NNNN-icontour-manual.txt``
belongs to ``dicoms/<patient>/NNNN.dcm``; ``link.csv`` pairs the DICOM and contour folders.

Cine SSFP is not a map, but it is real anatomy, real noise and a real scanner's blood/myocardium border, with the
blood pool bright as in T1 and T2 maps. The model reads an image the same way as a map (normalised on the
segmentation grid, inference/grids.py).

Labels on the image grid: cavity inside the endocardial contour; myocardium = epicardium minus cavity where an
epicardial contour exists; elsewhere :data:`NOT_CAVITY` (background or myocardium, unknown) on images without an
epicardial contour. Patient SC-HF-I-6's epicardial contours do not enclose its endocardial ones (20-30 % of the
cavity outside; drawn on another frame), so only its cavity is used (:data:`CAVITY_ONLY_PATIENTS`).
:data:`HELD_OUT_PATIENT` is never used in training: it measures the model on real data.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.contour_fit import contour_mask, fit_contours
from inference.errors import AnalysisError
from inference.grids import image_centre_grid, normalise_map, sample
from inference.metrics import dice, hausdorff_mm
from inference.myocardium_values import mid_wall_mask
from inference.runtime import Model
from inference.segmentation import segment_maps
from phantom.sunnybrook import SunnybrookError, read_point_list

LOGGER = logging.getLogger(__name__)

#: Label values on the grids: as the phantom's (training/phantom_slices.py), plus "not cavity, class unknown".
BACKGROUND, CAVITY, MYOCARDIUM, NOT_CAVITY = 0, 1, 2, 3
HELD_OUT_PATIENT = "SC-HF-I-1"
#: The fixture folder beside the checkout (../shared/data/sunnybrook).
SUNNYBROOK_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "sunnybrook"
#: Patients whose epicardium must not be used as truth for the myocardium.
CAVITY_ONLY_PATIENTS = frozenset({"SC-HF-I-6"})
_CONTOUR_NAME = re.compile(r"IM-(?P<series>\d+)-(?P<instance>\d+)-(?P<border>[io])contour-(?:manual|auto)\.txt$")


@dataclass(frozen=True)
class SunnybrookSlice:
    """One labelled image at its own resolution."""

    patient: str  # the contour folder's name, e.g. SC-HF-I-1
    instance: int  # InstanceNumber
    image: np.ndarray  # (rows, columns) float32 magnitude
    pixel_spacing_mm: tuple[float, float]  # (row, column)
    cavity_mask: np.ndarray  # (rows, columns) bool
    myocardium_mask: np.ndarray | None  # (rows, columns) bool; None where no usable epicardial contour exists

    @property
    def has_myocardium(self) -> bool:
        return self.myocardium_mask is not None

    @property
    def labels(self) -> np.ndarray:
        """(rows, columns) uint8 BACKGROUND/CAVITY/MYOCARDIUM, or CAVITY/NOT_CAVITY without a myocardium."""
        if self.myocardium_mask is None:
            return np.where(self.cavity_mask, CAVITY, NOT_CAVITY).astype(np.uint8)
        return np.where(self.cavity_mask, CAVITY,
                        np.where(self.myocardium_mask, MYOCARDIUM, BACKGROUND)).astype(np.uint8)


def read_points(path: Path) -> np.ndarray:
    """(N, 2) (x, y) pixel points of a point-list file ("x y" per line), read as the phantom reads its templates.

    Raises
    ------
    ValueError
        If a line does not hold two numbers or fewer than three points remain (the file is named).
    """
    try:
        return read_point_list(path)
    except SunnybrookError as error:
        raise ValueError(f"{path.name}: {error}") from None


def linked_folders(root: Path) -> list[tuple[Path, Path]]:
    """(DICOM folder, contour folder) pairs of ``root/link.csv`` that are present, in file order."""
    with (root / "link.csv").open() as handle:
        pairs = [(root / "dicoms" / row["patient_id"], root / "contourfiles" / row["original_id"])
                 for row in csv.DictReader(handle)]
    return [(images, contours) for images, contours in pairs if images.is_dir() and contours.is_dir()]


def load_patient(image_folder: Path, contour_folder: Path) -> list[SunnybrookSlice]:
    """Every image of one patient that has an endocardial contour, in Instance Number order.

    Raises
    ------
    ValueError
        If a contour names an image that is not there.
    """
    import pydicom

    patient = contour_folder.name
    borders: dict[int, dict[str, np.ndarray]] = {}
    for path in sorted(contour_folder.glob("*-contours/*.txt")):
        match = _CONTOUR_NAME.search(path.name)
        if match is not None:
            borders.setdefault(int(match["instance"]), {})[match["border"]] = read_points(path)
    slices = []
    for instance, by_border in sorted(borders.items()):
        path = image_folder / f"{instance}.dcm"
        if not path.is_file():
            raise ValueError(f"{patient}: contour of Instance Number {instance} but no {path}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # UIDs with zero-padded components
            dataset = pydicom.dcmread(path)
            image = dataset.pixel_array.astype(np.float32)
            spacing = (float(dataset.PixelSpacing[0]), float(dataset.PixelSpacing[1]))
        if "i" not in by_border:
            continue
        cavity = contour_mask(by_border["i"], image.shape)
        myocardium = None
        if "o" in by_border and patient not in CAVITY_ONLY_PATIENTS:
            myocardium = contour_mask(by_border["o"], image.shape) & ~cavity
        slices.append(SunnybrookSlice(patient, instance, image, spacing, cavity, myocardium))
    return slices


def load_sunnybrook(root: Path) -> list[SunnybrookSlice]:
    """Every labelled image of every linked patient under ``root`` (shared/data/sunnybrook)."""
    slices = [item for images, contours in linked_folders(root) for item in load_patient(images, contours)]
    LOGGER.info("Sunnybrook: %d images of %d patients, %d with a myocardium", len(slices),
                len({s.patient for s in slices}), sum(s.has_myocardium for s in slices))
    return slices


def split(slices: list[SunnybrookSlice], held_out: str = HELD_OUT_PATIENT
          ) -> tuple[list[SunnybrookSlice], list[SunnybrookSlice]]:
    """(training, held-out) slices: the held-out patient's are never trained on.

    Raises
    ------
    ValueError
        If no slice belongs to ``held_out``.
    """
    test = [s for s in slices if s.patient == held_out]
    if not test:
        raise ValueError(f"held-out patient {held_out!r} not among {sorted({s.patient for s in slices})}")
    return [s for s in slices if s.patient != held_out], test


def to_grids(slices: list[SunnybrookSlice]) -> dict[str, np.ndarray]:
    """The slices on the segmentation grid, as training/datasets.py packs phantom cases: ``seg_map`` (N, 128, 128)
    float16 normalised image, ``seg_labels`` (N, 128, 128) uint8 (with NOT_CAVITY where the class is unknown)."""
    maps, labels = [], []
    for item in slices:
        grid = image_centre_grid(item.image.shape, item.pixel_spacing_mm)
        maps.append(normalise_map(sample(item.image, grid)).astype(np.float16))
        # Outside the image the grid holds zeros: background there is known.
        grid_labels = sample(item.labels, grid, order=0).astype(np.uint8)
        labels.append(grid_labels)
    return {"seg_map": np.stack(maps), "seg_labels": np.stack(labels)}


def slice_metrics(item: SunnybrookSlice, cavity: np.ndarray, myocardium: np.ndarray) -> dict[str, Any]:
    """A model's masks against the experts' on one slice: Dice of cavity (and myocardium), Hausdorff distances of
    the fitted endo/epicardial contours (mm), the share of the experts' mid-wall region
    (inference.myocardium_values.mid_wall_mask) inside the predicted myocardium, and the ratio of the areas."""
    record: dict[str, Any] = {"patient": item.patient, "instance": item.instance,
                              "cavity_dice": dice(cavity, item.cavity_mask)}
    if item.myocardium_mask is None:
        return record
    truth_myocardium = item.myocardium_mask
    mid_wall = mid_wall_mask(truth_myocardium, item.cavity_mask, item.pixel_spacing_mm)
    record |= {
        "myocardium_dice": dice(myocardium, truth_myocardium),
        "mid_wall_coverage": float((mid_wall & myocardium).sum() / max(int(mid_wall.sum()), 1)),
        "myocardium_area_ratio": float(myocardium.sum() / max(int(truth_myocardium.sum()), 1)),
    }
    try:
        model_contours = fit_contours(cavity, myocardium, item.pixel_spacing_mm)
        truth = fit_contours(item.cavity_mask, truth_myocardium, item.pixel_spacing_mm)
    except AnalysisError as error:
        LOGGER.warning("%s instance %d: contours cannot be fitted: %s", item.patient, item.instance, error)
        return record | {"fitted": False}
    return record | {
        "fitted": True,
        "hausdorff_endo_mm": hausdorff_mm(model_contours.endo_px, truth.endo_px, item.pixel_spacing_mm),
        "hausdorff_epi_mm": hausdorff_mm(model_contours.epi_px, truth.epi_px, item.pixel_spacing_mm),
    }


def evaluate(slices: list[SunnybrookSlice], model: Model) -> list[dict[str, Any]]:
    """Records of :func:`slice_metrics` for the model run as the node runs it (inference.segmentation)."""
    segmentations = segment_maps([s.image for s in slices], [s.pixel_spacing_mm for s in slices], model)
    return [slice_metrics(item, seg.cavity_mask, seg.myocardium_mask)
            for item, seg in zip(slices, segmentations, strict=True)]


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means (and worst cases) over the records: myocardium figures over the slices with an epicardial contour."""
    with_myocardium = [r for r in records if "myocardium_dice" in r]
    fitted = [r for r in with_myocardium if r.get("fitted")]

    def stat(key: str, group: list[dict[str, Any]], how: Any = np.mean) -> float | None:
        values = np.array([r[key] for r in group], dtype=np.float64)
        return round(float(how(values)), 4) if values.size else None

    hausdorff = [{"hausdorff_mm": r[key]} for r in fitted for key in ("hausdorff_endo_mm", "hausdorff_epi_mm")]
    return {
        "slices": len(records),
        "slices_with_myocardium": len(with_myocardium),
        "myocardium_dice_mean": stat("myocardium_dice", with_myocardium),
        "myocardium_dice_min": stat("myocardium_dice", with_myocardium, np.min),
        "cavity_dice_mean": stat("cavity_dice", records),
        "cavity_dice_min": stat("cavity_dice", records, np.min),
        "hausdorff_endo_mm_mean": stat("hausdorff_endo_mm", fitted),
        "hausdorff_epi_mm_mean": stat("hausdorff_epi_mm", fitted),
        "hausdorff_mm_mean": stat("hausdorff_mm", hausdorff),
        "hausdorff_mm_max": stat("hausdorff_mm", hausdorff, np.max),
        "mid_wall_coverage_mean": stat("mid_wall_coverage", with_myocardium),
        "mid_wall_coverage_min": stat("mid_wall_coverage", with_myocardium, np.min),
        "myocardium_area_ratio_mean": stat("myocardium_area_ratio", with_myocardium),
        "contour_fit_failures": len(with_myocardium) - len(fitted),
    }
