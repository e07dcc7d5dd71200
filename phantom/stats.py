"""Reader statistics of a phantom folder, computed from the readers' DICOM-SEG files.

For every slice (one sidecar each) the myocardium masks are read back from the SEG files the sidecar lists:
experts are compared pairwise, experts and trainees with the truth; trainees are grouped by their error mode.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from rich.console import Console
from rich.table import Table

from phantom.dicom_contours import MYOCARDIUM_LABEL, read_seg_masks
from phantom.sidecar import MANIFEST_NAME, SIDECAR_NAME

LOGGER = logging.getLogger(__name__)


class PhantomStatsError(ValueError):
    """Raised when a folder holds no phantom slices or a sidecar does not match its files."""


@dataclass(frozen=True)
class DiceSummary:
    """Summary of a set of Dice coefficients."""

    n: int
    mean: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: list[float]) -> DiceSummary:
        if not values:
            return cls(0, float("nan"), float("nan"), float("nan"))
        array = np.asarray(values, dtype=np.float64)
        return cls(int(array.size), float(array.mean()), float(array.min()), float(array.max()))

    def to_json(self) -> dict[str, Any]:
        if self.n == 0:
            return {"n": 0, "mean": None, "min": None, "max": None}
        return {"n": self.n, "mean": round(self.mean, 4), "min": round(self.minimum, 4), "max": round(self.maximum, 4)}


@dataclass(frozen=True)
class ReaderStats:
    """Myocardium Dice statistics of a phantom folder."""

    n_studies: int
    n_slices: int
    expert_pairwise: DiceSummary
    expert_vs_truth: DiceSummary
    trainee_vs_truth: dict[str, DiceSummary]  # by error mode

    def to_json(self) -> dict[str, Any]:
        return {
            "n_studies": self.n_studies,
            "n_slices": self.n_slices,
            "expert_pairwise_dice": self.expert_pairwise.to_json(),
            "expert_vs_truth_dice": self.expert_vs_truth.to_json(),
            "trainee_vs_truth_dice": {
                mode: summary.to_json() for mode, summary in sorted(self.trainee_vs_truth.items())
            },
        }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * float(np.count_nonzero(a & b)) / total


def _myocardium(study_folder: Path, relative_path: str) -> np.ndarray:
    path = study_folder / relative_path
    if not path.is_file():
        raise PhantomStatsError(f"SEG file {path} listed in a sidecar does not exist")
    masks = read_seg_masks(pydicom.dcmread(path))
    if MYOCARDIUM_LABEL not in masks:
        raise PhantomStatsError(f"SEG {path} has no {MYOCARDIUM_LABEL!r} segment, got {sorted(masks)}")
    return masks[MYOCARDIUM_LABEL]


def collect_reader_stats(directory: Path) -> ReaderStats:
    """Dice statistics of every slice under ``directory`` (a study folder or a folder of studies).

    Raises
    ------
    PhantomStatsError
        If ``directory`` holds no sidecars or a sidecar lists a missing or malformed SEG.
    """
    root = Path(directory)
    sidecars = sorted(root.rglob(SIDECAR_NAME))
    if not sidecars:
        raise PhantomStatsError(f"no {SIDECAR_NAME} under {root}; expected a folder written by `myomap phantom`")
    expert_pairs: list[float] = []
    expert_truth: list[float] = []
    trainee_truth: dict[str, list[float]] = {}
    studies = set()
    n_slices = 0
    for sidecar_path in sidecars:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        if sidecar.get("study_kind") == "t1_vials":
            continue  # a vial phantom has no myocardium and no readers
        n_slices += 1
        study_folder = sidecar_path.parent.parent  # <study>/<level>/sidecar.json
        if not (study_folder / MANIFEST_NAME).is_file():
            raise PhantomStatsError(f"{sidecar_path} is not inside a study folder with a {MANIFEST_NAME}")
        studies.add(sidecar["study"]["study_instance_uid"])
        masks = {
            entry["reader"]: (entry, _myocardium(study_folder, entry["seg"]["paths"][0]))
            for entry in sidecar["readers"]
        }
        truth = next((mask for entry, mask in masks.values() if entry["role"] == "truth"), None)
        experts = [mask for entry, mask in masks.values() if entry["role"] == "expert"]
        expert_pairs.extend(dice(a, b) for a, b in combinations(experts, 2))
        if truth is None:
            continue
        expert_truth.extend(dice(mask, truth) for mask in experts)
        for entry, mask in masks.values():
            if entry["role"] == "trainee":
                trainee_truth.setdefault(str(entry["error_mode"]), []).append(dice(mask, truth))
    LOGGER.info("reader statistics over %d slices of %d studies", n_slices, len(studies))
    return ReaderStats(
        n_studies=len(studies),
        n_slices=n_slices,
        expert_pairwise=DiceSummary.of(expert_pairs),
        expert_vs_truth=DiceSummary.of(expert_truth),
        trainee_vs_truth={mode: DiceSummary.of(values) for mode, values in trainee_truth.items()},
    )


def render_table(stats: ReaderStats, console: Console | None = None) -> None:
    """Print ``stats`` as a table."""
    table = Table(title=f"Myocardium Dice: {stats.n_slices} slices of {stats.n_studies} studies")
    for column in ("comparison", "n", "mean", "min", "max"):
        table.add_column(column, justify="left" if column == "comparison" else "right")
    rows = [("experts pairwise", stats.expert_pairwise), ("experts vs truth", stats.expert_vs_truth)]
    rows.extend((f"trainee vs truth: {mode}", summary) for mode, summary in sorted(stats.trainee_vs_truth.items()))
    for label, summary in rows:
        if summary.n == 0:
            table.add_row(label, "0", "-", "-", "-")
        else:
            figures = (summary.mean, summary.minimum, summary.maximum)
            table.add_row(label, str(summary.n), *(f"{value:.3f}" for value in figures))
    (console or Console()).print(table)
