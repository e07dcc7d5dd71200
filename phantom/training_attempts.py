"""Trainees of a training set: who makes which error, and how each one's contour on a case changes over attempts.

A training unit's trainees contour the same cases again and again. An *improving* trainee keeps one error mode at
first but makes it smaller with every attempt (skill rises towards expert level) and draws like an expert on the
last attempt; a *persistent* trainee makes the same error, of about the same size, on every attempt. The contours
come from :func:`phantom.readers.trainee_with_mode`, so they carry the same error modes the node's scoring names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from inference.trainee_scoring import ErrorMode
from phantom.model import ReaderContour, SliceAnatomy
from phantom.readers import ReaderError, trainee_with_mode

#: Skill of a persistent trainee's every attempt: a novice's error size that does not shrink.
PERSISTENT_SKILL = 0.15
#: Skill of an improving trainee's first attempt; later attempts rise evenly to expert level.
IMPROVING_FIRST_SKILL = 0.0


class Course(str, Enum):
    """How a trainee's contours change over repeated attempts on a case."""

    IMPROVING = "improving"
    PERSISTENT = "persistent"


@dataclass(frozen=True)
class TraineeProfile:
    """A simulated trainee: the DICOM reader name, the error mode, and the course over attempts."""

    name: str
    mode: ErrorMode
    course: Course

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ReaderError("a trainee profile needs a name")
        object.__setattr__(self, "mode", ErrorMode(self.mode))
        object.__setattr__(self, "course", Course(self.course))
        if self.mode is ErrorMode.GOOD:
            raise ReaderError(f"trainee {self.name!r}: a profile makes an error; got mode {self.mode.value}")


@dataclass(frozen=True)
class TrainingAttempt:
    """One attempt of one trainee on a case: what the phantom draws and writes as its own contour series."""

    reader: str
    attempt: int  # 1-based, on this case
    mode: ErrorMode
    skill: float  # 0 novice .. 1 expert level (the size of the error, see phantom.readers)

    @property
    def series_key(self) -> str:
        """The name of this attempt's series (UIDs and folders): one per reader and attempt."""
        return f"{self.reader}_attempt{self.attempt}"


def attempts_of(profile: TraineeProfile, n_attempts: int) -> list[TrainingAttempt]:
    """The ``n_attempts`` attempts of ``profile`` on one case, first to last.

    An improving trainee's skill rises evenly from :data:`IMPROVING_FIRST_SKILL` and the last attempt is
    error-free (mode GOOD at expert level); a persistent trainee keeps the mode at :data:`PERSISTENT_SKILL`.

    Raises
    ------
    ReaderError
        If ``n_attempts`` is not 1-10.
    """
    if not 1 <= n_attempts <= 10:
        raise ReaderError(f"n_attempts must be 1-10, got {n_attempts}")
    attempts = []
    for index in range(n_attempts):
        number = index + 1
        if profile.course is Course.PERSISTENT:
            attempts.append(TrainingAttempt(profile.name, number, profile.mode, PERSISTENT_SKILL))
        elif number == n_attempts:
            attempts.append(TrainingAttempt(profile.name, number, ErrorMode.GOOD, 1.0))
        else:
            skill = IMPROVING_FIRST_SKILL + (0.9 - IMPROVING_FIRST_SKILL) * index / max(n_attempts - 1, 1)
            attempts.append(TrainingAttempt(profile.name, number, profile.mode, round(skill, 3)))
    return attempts


def attempt_contours(anatomy: SliceAnatomy, rng: np.random.Generator,
                     attempts: tuple[TrainingAttempt, ...]) -> list[ReaderContour]:
    """The contours of ``attempts`` on one slice, in order; each records its attempt in its parameters."""
    contours = []
    for attempt in attempts:
        contour = trainee_with_mode(anatomy, rng, attempt.mode, skill=attempt.skill, name=attempt.reader)
        contour.parameters["attempt"] = float(attempt.attempt)
        contours.append(contour)
    return contours
