"""Slices shared with a forked helper process give what the analysis process gives alone, with their motion; a
helper that dies or is busy loses no slice."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest
from pydicom.dataset import Dataset

from config import Settings
from dicomnode.analysis import slice_helper, slices
from dicomnode.analysis.slice_helper import SliceHelper
from dicomnode.analysis.slices import (
    SliceInput,
    SliceOutcome,
    analyse_slices,
    start_node_slice_helpers,
    start_slice_helpers,
    stop_slice_helpers,
)
from inference.mapping import MapKind
from inference.model_set import ModelSet, load_models
from inference.slice_analysis import RawImages, SliceRequest, with_motion
from inference.slice_analysis import analyse_slices as analyse_batch
from training.phantom_slices import study_cases

PHANTOM_SEED = 61  # test seeds stay below 100000
VALUE_TOLERANCE = 1e-4  # batches of another size change the models' rounding in the last float32 bits


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return load_models(device="cpu", threads=1)


@pytest.fixture(scope="module")
def inputs() -> list[SliceInput]:
    cases = [case for study in (0, 1) for case in study_cases(PHANTOM_SEED, study) if case.is_t1][:3]
    good = [SliceInput(case.map_ms, MapKind.T1, case.pixel_spacing_mm, Dataset(),
                       RawImages(case.images, case.times_ms, case.r2)) for case in cases]
    first = cases[0]
    bad_raw = SliceInput(first.map_ms, MapKind.T1, first.pixel_spacing_mm, Dataset(),
                         RawImages(first.images[:1], first.times_ms[:1], first.r2))
    empty = SliceInput(np.zeros((160, 160), dtype=np.float32), MapKind.T1, (1.4, 1.4), Dataset(), None)
    t2 = next(case for case in study_cases(PHANTOM_SEED, 0) if not case.is_t1)  # motion from the T2 fit quality
    t2_input = SliceInput(t2.map_ms, MapKind.T2, t2.pixel_spacing_mm, Dataset(), RawImages(t2.images, t2.times_ms,
                                                                                          t2.r2))
    return [good[0], empty, good[1], bad_raw, good[2], good[0], t2_input]


@pytest.fixture()
def helper(models: ModelSet) -> Iterator[SliceHelper]:
    assert start_slice_helpers(models, 1) == 1
    yield slices._HELPERS[0]
    stop_slice_helpers()


def _assert_same(shared: list[SliceOutcome], alone: list[SliceOutcome]) -> None:
    assert [o.index for o in shared] == list(range(len(alone)))
    for one, other in zip(shared, alone, strict=True):
        assert one.failure == other.failure
        assert one.banner == other.banner
        if other.analysis is None:
            continue
        a, b = one.analysis, other.analysis
        assert a is not None
        assert np.array_equal(a.map_ms, b.map_ms)
        assert np.array_equal(a.segmentation.myocardium_mask, b.segmentation.myocardium_mask)
        assert np.array_equal(a.aha_segment_map, b.aha_segment_map)
        assert a.myocardium_values.mean == pytest.approx(b.myocardium_values.mean, rel=VALUE_TOLERANCE)
        assert a.quality.predicted_dice == pytest.approx(b.quality.predicted_dice, rel=VALUE_TOLERANCE)
        assert a.motion is not None and b.motion is not None
        assert a.motion.segment_probabilities == pytest.approx(b.motion.segment_probabilities, rel=VALUE_TOLERANCE)
        assert a.motion.attention_maps.keys() == b.motion.attention_maps.keys()


def test_a_helper_takes_a_share_and_its_slices_get_their_motion_here(
        models: ModelSet, inputs: list[SliceInput], helper: SliceHelper) -> None:
    alone = analyse_slices(inputs, "T1 map mid", lambda: models, workers=1)
    assert [o.analysis is None for o in alone] == [False, True, False, True, False, False, False]
    sent: list[int] = []
    send = helper.send
    helper.send = lambda requests: (sent.append(len(requests)), send(requests))[1]  # type: ignore[method-assign]
    shared = analyse_slices(inputs, "T1 map mid", lambda: models, workers=2)
    assert sent == [4]  # the helper's share, 1.1 of this process's: its slices' motion is found here
    _assert_same(shared, alone)
    assert "at least 2" in str(shared[3].failure)  # bad raw images fail in the helper's share as they do alone


def test_a_dead_helper_loses_no_slice(models: ModelSet, inputs: list[SliceInput], helper: SliceHelper) -> None:
    alone = analyse_slices(inputs, "T1 map mid", lambda: models, workers=1)
    assert helper.pid is not None
    os.kill(helper.pid, signal.SIGKILL)
    shared = analyse_slices(inputs, "T1 map mid", lambda: models, workers=2)
    _assert_same(shared, alone)
    assert helper.lost
    # From then on the other share goes to a thread of this process.
    _assert_same(analyse_slices(inputs, "T1 map mid", lambda: models, workers=2), alone)


def test_a_helper_that_stops_answering_is_killed_and_its_share_analysed_here(
        models: ModelSet, inputs: list[SliceInput], helper: SliceHelper, monkeypatch: pytest.MonkeyPatch) -> None:
    alone = analyse_slices(inputs, "T1 map mid", lambda: models, workers=1)
    monkeypatch.setattr(slice_helper, "ANSWER_BASE_S", 1.0)
    monkeypatch.setattr(slice_helper, "ANSWER_S_PER_SLICE", 0.0)
    assert helper.pid is not None
    os.kill(helper.pid, signal.SIGSTOP)  # hangs
    _assert_same(analyse_slices(inputs, "T1 map mid", lambda: models, workers=2), alone)
    assert helper.lost
    assert not os.path.exists(f"/proc/{helper.pid}")  # killed and reaped


def test_a_busy_helper_or_one_of_other_models_leaves_the_share_to_a_thread(
        models: ModelSet, inputs: list[SliceInput], helper: SliceHelper) -> None:
    alone = analyse_slices(inputs, "T1 map mid", lambda: models, workers=1)
    assert helper.try_acquire()  # another series has it
    try:
        _assert_same(analyse_slices(inputs, "T1 map mid", lambda: models, workers=2), alone)
    finally:
        helper.release()
    other = load_models(device="cpu", threads=1)
    _assert_same(analyse_slices(inputs, "T1 map mid", lambda: other, workers=2), alone)
    assert helper.try_acquire()  # it was never taken by either
    helper.release()


def test_motion_added_afterwards_is_the_motion_found_in_the_batch(models: ModelSet,
                                                                   inputs: list[SliceInput]) -> None:
    requests = [SliceRequest(i.map_ms, i.map_kind, i.pixel_spacing_mm, "mid", raw=i.raw) for i in inputs]
    together = analyse_batch(requests, models)
    afterwards = with_motion(requests, analyse_batch([SliceRequest(r.map_ms, r.map_kind, r.pixel_spacing_mm,
                                                                   r.level) for r in requests], models), models)
    for one, other in zip(afterwards, together, strict=True):
        assert type(one) is type(other)
        if isinstance(other, Exception):
            assert str(one) == str(other)
            continue
        assert one.motion is not None and other.motion is not None  # type: ignore[union-attr]
        assert one.motion.segment_probabilities == other.motion.segment_probabilities  # type: ignore[union-attr]


def test_shares_are_in_proportion_to_their_weights() -> None:
    assert slices._shares(21, [1.0, 1.1]) == [range(0, 10), range(10, 21)]
    assert slices._shares(1, [1.0, 1.1]) == [range(0, 0), range(0, 1)]
    assert slices._shares(6, [1.0, 1.0, 1.0]) == [range(0, 2), range(2, 4), range(4, 6)]


def test_the_node_forks_no_helper_when_asked_not_to_or_when_its_models_run_thread_pools() -> None:
    settings = Settings()
    for change in ({"slice_processes": False}, {"threads": 0}, {"threads": 2}):
        changed = settings.model_copy(update={"models": settings.models.model_copy(update=change)})
        assert start_node_slice_helpers(changed) == 0
    assert not slices._HELPERS
