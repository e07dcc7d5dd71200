"""What the training programme's reports render: frozen values filled by ``queries`` and ``accreditation``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True)
class Attempt:
    """One reader's contour on one slice of one case, scored against the case's reference."""

    reader: str
    case_label: str  # the training case's label, else the study's description
    study_instance_uid: str
    slice_index: int | None  # index of the slice in the map series (None when the contour's slice is unknown)
    slice_level: str  # "basal", "mid", "apical" or "" when unknown
    attempt_number: int  # 1 for the reader's first contour on this case and slice, 2 for the next, ...
    received_at: datetime
    reference_policy: str  # the ReferencePolicy value used, or what the reader job recorded
    dice: float | None
    hausdorff_mm: float | None
    mean_surface_distance_mm: float | None
    t1_difference_ms: float | None  # reader's myocardial T1 minus the reference's
    segment_t1_differences_ms: dict[int, float] = field(default_factory=dict)  # AHA segment -> difference
    wall_thickness_difference_mm: float | None = None
    error_mode: str = ""  # "" when none was found
    advice: str = ""
    overlay_png: str | None = None  # path relative to the storage root
    t1_ms: float | None = None  # reader's myocardial T1; the reference's is t1_ms - t1_difference_ms (Bland-Altman)


@dataclass(frozen=True)
class CriterionOutcome:
    name: str  # e.g. "mean Dice"
    threshold: str  # e.g. ">= 0.85 over the last 5 cases"
    value: float | None  # None when there is nothing to evaluate yet
    met: bool
    why: str  # in words, e.g. "mean Dice 0.78 over the last 5 cases, needs >= 0.85"


@dataclass(frozen=True)
class AccreditationStatus:
    reader: str
    training_set: str
    outcomes: list[CriterionOutcome]
    met: bool
    met_at: date | None  # the date the reader first met the criteria (kept once recorded)


@dataclass(frozen=True)
class TraineeProgress:
    reader: str
    team: str
    attempts: list[Attempt]  # ordered by received_at
    accreditation: list[AccreditationStatus]


@dataclass(frozen=True)
class CaseSpread:
    """The team's spread on one case: how far its trainees' contours and T1 values lie from each other."""

    case_label: str
    readers: list[str]
    dice_mean: float | None  # of the readers' latest attempts against the reference
    dice_sd: float | None
    t1_cv_percent: float | None  # coefficient of variation of the readers' myocardial T1
    inter_observer_dice: float | None  # mean pairwise Dice between the readers' contours
    t1_mean_ms: float | None = None  # the team average of the readers' myocardial T1
    t1_difference_mean_ms: float | None = None  # the team average of reader minus reference T1 (bias)


@dataclass(frozen=True)
class TeamSummary:
    team: str
    trainees: list[TraineeProgress]
    cases: list[CaseSpread]
    ready: list[str]  # readers who meet the criteria of every training set they worked on
