"""A realistic training programme as the reports receive it: an improving and a persistent trainee, a team.

The figures follow what the phantom training set gives when scored (phantom.training_set): the improving
trainee's blood-pool error shrinks from a Dice of about 0.80 to expert level on the third attempt of each case,
the persistent trainee keeps drawing the epicardium outside the fat (Dice about 0.80, T1 raised by the fat).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reports.programme.model import (
    AccreditationStatus,
    Attempt,
    CaseSpread,
    CriterionOutcome,
    TeamSummary,
    TraineeProgress,
)

START = datetime(2026, 11, 2, 9, 0)
CASES = ("case 1", "case 2", "case 3")
TRAINING_SET = "LV T1 basics"
#: The reference's myocardial T1 per case (1.5 T MOLLI): the reader's is this plus their difference.
REFERENCE_T1_MS = {"case 1": 1012.0, "case 2": 968.0, "case 3": 1051.0}
ADVICE = {
    "blood_pool": "Draw the endocardium on the bright blood-myocardium edge, outside trabeculae and blood.",
    "epicardial_fat": "Keep the epicardial border inside the dark fat line: fat raises the myocardial T1.",
}


def overlay_png(folder: Path, name: str, offset_px: int) -> Path:
    """A comparison image like the node's overlay: a grey map with the reference (green) and the reader (red)."""
    yy, xx = np.mgrid[0:160, 0:160]
    radius = np.hypot(xx - 80, yy - 80)
    grey = np.where((radius > 30) & (radius < 45), 90, np.where(radius <= 30, 200, 40)).astype(np.uint8)
    image = Image.fromarray(grey, "L").convert("RGB")
    draw = ImageDraw.Draw(image)
    for r in (30, 45):
        draw.ellipse([80 - r, 80 - r, 80 + r, 80 + r], outline=(0, 200, 0), width=2)
    for r in (30 - offset_px, 45 + offset_px // 2):
        draw.ellipse([80 - r, 80 - r, 80 + r, 80 + r], outline=(230, 30, 30), width=2)
    path = folder / f"{name}.png"
    image.save(path)
    return path


def _attempt(reader: str, case: str, number: int, when: datetime, *, dice: float, t1_ms: float, mode: str,
             overlay: str | None) -> Attempt:
    segments = {7 + index: round(t1_ms + 6.0 * np.cos(index * np.pi / 3), 1) for index in range(6)}
    return Attempt(
        reader=reader, case_label=case, study_instance_uid=f"2.25.{1000 + CASES.index(case)}",
        slice_index=0, slice_level="mid", attempt_number=number, received_at=when,
        reference_policy="expert_staple", dice=dice, hausdorff_mm=round(9.0 * (1.0 - dice) / 0.1, 1),
        mean_surface_distance_mm=round(5.0 * (1.0 - dice), 2), t1_difference_ms=t1_ms,
        segment_t1_differences_ms=segments, wall_thickness_difference_mm=round(-8.0 * (0.93 - dice), 2),
        error_mode=mode, advice=ADVICE.get(mode, ""), overlay_png=overlay,
        t1_ms=round(REFERENCE_T1_MS[case] + t1_ms, 1),
    )


def improving(folder: Path) -> TraineeProgress:
    attempts = []
    dices = {1: (0.801, 0.812, 0.795), 2: (0.853, 0.861, 0.848), 3: (0.918, 0.924, 0.911)}
    t1s = {1: (-41.0, -36.5, -44.2), 2: (-22.4, -19.8, -25.1), 3: (-4.2, 2.9, -6.3)}
    for number in (1, 2, 3):
        for index, case in enumerate(CASES):
            when = START + timedelta(days=7 * (number - 1), hours=index)
            mode = "good" if number == 3 else "blood_pool"
            overlay = overlay_png(folder, f"improving_{number}_{index}", 8 - 3 * number)
            attempts.append(_attempt("trainee_improving", case, number, when, dice=dices[number][index],
                                     t1_ms=t1s[number][index], mode=mode, overlay=overlay.name))
    status = AccreditationStatus(
        reader="trainee_improving", training_set=TRAINING_SET, met=True, met_at=date(2026, 11, 16),
        outcomes=[
            CriterionOutcome("mean Dice", ">= 0.85 over the last 3 cases", 0.918, True,
                             "mean Dice 0.918 over the last 3 cases, needs >= 0.85"),
            CriterionOutcome("mean |dT1|", "<= 30 ms over the last 3 cases", 4.5, True,
                             "mean |dT1| 4.5 ms over the last 3 cases, needs <= 30 ms"),
            CriterionOutcome("no critical error", "none in the last 3 cases", 0.0, True,
                             "no critical error mode in the last 3 cases"),
        ])
    return TraineeProgress("trainee_improving", "Ward 4", attempts, [status])


def persistent(folder: Path) -> TraineeProgress:
    attempts = []
    dices = {1: (0.807, 0.803, 0.766), 2: (0.849, 0.760, 0.831), 3: (0.867, 0.820, 0.781)}
    for number in (1, 2, 3):
        for index, case in enumerate(CASES):
            when = START + timedelta(days=7 * (number - 1), hours=index, minutes=30)
            overlay = overlay_png(folder, f"persistent_{number}_{index}", 6)
            attempts.append(_attempt("trainee_persistent", case, number, when, dice=dices[number][index],
                                     t1_ms=38.0 + 4.0 * index - number, mode="epicardial_fat",
                                     overlay=overlay.name))
    status = AccreditationStatus(
        reader="trainee_persistent", training_set=TRAINING_SET, met=False, met_at=None,
        outcomes=[
            CriterionOutcome("mean Dice", ">= 0.85 over the last 3 cases", 0.823, False,
                             "mean Dice 0.823 over the last 3 cases, needs >= 0.85"),
            CriterionOutcome("mean |dT1|", "<= 30 ms over the last 3 cases", 39.0, False,
                             "mean |dT1| 39.0 ms over the last 3 cases, needs <= 30 ms"),
            CriterionOutcome("no critical error", "none in the last 3 cases", 3.0, False,
                             "epicardium drawn outside the fat in 3 of the last 3 cases"),
        ])
    return TraineeProgress("trainee_persistent", "Ward 4", attempts, [status])


def team(folder: Path) -> TeamSummary:
    trainees = [improving(folder), persistent(folder)]
    cases = [CaseSpread(case, ["trainee_improving", "trainee_persistent"], 0.85 + 0.01 * index, 0.049,
                        2.8 - 0.3 * index, 0.842 + 0.01 * index) for index, case in enumerate(CASES)]
    return TeamSummary("Ward 4", trainees, cases, ["trainee_improving"])
