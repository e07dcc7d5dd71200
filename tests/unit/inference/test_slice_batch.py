"""Slices batched through the models give what each gets alone: the same masks, values, motion and QC."""

from __future__ import annotations

import numpy as np
import pytest

from inference import quality
from inference.errors import AnalysisError
from inference.heart_check import NoLeftVentricleError
from inference.mapping import MapKind
from inference.model_set import ModelSet, load_models
from inference.slice_analysis import RawImages, SliceAnalysis, SliceRequest, analyse_slice, analyse_slices
from training.phantom_slices import study_cases

PHANTOM_SEED = 59  # test seeds stay below 100000
#: Larger batches change the models' rounding in the last float32 bits; what is reported must not move more.
VALUE_TOLERANCE = 1e-4  # relative, for T1, wall thickness, probabilities and predicted Dice


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return load_models(device="cpu", threads=1)


@pytest.fixture(scope="module")
def requests() -> list[SliceRequest]:
    cases = [case for study in (0, 1) for case in study_cases(PHANTOM_SEED, study) if case.is_t1]
    good = [SliceRequest(case.map_ms, MapKind.T1, case.pixel_spacing_mm, case.level,
                         raw=RawImages(case.images, case.times_ms, case.r2)) for case in cases]
    empty = SliceRequest(np.zeros((160, 160), dtype=np.float32), MapKind.T1, (1.4, 1.4), "mid")
    flat = SliceRequest(np.ones(10, dtype=np.float32), MapKind.T1, (1.4, 1.4), "mid")
    bad_raw = SliceRequest(cases[0].map_ms, MapKind.T1, cases[0].pixel_spacing_mm, cases[0].level,
                           raw=RawImages(cases[0].images[:1], cases[0].times_ms[:1], cases[0].r2))
    return [good[0], empty, *good[1:3], flat, bad_raw, *good[3:]]


def _assert_same(batched: SliceAnalysis, alone: SliceAnalysis) -> None:
    assert np.array_equal(batched.segmentation.myocardium_mask, alone.segmentation.myocardium_mask)
    assert np.array_equal(batched.segmentation.cavity_mask, alone.segmentation.cavity_mask)
    assert np.array_equal(batched.aha_segment_map, alone.aha_segment_map)
    assert batched.myocardium_values.mean == pytest.approx(alone.myocardium_values.mean, rel=VALUE_TOLERANCE)
    assert {s: v.mean for s, v in batched.segment_values.items()} == pytest.approx(
        {s: v.mean for s, v in alone.segment_values.items()}, rel=VALUE_TOLERANCE, nan_ok=True)
    assert batched.wall_thickness.mean_mm == pytest.approx(alone.wall_thickness.mean_mm, rel=VALUE_TOLERANCE)
    assert batched.motion is not None and alone.motion is not None
    assert batched.motion.segment_probabilities == pytest.approx(alone.motion.segment_probabilities,
                                                                 rel=VALUE_TOLERANCE)
    assert batched.quality.predicted_dice == pytest.approx(alone.quality.predicted_dice, rel=VALUE_TOLERANCE)
    assert batched.quality.autoencoder_dice == pytest.approx(alone.quality.autoencoder_dice, rel=VALUE_TOLERANCE)
    assert batched.quality.evaluations == alone.quality.evaluations
    assert batched.quality.doubts == alone.quality.doubts


def test_batched_slices_give_what_each_gives_alone_and_fail_alone(models: ModelSet,
                                                                  requests: list[SliceRequest]) -> None:
    results = analyse_slices(requests, models)
    assert len(results) == len(requests)
    assert isinstance(results[1], NoLeftVentricleError)
    assert isinstance(results[4], AnalysisError) and "2-D map" in str(results[4])
    assert isinstance(results[5], AnalysisError) and "at least 2" in str(results[5])
    analysed = [(r, q) for r, q in zip(results, requests, strict=True) if q.raw is not None and q is not requests[5]]
    assert len(analysed) >= 4
    for result, request in analysed:
        assert isinstance(result, SliceAnalysis)
        alone = analyse_slice(request.map_ms, request.map_kind, request.pixel_spacing_mm, request.level, models,
                              raw=request.raw)
        _assert_same(result, alone)


def test_searches_advanced_together_find_what_each_finds_alone(models: ModelSet, requests: list[SliceRequest],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    good = [r for r in requests if r.raw is not None and r is not requests[5]][:4]
    pairs = []
    for request in good:
        mask = analyse_slice(request.map_ms, request.map_kind, request.pixel_spacing_mm, request.level,
                             models).segmentation.myocardium_mask
        pairs.append(quality.crop_pair(np.nan_to_num(request.map_ms), mask, request.pixel_spacing_mm))
    monkeypatch.setattr(quality, "CPU_SEARCH_BATCH", len(pairs))  # all in one batch, as on a GPU
    together = quality.search_latents(np.stack(pairs), models.qc_encoder, models.qc_decoder)
    for pair, found in zip(pairs, together, strict=True):
        alone = quality.search_latent(pair, models.qc_encoder, models.qc_decoder)
        assert found.evaluations == alone.evaluations
        assert found.objective == pytest.approx(alone.objective, rel=VALUE_TOLERANCE)
        np.testing.assert_allclose(found.latent, alone.latent, atol=1e-3)
        assert quality.raw_dice(found, pair) == pytest.approx(quality.raw_dice(alone, pair), abs=0.01)
