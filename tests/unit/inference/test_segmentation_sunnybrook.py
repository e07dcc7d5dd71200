"""The shipped segmentation model on real images: the held-out Sunnybrook patient, run as the node runs maps.

Fixture (see shared/data/README.md): Sunnybrook Cardiac Data cine SSFP short-axis images with expert contours
(CC0). The model never trained on this patient (training/sunnybrook.py HELD_OUT_PATIENT). The shipped 2.0.0 reaches
a myocardium Dice of 0.74 on average (0.58 at worst), the experts' mid-wall region 91 % covered (70 % at worst),
Hausdorff 5.3 mm: short of the aims (Dice 0.85, coverage 95 %). The thresholds sit between it and the phantom-only
1.0.0 it replaced (0.71, 0.56; 88 %, 68 %; 5.8 mm; cavity 0.88, 0.77), so that a model that learnt only the
phantom's appearance, or a broken one, fails them.
"""

from __future__ import annotations

import pytest

from inference.runtime import Device, int8_sums_exactly, load_model, shipped_model_path
from tests.shared_data import SHARED_DATA
from training.sunnybrook import HELD_OUT_PATIENT, evaluate, linked_folders, load_patient, summarise

MODEL_PATH = shipped_model_path("segmentation.onnx")
MIN_MEAN_MYOCARDIUM_DICE = 0.72
MIN_SLICE_MYOCARDIUM_DICE = 0.55
MIN_MEAN_MID_WALL_COVERAGE = 0.89
MIN_SLICE_MID_WALL_COVERAGE = 0.65
MAX_MEAN_HAUSDORFF_MM = 5.6
MIN_MEAN_CAVITY_DICE = 0.88
MIN_SLICE_CAVITY_DICE = 0.80


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL_PATH, device=Device.CPU)


@pytest.fixture(scope="module")
def summary(model):
    folders = [pair for pair in linked_folders(SHARED_DATA / "sunnybrook") if pair[1].name == HELD_OUT_PATIENT]
    assert len(folders) == 1, f"{HELD_OUT_PATIENT} is not in shared/data/sunnybrook"
    return summarise(evaluate(load_patient(*folders[0]), model))


def test_the_held_out_myocardium_matches_the_experts(summary) -> None:
    assert summary["slices_with_myocardium"] == 9
    assert summary["myocardium_dice_mean"] >= MIN_MEAN_MYOCARDIUM_DICE, summary
    assert summary["myocardium_dice_min"] >= MIN_SLICE_MYOCARDIUM_DICE, summary


def test_the_experts_mid_wall_region_lies_inside_the_predicted_myocardium(summary) -> None:
    # The phantom-only model put the endocardium inside the blood pool or missed parts of the wall.
    assert summary["mid_wall_coverage_mean"] >= MIN_MEAN_MID_WALL_COVERAGE, summary
    assert summary["mid_wall_coverage_min"] >= MIN_SLICE_MID_WALL_COVERAGE, summary


def test_the_borders_lie_near_the_experts(summary) -> None:
    assert summary["contour_fit_failures"] == 0
    assert summary["hausdorff_mm_mean"] <= MAX_MEAN_HAUSDORFF_MM, summary


def test_every_slice_gets_its_cavity(summary) -> None:
    assert summary["slices"] == 18
    assert summary["cavity_dice_mean"] >= MIN_MEAN_CAVITY_DICE, summary
    assert summary["cavity_dice_min"] >= MIN_SLICE_CAVITY_DICE, summary


def test_the_card_reports_the_same_figures_and_the_held_out_patient(model, summary) -> None:
    raw = model.card.raw
    assert HELD_OUT_PATIENT not in raw["training"]["sunnybrook"]["train_patients"]
    reported = raw["metrics"]["sunnybrook_held_out"]
    assert reported["patient"] == HELD_OUT_PATIENT
    # On the CPU the node runs the card's int8 copy where the CPU sums int8 products exactly, else the float model:
    # the figures of both are in the card.
    assert model.int8 == int8_sums_exactly()
    int8_figures = raw["cpu_int8"]["held_out"]["int8"]["sunnybrook_held_out"]
    float_figures = raw["cpu_int8"]["held_out"]["float32"]["sunnybrook_held_out"]
    for key in ("myocardium_dice_mean", "mid_wall_coverage_mean", "hausdorff_mm_mean"):
        assert (int8_figures if model.int8 else float_figures)[key] == pytest.approx(summary[key], abs=2e-3)
        assert float_figures[key] == pytest.approx(reported["summary"][key], abs=2e-3)
    previous = raw["metrics"]["previous_model"]["sunnybrook_held_out"]
    assert previous["myocardium_dice_mean"] < MIN_MEAN_MYOCARDIUM_DICE  # the model it replaced fails these tests
