"""A phantom training set: several cases, each contoured by three experts and by trainees on repeated attempts.

Every case is one phantom study (one mid-ventricular MOLLI slice, no motion) with the experts' contours and, per
trainee of :data:`DEFAULT_PROFILES`, one SEG series per attempt (:mod:`phantom.training_attempts`). The manifest
(``training_set.json``) lists the cases and the order a training unit sends them in: the maps and the experts'
contours of every case first, then round after round the trainees' attempts (round ``k`` holds every trainee's
``k``-th attempt on every case), so that a trainee's attempts arrive in time order. The same seed gives the same
bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.trainee_scoring import ErrorMode
from phantom.model import Vendor
from phantom.readers import ReaderError
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from phantom.training_attempts import Course, TraineeProfile, attempts_of

MANIFEST_NAME = "training_set.json"
#: Trainees of distinct error modes: one improves over its attempts, one keeps its error, one improves from a shift.
DEFAULT_PROFILES = (
    TraineeProfile("trainee_improving", ErrorMode.BLOOD_POOL, Course.IMPROVING),
    TraineeProfile("trainee_persistent", ErrorMode.EPICARDIAL_FAT, Course.PERSISTENT),
    TraineeProfile("trainee_shifted", ErrorMode.SHIFTED, Course.IMPROVING),
)


@dataclass(frozen=True)
class Submission:
    """One contour series as the training unit sends it."""

    case: str
    study_instance_uid: str
    reader: str
    role: str  # expert or trainee
    attempt: int  # 1-based on this case; experts contour once
    error_mode: str | None  # what the phantom drew: a trainee's mode, None for experts
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class TrainingCase:
    """One case of the set: its study, the map the readers drew on."""

    label: str
    study_instance_uid: str
    folder: Path
    map_paths: tuple[Path, ...]


@dataclass(frozen=True)
class TrainingSetOutcome:
    """What :func:`generate_training_set` wrote: the cases, and every contour series in sending order."""

    folder: Path
    cases: tuple[TrainingCase, ...]
    submissions: tuple[Submission, ...]

    def of_reader(self, reader: str) -> list[Submission]:
        return [item for item in self.submissions if item.reader == reader]


def generate_training_set(out_dir: Path, *, n_cases: int = 3, n_attempts: int = 3, seed: int = 0,
                          profiles: Sequence[TraineeProfile] = DEFAULT_PROFILES,
                          matrix: tuple[int, int] | None = (80, 96),
                          pixel_spacing_mm: float | None = 2.2) -> TrainingSetOutcome:
    """Write ``n_cases`` cases with experts and ``profiles``' ``n_attempts`` attempts each into ``out_dir``.

    ``matrix`` and ``pixel_spacing_mm`` keep the maps small (None: drawn per case, as ``myomap phantom`` does).

    Raises
    ------
    ReaderError
        If ``n_cases`` is not 1-20, ``n_attempts`` not 1-10, or two profiles share a name.
    """
    if not 1 <= n_cases <= 20:
        raise ReaderError(f"n_cases must be 1-20, got {n_cases}")
    names = [profile.name for profile in profiles]
    if len(set(names)) != len(names):
        raise ReaderError(f"trainee names must be distinct, got {names}")
    attempts = tuple(attempt for profile in profiles for attempt in attempts_of(profile, n_attempts))
    request = StudyRequest(seed=seed, vendor=Vendor.SIEMENS, sequence=SequenceChoice.MOLLI, motion_rate=0.0,
                           with_experts=True, with_trainees=False, n_slices=1, matrix=matrix,
                           pixel_spacing_mm=pixel_spacing_mm, training_attempts=attempts)
    out_dir = Path(out_dir)
    cases: list[TrainingCase] = []
    expert_submissions: list[Submission] = []
    by_round: dict[int, list[Submission]] = {}
    for index in range(n_cases):
        outcome = generate_study(plan_study(request, index), out_dir)
        label = f"case {index + 1}"
        sidecar = json.loads((outcome.folder / "mid" / "sidecar.json").read_text(encoding="utf-8"))
        maps = tuple(outcome.folder / path for path in sidecar["sequences"][0]["series"]["map"]["paths"])
        cases.append(TrainingCase(label, outcome.study_instance_uid, outcome.folder, maps))
        for entry in sidecar["readers"]:
            if entry["role"] == "truth":
                continue
            submission = Submission(
                case=label, study_instance_uid=outcome.study_instance_uid, reader=entry["reader"],
                role=entry["role"], attempt=int(entry["parameters"].get("attempt", 1)),
                error_mode=entry["error_mode"],
                paths=tuple(outcome.folder / path for path in entry["seg"]["paths"]),
            )
            if submission.role == "expert":
                expert_submissions.append(submission)
            else:
                by_round.setdefault(submission.attempt, []).append(submission)
    ordered = [*expert_submissions, *(item for number in sorted(by_round) for item in by_round[number])]
    result = TrainingSetOutcome(out_dir, tuple(cases), tuple(ordered))
    (out_dir / MANIFEST_NAME).write_text(json.dumps(_manifest(result, profiles, seed), indent=2) + "\n",
                                         encoding="utf-8")
    return result


def _manifest(outcome: TrainingSetOutcome, profiles: Sequence[TraineeProfile], seed: int) -> dict[str, Any]:
    root = outcome.folder

    def relative(paths: Sequence[Path]) -> list[str]:
        return [path.relative_to(root).as_posix() for path in paths]

    return {
        "seed": seed,
        "trainees": [{"reader": p.name, "error_mode": p.mode.value, "course": p.course.value} for p in profiles],
        "cases": [{"label": case.label, "study_instance_uid": case.study_instance_uid,
                   "maps": relative(case.map_paths)} for case in outcome.cases],
        "submissions": [{"case": item.case, "reader": item.reader, "role": item.role, "attempt": item.attempt,
                         "error_mode": item.error_mode, "paths": relative(item.paths)}
                        for item in outcome.submissions],
    }
