"""The models' analysis of a series' map slices, as the node runs it: the models loaded once per process, the
slices batched through the models in forked helper processes or threads, each slice's verdict in words, and the
series' verdict.

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
from dicomnode.analysis.slice_helper import HelperLostError, SliceHelper
from dicomnode.io.slice_level import level_from_description
from dicomnode.io.t1_protocol import field_strength_t
from inference.errors import AnalysisError
from inference.mapping import MapKind
from inference.model_set import SHIPPED_FILES, ModelSet, load_models
from inference.runtime import CPU_PROVIDER, ModelContractError
from inference.runtime_status import record_providers
from inference.slice_analysis import RawImages, SliceAnalysis, SliceRequest, with_motion
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
                   models: Callable[[], ModelSet], *, workers: int = 1, helpers: bool = True) -> list[SliceOutcome]:
    """Analyse every slice, batched through the models, in ``workers`` shares of consecutive slices; a failure is
    recorded with its reason, in words for the console.

    Each share's slices go through each model together (inference/slice_analysis.py ``analyse_slices``). This
    thread analyses the first share; the others go to the slice helpers forked by :func:`start_slice_helpers`
    that no other series is using (dicomnode/analysis/slice_helper.py), and otherwise to threads of this process,
    which share the models' sessions (onnxruntime runs them concurrently and releases the GIL). ``helpers`` False
    leaves the helpers out (threads only).
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
    reserved = _reserve_helpers(model_set, count - 1) if helpers else []
    # A helper's slices come back without their motion, which this process then finds: helpers take more slices.
    helper_weight = HELPER_WEIGHT_WITH_MOTION if any(
        r.raw is not None and r.map_kind is MapKind.T1 for r in requests) else 1.0
    chunks = _shares(len(slices), [1.0] + [helper_weight] * len(reserved) + [1.0] * (count - 1 - len(reserved)))

    def analyse_chunk(indices: range) -> list[SliceOutcome]:
        try:
            results: list[SliceAnalysis | Exception] = list(
                analyse_batch([requests[i] for i in indices], model_set))
        except Exception as error:  # a fault in a batched model run must not stop the maps or other batches
            LOGGER.exception("slices %d-%d: the analysis failed", indices.start, indices.stop - 1)
            results = [error] * len(indices)
        return [_outcome(index, result) for index, result in zip(indices, results, strict=True)]

    def helped_chunk(helper: SliceHelper, indices: range) -> list[SliceOutcome]:
        try:
            results = helper.receive(len(indices))
        except HelperLostError:
            return analyse_chunk(indices)
        try:
            results = with_motion([requests[i] for i in indices], results, model_set)
        except Exception as error:  # as in analyse_chunk: a fault in the batched motion run
            LOGGER.exception("slices %d-%d: motion detection failed", indices.start, indices.stop - 1)
            results = [error] * len(indices)
        return [_outcome(index, result) for index, result in zip(indices, results, strict=True)]

    try:
        helped: list[tuple[SliceHelper, range]] = []
        local = [chunks[0], *chunks[1 + len(reserved):]]
        for helper, indices in zip(reserved, chunks[1:], strict=False):
            if not indices:
                continue
            try:
                helper.send([requests[i] for i in indices])
                helped.append((helper, indices))
            except HelperLostError:  # its share goes to this process's threads
                local.append(indices)
        local = [indices for indices in local if indices]
        if len(local) <= 1:
            outcomes = analyse_chunk(local[0]) if local else []
        else:
            with ThreadPoolExecutor(max_workers=len(local), thread_name_prefix="slice") as pool:
                outcomes = [outcome for part in pool.map(analyse_chunk, local) for outcome in part]
        for helper, indices in helped:
            outcomes.extend(helped_chunk(helper, indices))
    finally:
        for helper in reserved:
            helper.release()
    return sorted(outcomes, key=lambda outcome: outcome.index)


_HELPERS: list[SliceHelper] = []
#: A helper's share of T1 slices with raw images against this process's: the motion of its slices (10 % of a
#: slice's analysis, measured) is found here after they come back (dicomnode/analysis/slice_helper.py).
HELPER_WEIGHT_WITH_MOTION = 1.1


def start_slice_helpers(models: ModelSet, count: int) -> int:
    """Fork ``count`` processes that each take a share of a series' slices besides this process's own (the node
    forks :func:`slice_workers` - 1); returns how many run. Call it once, after ``models`` are loaded and before
    this process starts any thread that may hold a lock (a worker, a pool; ``models`` with one onnxruntime thread
    each, on the CPU): the helpers are forks of it."""
    while len(_HELPERS) < count:
        _HELPERS.append(SliceHelper.fork(models))
    if _HELPERS:
        LOGGER.info("%d slice helper processes started (%s)", len(_HELPERS),
                    ", ".join(str(helper.pid) for helper in _HELPERS))
    return len(_HELPERS)


def start_node_slice_helpers(settings: Settings) -> int:
    """The node's slice helpers: :func:`slice_workers` - 1 forks of this process when ``[models] slice_processes``
    is on and the models run on the CPU, one onnxruntime thread each (a CUDA context does not survive a fork, nor
    do onnxruntime's own thread pools, which more threads per model start); returns how many run. The same
    conditions as :func:`start_slice_helpers`: call it before any thread starts."""
    if not settings.models.slice_processes or settings.models.threads != 1:
        return 0
    try:
        model_set = node_models(settings)
    except ModelContractError:
        return 0
    if any(provider != CPU_PROVIDER for provider in model_set.providers.values()):
        return 0
    return start_slice_helpers(model_set, slice_workers(settings) - 1)


def stop_slice_helpers() -> None:
    """Stop the helpers :func:`start_slice_helpers` forked."""
    while _HELPERS:
        _HELPERS.pop().close()


def _shares(count: int, weights: Sequence[float]) -> list[range]:
    """``count`` consecutive indices cut into one range per weight, in proportion to the weights."""
    total = sum(weights)
    cuts = [0.0]
    for weight in weights:
        cuts.append(cuts[-1] + weight)
    bounds = [round(count * cut / total) for cut in cuts]
    return [range(bounds[part], bounds[part + 1]) for part in range(len(weights))]


def _reserve_helpers(models: ModelSet, count: int) -> list[SliceHelper]:
    """Up to ``count`` helpers forked with ``models`` that no other series is using (the rest of the slices go to
    threads of this process)."""
    reserved: list[SliceHelper] = []
    for helper in list(_HELPERS):
        if len(reserved) == count:
            break
        if helper.models is models and helper.try_acquire():
            reserved.append(helper)
    return reserved


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
