"""The phantom training set: experts and trainees of distinct error modes, repeated attempts, deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pydicom
import pytest

from inference.trainee_scoring import ErrorMode
from phantom.dicom_contours import read_seg_masks
from phantom.readers import ReaderError, dice
from phantom.training_attempts import Course, TraineeProfile, attempts_of
from phantom.training_set import MANIFEST_NAME, generate_training_set


def _digests(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.dcm"))}


def _myocardium(path: Path) -> object:
    masks = read_seg_masks(pydicom.dcmread(path))
    return next(mask for label, mask in masks.items() if "yocard" in label)


def test_the_same_seed_gives_the_same_bytes_and_every_attempt_its_own_series(tmp_path: Path) -> None:
    first = generate_training_set(tmp_path / "a", n_cases=2, n_attempts=2, seed=5)
    second = generate_training_set(tmp_path / "b", n_cases=2, n_attempts=2, seed=5)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    # 3 experts + 3 trainees x 2 attempts per case, each a series of its own with the reader's name inside.
    assert len(first.submissions) == 2 * (3 + 3 * 2)
    series = {pydicom.dcmread(item.paths[0]).SeriesInstanceUID for item in first.submissions}
    assert len(series) == len(first.submissions)
    for item in first.submissions:
        assert str(pydicom.dcmread(item.paths[0]).ContentCreatorName) == item.reader
    manifest = json.loads((tmp_path / "a" / MANIFEST_NAME).read_text())
    assert [c["study_instance_uid"] for c in manifest["cases"]] == [c.study_instance_uid for c in second.cases]
    # Experts first, then the rounds of attempts in order.
    attempts = [item.attempt for item in first.submissions if item.role == "trainee"]
    assert attempts == sorted(attempts) and first.submissions[0].role == "expert"


def test_the_improving_trainee_gets_closer_each_attempt_and_the_persistent_one_keeps_its_error(
        tmp_path: Path) -> None:
    outcome = generate_training_set(tmp_path, n_cases=2, n_attempts=3, seed=11)
    for case in outcome.cases:
        sidecar = json.loads((case.folder / "mid" / "sidecar.json").read_text())
        truth_entry = next(entry for entry in sidecar["readers"] if entry["role"] == "truth")
        truth = _myocardium(case.folder / truth_entry["seg"]["paths"][0])
        improving = [dice(_myocardium(item.paths[0]), truth) for item in outcome.of_reader("trainee_improving")
                     if item.case == case.label]
        assert improving == sorted(improving) and improving[-1] - improving[0] > 0.04, improving
        persistent = [item for item in outcome.of_reader("trainee_persistent") if item.case == case.label]
        assert {item.error_mode for item in persistent} == {ErrorMode.EPICARDIAL_FAT.value}
        assert max(dice(_myocardium(item.paths[0]), truth) for item in persistent) < improving[-1]


def test_attempt_plans_and_bad_parameters() -> None:
    improving = attempts_of(TraineeProfile("a", ErrorMode.BLOOD_POOL, Course.IMPROVING), 4)
    assert [a.mode for a in improving] == [ErrorMode.BLOOD_POOL] * 3 + [ErrorMode.GOOD]
    assert [a.skill for a in improving] == sorted(a.skill for a in improving)
    persistent = attempts_of(TraineeProfile("b", ErrorMode.SHIFTED, Course.PERSISTENT), 3)
    assert {a.mode for a in persistent} == {ErrorMode.SHIFTED} and len({a.skill for a in persistent}) == 1
    with pytest.raises(ReaderError, match="n_attempts"):
        attempts_of(TraineeProfile("a", ErrorMode.BLOOD_POOL, Course.IMPROVING), 0)
    with pytest.raises(ReaderError, match="makes an error"):
        TraineeProfile("a", ErrorMode.GOOD, Course.PERSISTENT)
    with pytest.raises(ReaderError, match="distinct"):
        generate_training_set(Path("unused"), profiles=[TraineeProfile("a", ErrorMode.SHIFTED, Course.IMPROVING)] * 2)
