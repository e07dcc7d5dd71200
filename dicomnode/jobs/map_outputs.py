"""The map job's second half: run the models on every reconstructed slice and write what users see.

For each slice the models analyse the node's own map (:func:`inference.slice_analysis.analyse_slice`; T1 maps with
their raw images and R2 for motion). Then, as new series of the study:

- Secondary Captures for the scanner console (map with contours, AHA bullseye, attention map when motion was
  found), each with the verdict in plain words; a slice that cannot be analysed gets one image saying why;
- one TID 1500 Measurement Report (SR) and one SEG for the analysed slices, referencing the node's MR maps.

The job writes and sends the Secondary Captures before it builds the SR and the SEG (the SR takes longest), so the
console's wait does not include them.

A slice whose analysis fails never stops the maps or the other slices. Output UIDs derive from the job key, so a
re-run writes the same objects.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from config import Settings
from dicomnode.io.slice_level import level_from_description
from inference.errors import AnalysisError
from inference.mapping import MapKind
from inference.model_set import SHIPPED_FILES, ModelSet, load_models
from inference.runtime import ModelContractError
from inference.slice_analysis import RawImages, SliceAnalysis, analyse_slice
from reports.console_images import banner_text, render_console_images, render_failure_image
from reports.secondary_capture import build_secondary_capture
from reports.seg_model import build_model_segmentation
from reports.sr_measurement import build_measurement_report

LOGGER = logging.getLogger(__name__)

ALGORITHM_VERSION = "0.1.0"
SC_SERIES_OFFSET = 9100
SR_SERIES_OFFSET = 9200
SEG_SERIES_OFFSET = 9300
MOTION_ADVICE = "consider repeating the breath-hold"


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
    return time.perf_counter() - started


def analyse_slices(slices: Sequence[SliceInput], series_description: str,
                   models: Callable[[], ModelSet], *, workers: int = 1) -> list[SliceOutcome]:
    """Analyse every slice, ``workers`` at a time; a failure is recorded with its reason, in words for the console.

    The models' sessions are shared by the threads (onnxruntime runs them concurrently and releases the GIL).
    """
    level, _ = level_from_description(series_description)
    try:
        model_set = models()
    except ModelContractError as error:
        LOGGER.error("models unavailable: %s", error)
        reason = "the analysis models could not be loaded"
        return [SliceOutcome(i, None, reason, banner_text(None, reason)) for i in range(len(slices))]

    def outcome(index: int, item: SliceInput) -> SliceOutcome:
        try:
            analysis = analyse_slice(item.map_ms, item.map_kind, item.pixel_spacing_mm, level, model_set,
                                     raw=item.raw)
        except AnalysisError as error:
            LOGGER.warning("slice %d not analysed: %s", index, error)
            return SliceOutcome(index, None, str(error), banner_text(None, str(error)))
        except Exception:  # a fault in one slice's analysis must not stop the maps or the other slices
            LOGGER.exception("slice %d: the analysis failed", index)
            reason = "an internal error stopped the analysis (see the node's log)"
            return SliceOutcome(index, None, reason, banner_text(None, reason))
        return SliceOutcome(index, analysis, None, banner_text(analysis))

    if workers <= 1 or len(slices) <= 1:
        return [outcome(index, item) for index, item in enumerate(slices)]
    with ThreadPoolExecutor(max_workers=min(workers, len(slices)), thread_name_prefix="slice") as pool:
        return list(pool.map(outcome, range(len(slices)), slices))


def slice_workers(settings: Settings) -> int:
    """How many slices the node analyses at once: the setting, or one per CPU core this process may use."""
    return settings.models.slice_workers or len(os.sched_getaffinity(0))


def series_banner(outcomes: Sequence[SliceOutcome]) -> str:
    """The verdict of the whole series: motion segments of every slice, else no motion, else why not."""
    analysed = [o.analysis for o in outcomes if o.analysis is not None]
    segments = sorted({s for a in analysed if a.motion is not None for s in a.motion.motion_segments})
    if segments:
        return f"Motion artefact in segments {', '.join(str(s) for s in segments)} - {MOTION_ADVICE}"
    if any(a.motion is not None and a.motion.has_motion for a in analysed):
        return f"Motion artefact in the image - {MOTION_ADVICE}"
    if analysed:
        return next(o.banner for o in outcomes if o.analysis is not None)
    return outcomes[0].banner if outcomes else "Analysis not possible: the series holds no slice"


def write_console_images(
    outcomes: Sequence[SliceOutcome],
    slices: Sequence[SliceInput],
    *,
    uid: Callable[..., str],
    base_series_number: int,
    folder: Path,
    write: Callable[[Dataset, Path], Path],
) -> list[Path]:
    """Write the Secondary Captures of every slice, one series; a slice without analysis gets one image saying why.

    ``uid(*labels)`` derives output UIDs from the job key; ``write(dataset, path)`` writes one file durably.
    """
    paths = []
    series_uid = uid("sc-series")
    instance_number = 0
    for outcome in outcomes:
        item = slices[outcome.index]
        if outcome.analysis is not None:
            images = render_console_images(outcome.analysis)
        else:
            images = [render_failure_image(outcome.failure or "unknown reason", item.map_ms)]
        for image_index, image in enumerate(images):
            instance_number += 1
            sc = build_secondary_capture(
                image, item.mr_map, series_instance_uid=series_uid,
                sop_instance_uid=uid("sc", outcome.index, image_index),
                series_number=base_series_number + SC_SERIES_OFFSET, instance_number=instance_number,
            )
            paths.append(write(sc, folder / series_uid / f"{sc.SOPInstanceUID}.dcm"))
    return paths


def write_reports(
    outcomes: Sequence[SliceOutcome],
    slices: Sequence[SliceInput],
    *,
    uid: Callable[..., str],
    base_series_number: int,
    folder: Path,
    write: Callable[[Dataset, Path], Path],
    model_versions: dict[str, str],
) -> tuple[list[Path], list[Path]]:
    """Write the TID 1500 SR and the SEG of the analysed slices; ([sr], [seg]), empty when none was analysed."""
    analysed = [(slices[o.index].mr_map, o.analysis) for o in outcomes if o.analysis is not None]
    if not analysed:
        return [], []
    sr_series_uid = uid("sr-series")
    report = build_measurement_report(
        analysed, series_instance_uid=sr_series_uid, sop_instance_uid=uid("sr"),
        series_number=base_series_number + SR_SERIES_OFFSET, algorithm_version=ALGORITHM_VERSION,
        model_versions=model_versions,
    )
    sr_path = write(report, folder / sr_series_uid / f"{report.SOPInstanceUID}.dcm")
    seg_series_uid = uid("seg-series")
    segmentation = build_model_segmentation(
        analysed, series_instance_uid=seg_series_uid, sop_instance_uid=uid("seg"),
        series_number=base_series_number + SEG_SERIES_OFFSET, algorithm_version=ALGORITHM_VERSION,
    )
    seg_path = write(segmentation, folder / seg_series_uid / f"{segmentation.SOPInstanceUID}.dcm")
    return [sr_path], [seg_path]


def analysis_summary(outcomes: Sequence[SliceOutcome], model_versions: dict[str, str]) -> dict[str, object]:
    """The ``analysis`` part of a result's summary: verdicts and figures, no patient data."""
    slices: list[dict[str, object]] = []
    for outcome in outcomes:
        entry: dict[str, object] = {
            "index": outcome.index,
            "status": "analysed" if outcome.analysis is not None else "failed",
            "reason": outcome.failure,
            "banner": outcome.banner,
        }
        if outcome.analysis is not None:
            entry.update(outcome.analysis.summary())
        slices.append(entry)
    return {
        "algorithm": {"name": "myomap", "version": ALGORITHM_VERSION, "models": model_versions},
        "banner": series_banner(outcomes),
        "slices": slices,
    }
