"""The models' analysis of a series' map slices, as the node runs it: the models loaded once per process, the
slices batched through the models in parallel threads, each slice's verdict in words, and the series' verdict.

A slice whose analysis fails never stops the other slices: its outcome holds the reason instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from config import Settings
from dicomnode.io.slice_level import level_from_description
from dicomnode.io.t1_protocol import field_strength_t
from inference.errors import AnalysisError
from inference.mapping import MapKind
from inference.model_set import SHIPPED_FILES, ModelSet, load_models
from inference.runtime import ModelContractError
from inference.runtime_status import record_providers
from inference.slice_analysis import RawImages, SliceAnalysis, SliceRequest
from inference.slice_analysis import analyse_slices as analyse_batch
from inference.verdict import banner_text, motion_text

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceInput:
    """One reconstructed slice as the analysis needs it."""

    map_ms: np.ndarray  # 0 where the fit is not valid
    map_kind: MapKind
    pixel_spacing_mm: tuple[float, float]
    mr_map: Dataset  # the node's MR map of the slice: the image the outputs reference
    raw: RawImages | None  # raw IR images and R2, for motion (T1 only)


@dataclass(frozen=True)
class SliceOutcome:
    """What the analysis of one slice gave: an analysis, or the reason there is none."""

    index: int
    analysis: SliceAnalysis | None
    failure: str | None
    banner: str


_MODEL_CACHE: dict[tuple[object, ...], ModelSet] = {}


def node_models(settings: Settings) -> ModelSet:
    """The models the settings name, loaded once per process."""
    models = settings.models
    paths = {name: getattr(models, name) for name in ("segmentation", "consensus", "motion", "qc_encoder",
                                                       "qc_decoder")}
    key = (tuple(sorted(paths.items())), models.device, models.threads)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_models(paths, device=models.device, threads=models.threads)
    return _MODEL_CACHE[key]


def warm_up_models(settings: Settings) -> float | None:
    """Load the models and run each once on zeros, so the first series does not pay for it (the console waits);
    returns the seconds it took, or None when the models cannot be loaded (maps are still made then)."""
    started = time.perf_counter()
    try:
        model_set = node_models(settings)
    except ModelContractError as error:
        LOGGER.error("models unavailable, series will get maps without analysis: %s", error)
        return None
    for name in SHIPPED_FILES:
        model = getattr(model_set, name)
        model.run({spec.name: np.zeros([1 if d is None else d for d in spec.shape], dtype=np.float32)
                   for spec in model.card.inputs})
    try:  # what /healthz and the page report: this process serves no page
        record_providers(settings.storage_root, model_set.providers, str(settings.models.device))
    except OSError as error:
        LOGGER.warning("could not record the models' execution providers: %s", error)
    return time.perf_counter() - started


def analyse_slices(slices: Sequence[SliceInput], series_description: str,
                   models: Callable[[], ModelSet], *, workers: int = 1) -> list[SliceOutcome]:
    """Analyse every slice, batched through the models, in ``workers`` threads of consecutive slices; a failure is
    recorded with its reason, in words for the console.

    Each thread's slices go through each model together (inference/slice_analysis.py ``analyse_slices``); the
    models' sessions are shared by the threads (onnxruntime runs them concurrently and releases the GIL).
    """
    level, _ = level_from_description(series_description)
    try:
        model_set = models()
    except ModelContractError as error:
        LOGGER.error("models unavailable: %s", error)
        reason = "the analysis models could not be loaded"
        return [SliceOutcome(i, None, reason, banner_text(None, reason)) for i in range(len(slices))]
    requests = [SliceRequest(item.map_ms, item.map_kind, item.pixel_spacing_mm, level, raw=item.raw,
                             field_strength_t=field_strength_t(item.mr_map)) for item in slices]
    count = max(1, min(workers, len(slices)))
    bounds = [len(slices) * part // count for part in range(count + 1)]
    chunks = [range(bounds[part], bounds[part + 1]) for part in range(count)]

    def analyse_chunk(indices: range) -> list[SliceOutcome]:
        try:
            results: list[SliceAnalysis | Exception] = list(
                analyse_batch([requests[i] for i in indices], model_set))
        except Exception as error:  # a fault in a batched model run must not stop the maps or other batches
            LOGGER.exception("slices %d-%d: the analysis failed", indices.start, indices.stop - 1)
            results = [error] * len(indices)
        return [_outcome(index, result) for index, result in zip(indices, results, strict=True)]

    if count == 1:
        return analyse_chunk(chunks[0])
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="slice") as pool:
        return [outcome for part in pool.map(analyse_chunk, chunks) for outcome in part]


def _outcome(index: int, result: SliceAnalysis | Exception) -> SliceOutcome:
    if isinstance(result, SliceAnalysis):
        return SliceOutcome(index, result, None, banner_text(result))
    if isinstance(result, AnalysisError):
        LOGGER.warning("slice %d not analysed: %s", index, result)
        return SliceOutcome(index, None, str(result), banner_text(None, str(result)))
    LOGGER.error("slice %d: the analysis failed", index, exc_info=result)
    reason = "an internal error stopped the analysis (see the node's log)"
    return SliceOutcome(index, None, reason, banner_text(None, reason))


def slice_workers(settings: Settings) -> int:
    """How many slices the node analyses at once: the setting, or one per CPU core this process may use."""
    return settings.models.slice_workers or len(os.sched_getaffinity(0))


def series_banner(outcomes: Sequence[SliceOutcome]) -> str:
    """The verdict of the whole series: motion segments of every slice, else no motion, else why not."""
    analysed = [o.analysis for o in outcomes if o.analysis is not None]
    segments = {s for a in analysed if a.motion is not None for s in a.motion.motion_segments}
    if segments or any(a.motion is not None and a.motion.has_motion for a in analysed):
        return motion_text(segments)
    if analysed:
        return next(o.banner for o in outcomes if o.analysis is not None)
    return outcomes[0].banner if outcomes else "Analysis not possible: the series holds no slice"
