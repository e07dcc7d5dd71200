"""The shipped consensus model: it meets its card, refuses bad input, and on fresh phantom studies brings trainee
contours of every error mode closer to the truth."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from inference.errors import AnalysisError, ShapeMismatchError
from inference.expert_consensus import INPUT_NAME, OUTPUT_NAME, expert_consensus_mask, largest_component
from inference.grids import CROP_SIZE
from inference.runtime import Model, load_model, shipped_model_path
from inference.trainee_scoring import ErrorMode
from phantom.anatomy import choose_matrix, make_heart_geometry, make_slice_anatomy
from phantom.model import SliceAnatomy
from phantom.readers import dice, trainee_with_mode
from phantom.study import LEVEL_ORDER, StudyRequest, _Purpose, _rng, plan_study
from phantom.tissue import sample_pathology, sample_tissue_properties
from training.model_card import MAX_MODEL_BYTES
from training.phantom_slices import study_cases

TEST_SEED = 4242  # below 100000: never seen in training
N_STUDIES = 3
REQUIRED_FRACTION = 0.80


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(shipped_model_path("consensus.onnx"), device="cpu", threads=1)


def study_anatomies(seed: int, study_index: int) -> dict[str, SliceAnatomy]:
    """The truth anatomy of each level of a study, drawn from the same random streams as
    training.phantom_slices.study_cases (so that trainees can be drawn with a chosen error mode)."""
    plan = plan_study(StudyRequest(seed=seed), study_index)
    heart_rng = _rng(seed, study_index, _Purpose.HEART)
    heart = make_heart_geometry(heart_rng)
    properties = sample_tissue_properties(heart_rng, plan.field)
    matrix, spacing_mm = choose_matrix(heart_rng)
    anatomies = {}
    for level in LEVEL_ORDER:
        rng = _rng(seed, study_index, _Purpose.SLICE, LEVEL_ORDER.index(level))
        anatomies[level.value] = make_slice_anatomy(
            rng, level, plan.field, matrix=matrix, pixel_spacing_mm=spacing_mm,
            pathology=sample_pathology(rng, level), geometry=heart, properties=properties,
        )
    return anatomies


def test_model_meets_its_card(model: Model):
    card = model.card
    assert card.name == "consensus"
    assert [spec.shape for spec in card.inputs] == [(None, 2, CROP_SIZE, CROP_SIZE)]
    assert [spec.shape for spec in card.outputs] == [(None, 1, CROP_SIZE, CROP_SIZE)]
    assert model.path.stat().st_size < MAX_MODEL_BYTES
    assert card.raw["metrics"]["native_resolution"]["trainees"]["fraction_closer_to_truth"] >= REQUIRED_FRACTION
    # A free batch axis: three crops in, three logit maps out.
    logits = model.run({INPUT_NAME: np.zeros((3, 2, CROP_SIZE, CROP_SIZE), dtype=np.float32)})[OUTPUT_NAME]
    assert logits.shape == (3, 1, CROP_SIZE, CROP_SIZE)
    assert np.isfinite(logits).all()


def test_empty_reader_mask_is_refused(model: Model):
    map_ms = np.full((160, 192), 1000.0, dtype=np.float32)
    with pytest.raises(AnalysisError, match="empty"):
        expert_consensus_mask(map_ms, np.zeros(map_ms.shape, dtype=bool), (1.4, 1.4), model)


def test_mask_of_another_shape_is_refused(model: Model):
    map_ms = np.full((160, 192), 1000.0, dtype=np.float32)
    mask = np.zeros((192, 160), dtype=bool)
    mask[80:100, 70:90] = True
    with pytest.raises(ShapeMismatchError, match="shape"):
        expert_consensus_mask(map_ms, mask, (1.4, 1.4), model)


def test_largest_component_keeps_only_the_biggest_part():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:10, 2:10] = True
    mask[15:17, 15:17] = True
    kept = largest_component(mask)
    assert kept.sum() == 64
    assert not kept[15:17, 15:17].any()


@pytest.mark.slow
def test_consensus_is_closer_to_the_truth_than_trainees_of_every_error_mode(model: Model):
    by_mode: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for study_index in range(N_STUDIES):
        anatomies = study_anatomies(TEST_SEED, study_index)
        for case_index, case in enumerate(study_cases(TEST_SEED, study_index)):
            anatomy = anatomies[case.level.value]
            np.testing.assert_array_equal(anatomy.myocardium_mask, case.myocardium_mask)
            rng = np.random.default_rng((TEST_SEED, study_index, case_index))
            for mode in ErrorMode:
                trainee = trainee_with_mode(anatomy, rng, mode).myocardium_mask
                consensus = expert_consensus_mask(case.map_ms, trainee, case.pixel_spacing_mm, model)
                assert consensus.shape == case.map_ms.shape and consensus.dtype == bool
                by_mode[mode.value].append((dice(trainee, case.myocardium_mask),
                                            dice(consensus, case.myocardium_mask)))
    results = np.array([pair for pairs in by_mode.values() for pair in pairs])
    fraction = float((results[:, 1] > results[:, 0]).mean())
    per_mode = {mode: round(float(np.mean([after > before for before, after in pairs])), 2)
                for mode, pairs in by_mode.items()}
    assert len(results) == N_STUDIES * 9 * len(ErrorMode)
    assert fraction >= REQUIRED_FRACTION, f"closer to the truth in {fraction:.2f} of cases; by mode {per_mode}"
    assert results[:, 1].mean() > results[:, 0].mean()
