"""Sunnybrook slices as segmentation training data: labels, the held-out patient and the grids."""

from __future__ import annotations

import numpy as np
import pytest

from inference.segmentation import Segmentation
from tests.shared_data import SHARED_DATA
from training import sunnybrook
from training.sunnybrook import (
    CAVITY,
    CAVITY_ONLY_PATIENTS,
    HELD_OUT_PATIENT,
    MYOCARDIUM,
    NOT_CAVITY,
    load_sunnybrook,
    read_points,
    slice_metrics,
    split,
    summarise,
    to_grids,
)

ROOT = SHARED_DATA / "sunnybrook"


@pytest.fixture(scope="module")
def slices():
    return load_sunnybrook(ROOT)


def test_every_contoured_image_is_loaded_with_its_labels(slices) -> None:
    assert len(slices) == 96 and len({s.patient for s in slices}) == 5
    for item in slices:
        assert item.image.shape == item.cavity_mask.shape == (256, 256)
        assert 1.2 < item.pixel_spacing_mm[0] < 1.4 and item.cavity_mask.any()
        if item.has_myocardium:
            assert item.myocardium_mask.any() and not (item.myocardium_mask & item.cavity_mask).any()
            assert set(np.unique(item.labels)) == {0, CAVITY, MYOCARDIUM}
        else:
            assert set(np.unique(item.labels)) == {CAVITY, NOT_CAVITY}
    # The displaced epicardium of SC-HF-I-6 is never truth.
    assert not any(s.has_myocardium for s in slices if s.patient in CAVITY_ONLY_PATIENTS)
    assert sum(s.has_myocardium for s in slices) == 37


def test_the_held_out_patient_is_not_trained_on(slices) -> None:
    train, test = split(slices)
    assert {s.patient for s in test} == {HELD_OUT_PATIENT}
    assert HELD_OUT_PATIENT not in {s.patient for s in train} and len(train) + len(test) == len(slices)
    assert HELD_OUT_PATIENT not in CAVITY_ONLY_PATIENTS and any(s.has_myocardium for s in test)
    with pytest.raises(ValueError, match="not among"):
        split(slices, "SC-HF-I-99")


def test_grids_hold_the_normalised_image_and_labels(slices) -> None:
    chosen = [next(s for s in slices if s.has_myocardium), next(s for s in slices if not s.has_myocardium)]
    grids = to_grids(chosen)
    assert grids["seg_map"].shape == grids["seg_labels"].shape == (2, 128, 128)
    assert grids["seg_map"].dtype == np.float16 and grids["seg_map"].max() <= 1.5
    assert (grids["seg_labels"][0] == MYOCARDIUM).any() and not (grids["seg_labels"][0] == NOT_CAVITY).any()
    assert (grids["seg_labels"][1] == NOT_CAVITY).any() and not (grids["seg_labels"][1] == MYOCARDIUM).any()
    # 160 mm of a 350 mm field of view: the heart, near the centre, is on the grid.
    for item, labels in zip(chosen, grids["seg_labels"], strict=True):
        area_mm2 = (labels == CAVITY).sum() * 1.25**2
        truth_mm2 = item.cavity_mask.sum() * np.prod(item.pixel_spacing_mm)
        assert abs(area_mm2 - truth_mm2) < 0.1 * truth_mm2


def test_perfect_masks_score_perfectly(slices) -> None:
    item = next(s for s in slices if s.has_myocardium)
    record = slice_metrics(item, item.cavity_mask, item.myocardium_mask)
    assert record["myocardium_dice"] == record["cavity_dice"] == 1.0
    assert record["mid_wall_coverage"] == 1.0 and record["hausdorff_endo_mm"] == 0.0
    shrunk = slice_metrics(item, item.cavity_mask | item.myocardium_mask, np.zeros_like(item.cavity_mask))
    assert shrunk["mid_wall_coverage"] == 0.0 and shrunk["myocardium_dice"] == 0.0
    summary = summarise([record, slice_metrics(slices[-1], slices[-1].cavity_mask, slices[-1].cavity_mask)])
    assert summary["slices"] == 2 and summary["myocardium_dice_mean"] == 1.0


def test_bad_point_lists_are_refused(tmp_path) -> None:
    path = tmp_path / "IM-0001-0001-icontour-manual.txt"
    path.write_text("1 2\n3 4 5\n")
    with pytest.raises(ValueError, match="line 2"):
        read_points(path)
    path.write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match="at least 3"):
        read_points(path)


def test_segmentation_type_is_what_evaluate_reads() -> None:
    assert {"cavity_mask", "myocardium_mask"} <= set(Segmentation.__dataclass_fields__)
    assert callable(sunnybrook.evaluate)
