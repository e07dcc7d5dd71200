"""What a job records of its result (``Result.summary``): the typed contract between the jobs that write it and the
web page, the API and the reports that read it. Figures only, never patient data; a reader is named by its label.

Two kinds of result: a map job's (:class:`MapResultSummary`: the map's figures, the models' analysis of every
slice, the files written) and a reader-score job's (:class:`ReaderResultSummary`). The jobs build these models and
store :func:`summary_json`; readers call :func:`read_summary`, which takes rows written by older nodes too (missing
parts get their defaults, unknown keys are ignored).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from inference.slice_analysis import SliceAnalysis

READER_SCORE_KIND = "reader_score"


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


def rounded(value: float | None, digits: int = 1) -> float | None:
    """``value`` rounded for the record; None for a missing or non-finite value (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


class RegionFigures(_Part):
    """Map values and geometry of the myocardium or of one AHA segment of a slice.

    The values are from the slice's value region (``SliceFigures.value_region``, the mid-wall); the myocardium's
    area is that of the whole ring, a segment's that of its part of the value region.
    """

    mean_ms: float | None = None
    median_ms: float | None = None
    sd_ms: float | None = None
    area_mm2: float | None = None
    missing_fraction: float | None = None  # myocardium: share of the ring's pixels without a map value
    no_value_reason: str | None = None  # why the region has no value (too few pixels with a value)
    wall_thickness_mm: float | None = None
    motion_probability: float | None = None  # segments only; None where motion was not assessed


class MotionFigures(_Part):
    whole_image_probability: float | None = None
    segments_with_motion: list[int] = []
    has_motion: bool = False


class QualityFigures(_Part):
    """How far the automatic contours can be trusted: the Dice the quality model predicts for them."""

    predicted_dice: float | None = None  # the lower of the two estimates below
    autoencoder_dice: float | None = None  # the generative model's latent search
    augmentation_agreement: float | None = None  # agreement with the segmentation of the mirrored map
    doubtful: bool = False
    doubts: list[str] = []  # implausible anatomy or values, in words (inference/plausibility.py)


class CrossCheckFigures(_Part):
    """The node's reconstruction against the scanner's map of the same slice, in the myocardium."""

    label: str  # which estimate of the node was compared
    median_difference_percent: float | None = None  # None: too few pixels valid in both


class SecondMeasurement(_Part):
    """A second, labelled estimate of the same region (the T1 estimate ``[mapping] report_t1`` did not choose)."""

    label: str
    mean_ms: float | None = None
    median_ms: float | None = None


class SliceFigures(_Part):
    """The models' analysis of one slice; a failed slice has only its index, status, reason and banner."""

    index: int
    status: Literal["analysed", "failed"]
    reason: str | None = None
    banner: str = ""  # the slice's verdict in words, as on its console image
    map_kind: str | None = None
    level: str | None = None
    myocardium: RegionFigures | None = None
    segments: dict[int, RegionFigures] = {}  # AHA segment number (a string key in JSON) -> figures
    motion: MotionFigures | None = None
    quality: QualityFigures | None = None
    map_source: str | None = None  # "scanner map" or the node's reconstruction and estimate
    value_region: str | None = None  # the part of the myocardium the values are from
    cross_check: CrossCheckFigures | None = None
    second_measurement: SecondMeasurement | None = None
    notes: list[str] = []

    @classmethod
    def failed(cls, index: int, reason: str, banner: str) -> SliceFigures:
        return cls(index=index, status="failed", reason=reason, banner=banner)

    @classmethod
    def of(cls, index: int, analysis: SliceAnalysis, banner: str) -> SliceFigures:
        """The figures of an analysed slice."""
        values, thickness, motion = analysis.myocardium_values, analysis.wall_thickness, analysis.motion
        return cls(
            index=index,
            status="analysed",
            reason=None,
            banner=banner,
            map_kind=analysis.map_kind.value,
            level=analysis.level.value,
            myocardium=RegionFigures(
                mean_ms=rounded(values.mean), median_ms=rounded(values.median), sd_ms=rounded(values.sd),
                area_mm2=rounded(analysis.ring_values.area_mm2), wall_thickness_mm=rounded(thickness.mean_mm, 2),
                missing_fraction=rounded(analysis.missing_fraction, 3), no_value_reason=values.reason,
            ),
            segments={
                segment: RegionFigures(
                    mean_ms=rounded(v.mean), median_ms=rounded(v.median), sd_ms=rounded(v.sd),
                    area_mm2=rounded(v.area_mm2), no_value_reason=v.reason,
                    wall_thickness_mm=rounded(thickness.per_segment_mm.get(segment, float("nan")), 2),
                    motion_probability=None if motion is None else rounded(
                        motion.segment_probabilities.get(segment), 3),
                )
                for segment, v in sorted(analysis.segment_values.items())
            },
            motion=None if motion is None else MotionFigures(
                whole_image_probability=rounded(motion.whole_image_probability, 3),
                segments_with_motion=list(motion.motion_segments), has_motion=motion.has_motion,
            ),
            quality=QualityFigures(predicted_dice=rounded(analysis.quality.predicted_dice, 3),
                                   autoencoder_dice=rounded(analysis.quality.autoencoder_dice, 3),
                                   augmentation_agreement=rounded(analysis.quality.augmentation_agreement, 3),
                                   doubtful=analysis.segmentation_doubtful, doubts=list(analysis.quality.doubts)),
        )


class AlgorithmInfo(_Part):
    name: str
    version: str
    models: dict[str, str] = {}  # model name -> version


class AnalysisFigures(_Part):
    algorithm: AlgorithmInfo | None = None
    banner: str = ""  # the series-level verdict
    slices: list[SliceFigures] = []

    @property
    def needs_attention(self) -> bool:
        """Whether any slice failed, shows motion, or has contours the quality model doubts."""
        return any(
            s.status == "failed" or (s.motion is not None and s.motion.has_motion)
            or (s.quality is not None and s.quality.doubtful)
            for s in self.slices
        )


class ResultOutputs(_Part):
    """The files of a result by output kind, relative to the storage root (each one also in ``Result.paths``)."""

    maps: list[str] = []
    sr: list[str] = []
    seg: list[str] = []
    sc: list[str] = []


class SupersededFigures(_Part):
    """The earlier analysis of the same slices that a result replaces."""

    job_id: int
    job_key: str
    sr_sop_instance_uids: list[str] = []


class MapResultSummary(_Part):
    """A map job's result: the maps' figures over their valid pixels, the analysis, the files.

    A job analyses one unit: the study's series that show the same slices (raw images and/or the scanner's maps,
    ``unit_series``); ``supersedes`` names an earlier analysis of those slices that this one replaces.
    """

    kind: str  # "t1" or "t2"
    method: str
    scheme: str = ""  # the acquisition scheme fitted; empty when every slice came from the scanner's map
    slices: int
    valid_pixels: int
    valid_fraction_of_fitted: float | None = None  # None when nothing was fitted (scanner maps only)
    map_source: str = ""  # "scanner map", the node's reconstruction, or both named
    report_t1: str | None = None  # "scanner" or "corrected": which estimate a reconstruction reports
    unit_series: list[str] = []  # the series analysed together, by Series Instance UID
    supersedes: SupersededFigures | None = None
    notes: list[str] = []  # facts about the whole result a reader must know (an assumed field strength)
    median_ms: float | None = None
    p25_ms: float | None = None
    p75_ms: float | None = None
    median_r2: float | None = None
    mr_map_series_uid: str = ""
    parametric_map_series_uid: str = ""
    source_revision: int = 1
    analysis: AnalysisFigures | None = None
    reports_error: str | None = None  # why the SR and SEG are missing, when they could not be written
    outputs: ResultOutputs = ResultOutputs()
    # What the outputs name the unit by (console banner, series descriptions): "MOLLI 5(3)3", "MOLLI", the level.
    sequence: str = ""
    sequence_family: str = ""
    level: str = ""
    level_assumed: bool = False
    source_series_number: int | None = None
    # Per slice (by index): the map image its outputs reference, relative to the storage root; "" for none.
    slice_images: list[str] = []
    # A study bullseye's result: the map jobs whose unit results it is drawn from.
    study_of_jobs: list[int] = []

    def figures(self) -> dict[str, Any]:
        """The map's own figures (everything but the analysis and the outputs), for a table."""
        return self.model_dump(mode="json", exclude={"analysis", "outputs"}, exclude_unset=True)


class ReaderSliceFigures(_Part):
    """One slice a reader contoured: the score against the reference, or why there is none."""

    map_sop_instance_uid: str
    map_kind: str
    level: str
    status: Literal["scored", "not scored"]
    reference: str | None = None
    reference_readers: list[str] = []
    notes: list[str] = []
    dice_myocardium: float | None = None
    iou_myocardium: float | None = None
    dice_cavity: float | None = None
    hausdorff_mm: float | None = None
    mean_surface_distance_mm: float | None = None
    map_difference_ms: float | None = None
    wall_thickness_difference_mm: float | None = None
    error_mode: str | None = None
    # For the training programme: the reader's own myocardial mean (the team's spread of T1), reader minus
    # reference per AHA segment (keys are segment numbers as text), Dice against each other reader's contour on
    # the slice when scored, and the overlay Secondary Capture (relative to the storage root).
    map_mean_ms: float | None = None
    segment_map_differences_ms: dict[str, float] | None = None
    peer_dice: dict[str, float] | None = None
    overlay: str | None = None


class ReaderResultSummary(_Part):
    """A reader-score job's result: the reader's scores per slice and the reference they were scored against."""

    reader: str
    gold_standard: str | None = None
    reference: str | None = None  # the references of the scored slices, in words
    reference_digest: str | None = None  # what the study offered the reader when scored (re-scoring compares it)
    slices: list[ReaderSliceFigures] = []
    problems: list[str] = []
    source_revision: int = 1
    outputs: ResultOutputs = ResultOutputs()

    def figures(self) -> dict[str, Any]:
        """The reader's figures (everything but the outputs), for a table."""
        return self.model_dump(mode="json", exclude={"outputs"}, exclude_unset=True)


ResultSummary = MapResultSummary | ReaderResultSummary


def summary_json(summary: ResultSummary) -> dict[str, Any]:
    """What the job stores in ``Result.summary``: the fields the job set, so that a part that does not apply (the
    score of an unscored slice, the figures of a failed one, ``reports_error`` of a job without error) is absent
    rather than null, in the record and in the figures read back from it."""
    return summary.model_dump(mode="json", exclude_unset=True)


def read_summary(kind: str, stored: dict[str, Any] | None) -> ResultSummary | None:
    """The typed summary of a result of ``kind``; None when the result has none.

    Raises
    ------
    pydantic.ValidationError
        If the stored summary does not fit the contract of its kind.
    """
    if not stored:
        return None
    model: type[ResultSummary] = ReaderResultSummary if kind == READER_SCORE_KIND else MapResultSummary
    return model.model_validate(stored)
