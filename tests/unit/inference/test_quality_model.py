"""The segmentation-QC autoencoder (qc_encoder, qc_decoder): the contract its cards state, and the Dice it predicts
without ground truth against the real Dice, on phantom studies never used in training (seeds below 100000)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from inference import quality
from inference.metrics import dice
from inference.runtime import load_model, shipped_model_path
from training.model_card import MAX_MODEL_BYTES
from training.phantom_slices import study_cases
from training.quality import quality_masks

SEED = 7001
N_STUDIES = 3


@pytest.fixture(scope="module")
def models():
    encoder = load_model(shipped_model_path("qc_encoder.onnx"), device="cpu", threads=1)
    decoder = load_model(shipped_model_path("qc_decoder.onnx"), device="cpu", threads=1)
    return encoder, decoder


@pytest.fixture(scope="module")
def cases():
    return [case for study in range(N_STUDIES) for case in study_cases(SEED, study)]


def test_models_meet_their_cards(models):
    encoder, decoder = models
    assert encoder.card.name == "qc_encoder" and decoder.card.name == "qc_decoder"
    for model in models:
        assert model.path.stat().st_size < MAX_MODEL_BYTES
        assert model.card.raw["validation_statement"]
    assert [spec.name for spec in encoder.card.inputs] == ["pair"]
    assert [spec.name for spec in encoder.card.outputs] == ["mean", "log_variance"]
    assert [spec.name for spec in decoder.card.outputs] == ["reconstruction"]
    rng = np.random.default_rng(1)
    encoded = encoder.run({"pair": rng.random((3, 2, 96, 96), dtype=np.float32)})
    assert encoded["mean"].shape == (3, 8) and encoded["log_variance"].shape == (3, 8)
    decoded = decoder.run({"latent": rng.normal(size=(5, 8)).astype(np.float32)})["reconstruction"]
    assert decoded.shape == (5, 2, 96, 96)
    assert decoded[:, 1].min() >= 0.0 and decoded[:, 1].max() <= 1.0  # the sigmoid is inside the graph


def test_decoder_card_states_the_search_and_calibration_the_runtime_uses(models):
    _, decoder = models
    search = decoder.card.raw["search"]
    assert search["image_weight"] == quality.IMAGE_WEIGHT
    assert search["mask_weight"] == quality.MASK_WEIGHT
    assert search["prior_weight"] == quality.PRIOR_WEIGHT
    assert search["steps"] == quality.SEARCH_STEPS and search["jacobian_at_steps"] == list(quality.JACOBIAN_AT)
    assert search["decoded_latents"] == quality.search_evaluations(decoder.card.inputs[0].shape[1])
    calibration = decoder.card.raw["calibration"]
    assert len(calibration["raw"]) == len(calibration["dice"]) >= 2
    assert np.all(np.diff(calibration["raw"]) > 0) and np.all(np.diff(calibration["dice"]) >= 0)


def test_empty_segmentation_is_predicted_zero(models, cases):
    case = cases[0]
    estimate = quality.predict_dice(case.map_ms, np.zeros_like(case.myocardium_mask), case.pixel_spacing_mm,
                                    *models)
    assert estimate.predicted_dice == 0.0 and estimate.evaluations == 0


@pytest.mark.slow
def test_predicted_dice_tracks_real_dice_on_fresh_studies(models, cases):
    rng = np.random.default_rng(SEED)
    predicted, real = [], []
    for case in cases:
        for _, _, mask in quality_masks(case, rng):
            if not mask.any():
                continue
            estimate = quality.predict_dice(case.map_ms, mask, case.pixel_spacing_mm, *models)
            assert 0.0 <= estimate.predicted_dice <= 1.0 and estimate.evaluations > 0
            assert estimate.evaluations == quality.search_evaluations(models[1].card.inputs[0].shape[1])
            predicted.append(estimate.predicted_dice)
            real.append(dice(mask, case.myocardium_mask))
    predicted, real = np.array(predicted), np.array(real)
    assert real.min() < 0.6 and real.max() > 0.9  # the masks span poor to good
    assert np.mean(np.abs(predicted - real)) <= 0.055  # card: 0.049 on 40 held-out phantom v1 studies
    assert np.corrcoef(predicted, real)[0, 1] > 0.7


def _badly_degraded(mask: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """The truth shifted by 7 mm and eroded by a pixel: a segmentation that missed the wall."""
    shift_px = (7.0 / pixel_spacing_mm[0] * 0.6, 7.0 / pixel_spacing_mm[1] * 0.8)
    shifted = ndimage.shift(mask.astype(np.float32), shift_px, order=1) >= 0.5
    return ndimage.binary_erosion(shifted)


@pytest.mark.slow
def test_good_segmentation_scores_above_a_badly_degraded_one(models, cases):
    margins = []
    for case in cases:
        good = case.reader_masks[0]  # the first expert
        bad = _badly_degraded(case.myocardium_mask, case.pixel_spacing_mm)
        assert dice(bad, case.myocardium_mask) < 0.6
        good_estimate = quality.predict_dice(case.map_ms, good, case.pixel_spacing_mm, *models)
        bad_estimate = quality.predict_dice(case.map_ms, bad, case.pixel_spacing_mm, *models)
        margins.append(good_estimate.predicted_dice - bad_estimate.predicted_dice)
    # The expert's contour scores higher on (nearly) every slice, and clearly so on average.
    assert np.mean(np.array(margins) > 0) >= 0.95, margins
    assert np.mean(margins) >= 0.15, margins
