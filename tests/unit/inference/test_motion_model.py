"""The shipped motion artefact model on fresh phantom studies, through the runtime path the node uses."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest

from inference.aha import aha_segments, rv_insertion_points
from inference.errors import AnalysisError
from inference.grids import lv_grid, mask_centre_px, normalise_images, normalise_map, sample
from inference.motion import (
    MotionInput,
    MotionResult,
    detect_motion,
    detect_motions,
    motion_image_stack,
    motion_inputs,
    segment_positions,
)
from inference.runtime import load_model, shipped_model_path
from training import datasets
from training.phantom_slices import SliceCase, iter_cases, study_cases

SEED = 4711  # below 100000: never seen in training
N_STUDIES = 16
MIN_POSITIVE_SEGMENTS = 40
MIN_AUC = 0.90


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum, ties given their mean rank."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.size)
    ranks[order] = np.arange(1, scores.size + 1)
    for value in np.unique(scores):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_positive, n_negative = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def default_aha_map(case: SliceCase) -> tuple[np.ndarray, tuple[float, float]]:
    """The node's AHA map without an RV: centre of the heart mask, default insertion angles."""
    myocardium = case.myocardium_mask
    centre = mask_centre_px(case.labels > 0)
    anterior, inferior = rv_insertion_points(myocardium, None, centre, pixel_spacing_mm=case.pixel_spacing_mm)
    segments = aha_segments(myocardium, centre, anterior, case.level.value, inferior_insertion_px=inferior,
                            pixel_spacing_mm=case.pixel_spacing_mm)
    return segments, centre


@dataclass(frozen=True)
class Outcome:
    case: SliceCase
    truth_map: MotionResult
    default_map: MotionResult
    default_segments: np.ndarray
    seconds: float  # detect_motion, truth map


@pytest.fixture(scope="module")
def model():
    return load_model(shipped_model_path("motion.onnx"), device="cpu")


@pytest.fixture(scope="module")
def outcomes(model) -> list[Outcome]:
    results = []
    for case in iter_cases(SEED, N_STUDIES, motion_rate=0.5, workers=2):
        if not case.is_t1:
            continue
        started = time.perf_counter()
        truth = detect_motion(case.images, case.times_ms, case.map_ms, case.r2, case.aha_segments,
                              case.lv_centre_px, case.pixel_spacing_mm, model)
        seconds = time.perf_counter() - started
        segments, centre = default_aha_map(case)
        default = detect_motion(case.images, case.times_ms, case.map_ms, case.r2, segments, centre,
                                case.pixel_spacing_mm, model)
        results.append(Outcome(case, truth, default, segments, seconds))
    return results


def test_card_states_contract_and_threshold(model) -> None:
    assert [spec.name for spec in model.card.inputs] == ["ir_images", "t1_map", "r2_map", "segments"]
    assert [spec.name for spec in model.card.outputs] == ["segment_logits", "whole_logit", "attention"]
    assert model.card.inputs[0].shape == (None, 11, 96, 96)
    assert model.card.outputs[2].shape == (None, 6, 96, 96)
    threshold = model.card.raw["metrics"]["decision_threshold"]
    assert 0.0 < threshold < 1.0
    assert model.card.raw["size_bytes"] < 20 * 1024 * 1024


@pytest.mark.slow
def test_segment_auc_on_fresh_phantom_studies(outcomes: list[Outcome]) -> None:
    labels, truth_scores, default_scores = [], [], []
    for outcome in outcomes:
        for segment, moved in outcome.case.motion_by_segment.items():
            labels.append(moved)
            truth_scores.append(outcome.truth_map.segment_probabilities[segment])
            default_scores.append(outcome.default_map.segment_probabilities[segment])
    labels = np.array(labels)
    assert labels.sum() >= MIN_POSITIVE_SEGMENTS
    truth_auc, default_auc = rank_auc(labels, truth_scores), rank_auc(labels, default_scores)
    whole_labels = np.array([any(o.case.motion_by_segment.values()) for o in outcomes])
    whole_auc = rank_auc(whole_labels, [o.truth_map.whole_image_probability for o in outcomes])
    print(f"segment AUC: truth AHA map {truth_auc:.3f}, default AHA map {default_auc:.3f} "
          f"({labels.sum()} of {labels.size} segments with motion); whole image {whole_auc:.3f}; "
          f"detect_motion {1000 * np.median([o.seconds for o in outcomes]):.0f} ms per slice")
    assert truth_auc >= MIN_AUC
    assert default_auc >= MIN_AUC
    assert whole_auc >= MIN_AUC


@pytest.mark.slow
def test_attention_falls_on_the_positive_segment(outcomes: list[Outcome]) -> None:
    checked = 0
    for outcome in outcomes:
        case, result = outcome.case, outcome.truth_map
        for segment, moved in case.motion_by_segment.items():
            if not moved:
                continue
            attention = result.attention_maps[segment]
            assert attention.shape == case.map_ms.shape
            assert attention.min() >= 0.0 and attention.max() <= 1.0
            inside = case.aha_segments == segment
            assert attention[inside].mean() > attention[~inside].mean(), (case.study_index, segment)
            # Within the myocardium too: the map picks its own segment, not the whole wall.
            assert attention[inside].mean() > attention[(case.aha_segments > 0) & ~inside].mean()
            checked += 1
    assert checked >= MIN_POSITIVE_SEGMENTS


@pytest.mark.slow
def test_result_covers_the_segments_of_the_map(outcomes: list[Outcome], model) -> None:
    threshold = model.card.raw["metrics"]["decision_threshold"]
    for outcome in outcomes[:6]:
        present = sorted(int(s) for s in np.unique(outcome.default_segments) if s > 0)
        assert sorted(outcome.default_map.segment_probabilities) == present
        assert sorted(outcome.default_map.attention_maps) == present
        assert all(0.0 <= p <= 1.0 for p in outcome.default_map.segment_probabilities.values())
        assert outcome.default_map.threshold == pytest.approx(threshold)


@pytest.fixture(scope="module")
def one_case() -> SliceCase:
    return next(case for case in study_cases(SEED + 1, 0, motion_rate=1.0) if case.is_t1)


def test_inputs_match_the_training_preprocessing(one_case: SliceCase) -> None:
    case = one_case
    shuffled = np.random.default_rng(0).permutation(len(case.times_ms))
    inputs = motion_inputs(case.images[shuffled], case.times_ms[shuffled], case.map_ms, case.r2, case.aha_segments,
                           case.lv_centre_px, case.pixel_spacing_mm)
    grid = lv_grid(case.lv_centre_px, case.pixel_spacing_mm)
    np.testing.assert_array_equal(motion_image_stack(case.images[shuffled], case.times_ms[shuffled]),
                                  datasets.motion_image_stack(case.images, case.times_ms))
    expected_images = normalise_images(sample(datasets.motion_image_stack(case.images, case.times_ms), grid))
    np.testing.assert_allclose(inputs["ir_images"][0], expected_images, atol=1e-6)
    np.testing.assert_allclose(inputs["t1_map"][0, 0], normalise_map(sample(case.map_ms, grid)), atol=1e-6)
    np.testing.assert_allclose(inputs["r2_map"][0, 0], sample(case.r2, grid), atol=1e-6)
    positions = sample(datasets.segment_positions(case.aha_segments), grid, order=0).astype(np.uint8)
    layout = np.stack([positions == p for p in range(1, 7)]).astype(np.float32)
    np.testing.assert_array_equal(inputs["segments"][0], layout)
    assert layout[:4].any(axis=(1, 2)).all()
    np.testing.assert_array_equal(segment_positions(case.aha_segments), datasets.segment_positions(case.aha_segments))
    assert {k: v.shape for k, v in inputs.items()} == {"ir_images": (1, 11, 96, 96), "t1_map": (1, 1, 96, 96),
                                                         "r2_map": (1, 1, 96, 96), "segments": (1, 6, 96, 96)}


def test_bad_inputs_raise_analysis_errors(one_case: SliceCase, model) -> None:
    case = one_case
    arguments = (case.map_ms, case.r2, case.aha_segments, case.lv_centre_px, case.pixel_spacing_mm, model)
    with pytest.raises(AnalysisError, match="at least 2"):
        detect_motion(case.images[:1], case.times_ms[:1], *arguments)
    with pytest.raises(AnalysisError, match="inversion times"):
        detect_motion(case.images, case.times_ms[:-1], *arguments)
    with pytest.raises(AnalysisError, match="r2"):
        detect_motion(case.images, case.times_ms, case.map_ms, case.r2[:-1], *arguments[2:])
    with pytest.raises(AnalysisError, match="aha_segment_map"):
        detect_motion(case.images, case.times_ms, case.map_ms, case.r2, case.aha_segments[:, :-2], *arguments[3:])
    with pytest.raises(AnalysisError, match="images must be"):
        detect_motion(case.images[0], case.times_ms, *arguments)


def test_inputs_the_caller_checked_give_the_same_result_and_must_match_the_slices(one_case: SliceCase, model) -> None:
    case = one_case
    item = MotionInput(case.images, case.times_ms, case.map_ms, case.r2, case.aha_segments, case.lv_centre_px,
                       case.pixel_spacing_mm)
    inputs = motion_inputs(case.images, case.times_ms, case.map_ms, case.r2, case.aha_segments, case.lv_centre_px,
                           case.pixel_spacing_mm)
    alone, given = detect_motions([item], model)[0], detect_motions([item], model, [inputs])[0]
    assert given.segment_probabilities == alone.segment_probabilities
    for segment, attention in alone.attention_maps.items():
        np.testing.assert_array_equal(given.attention_maps[segment], attention)
        assert attention.shape == case.map_ms.shape
    with pytest.raises(ValueError, match="1 slices but 2 model inputs"):
        detect_motions([item], model, [inputs, inputs])
