"""The map job's analysis of a series' slices: in parallel as one at a time, in order, a failing slice alone."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pydicom.dataset import Dataset

from config import Settings
from dicomnode.analysis.slices import SliceInput, SliceOutcome, analyse_slices, slice_workers
from inference.mapping import MapKind
from inference.model_set import ModelSet, load_models
from inference.slice_analysis import RawImages
from reports.result_summary import SliceFigures
from training.phantom_slices import study_cases

PHANTOM_SEED = 58  # test seeds stay below 100000


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return load_models(device="cpu", threads=1)


@pytest.fixture(scope="module")
def slices() -> list[SliceInput]:
    cases = [case for case in study_cases(PHANTOM_SEED, 0) if case.is_t1]
    return [SliceInput(map_ms=case.map_ms, map_kind=MapKind.T1, pixel_spacing_mm=case.pixel_spacing_mm,
                       mr_map=Dataset(), raw=RawImages(case.images, case.times_ms, case.r2)) for case in cases]


def _summaries(outcomes: list[SliceOutcome]) -> list[SliceFigures | None]:
    return [None if o.analysis is None else SliceFigures.of(o.index, o.analysis, o.banner) for o in outcomes]


def test_slices_analysed_in_parallel_give_what_one_at_a_time_gives(
    models: ModelSet, slices: list[SliceInput]
) -> None:
    assert len(slices) >= 3
    one_at_a_time = analyse_slices(slices, "T1 MOLLI mid", lambda: models, workers=1)
    parallel = analyse_slices(slices, "T1 MOLLI mid", lambda: models, workers=3)
    assert [o.index for o in parallel] == list(range(len(slices)))
    assert all(o.analysis is not None for o in parallel)
    assert _summaries(parallel) == _summaries(one_at_a_time)
    assert [o.banner for o in parallel] == [o.banner for o in one_at_a_time]


def test_a_slice_without_myocardium_fails_alone(models: ModelSet, slices: list[SliceInput]) -> None:
    empty = SliceInput(map_ms=np.zeros_like(slices[0].map_ms), map_kind=MapKind.T1,
                       pixel_spacing_mm=slices[0].pixel_spacing_mm, mr_map=Dataset(), raw=None)
    outcomes = analyse_slices([slices[0], empty, slices[1]], "T1 MOLLI mid", lambda: models, workers=2)
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert outcomes[0].analysis is not None and outcomes[2].analysis is not None
    assert outcomes[1].analysis is None
    assert outcomes[1].banner.startswith("Analysis not possible: ")


def test_slice_workers_default_to_the_cores_this_process_may_use() -> None:
    assert slice_workers(Settings()) == len(os.sched_getaffinity(0))
    assert slice_workers(Settings(models={"slice_workers": 3})) == 3
