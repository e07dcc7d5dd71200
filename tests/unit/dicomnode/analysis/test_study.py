"""Offline analysis of a phantom study: readers found, scores equal to the sidecar masks' own, JSON written."""

import json
import shutil

import numpy as np
import pydicom
import pytest
import typer
from typer.testing import CliRunner

from db.models import ReferencePolicy
from dicomnode.analysis.reference import CasePolicy
from dicomnode.analysis.study import (
    InsertionSource,
    ReferenceRule,
    ReferenceSource,
    analyze_datasets,
    analyze_paths,
    files_under,
    read_files,
)
from dicomnode.app.analyze_cli import register
from inference.mapping import MapKind
from inference.metrics import dice
from phantom.dicom_contours import MYOCARDIUM_LABEL, read_seg_masks
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study

SEEDS = (5, 8)


def _study(folder, seed):
    request = StudyRequest(seed=seed, n_slices=1, matrix=(80, 96), pixel_spacing_mm=2.2, vendor=Vendor.SIEMENS,
                           sequence=SequenceChoice.MOLLI, motion_rate=0.0)
    outcome = generate_study(plan_study(request, 0), folder)
    return outcome, json.loads((outcome.folder / "mid" / "sidecar.json").read_text())


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    return [_study(tmp_path_factory.mktemp(f"seed{seed}"), seed) for seed in SEEDS]


def _seg_myocardium(outcome, reader):
    return read_seg_masks(pydicom.dcmread(outcome.folder / reader["seg"]["paths"][0]))[MYOCARDIUM_LABEL]


def test_gold_standard_scores_match_the_sidecar_masks(studies):
    agreeing, trainees = 0, 0
    for outcome, sidecar in studies:
        report = analyze_paths([outcome.folder], gold_standard="truth")
        assert report.problems == ()
        assert report.non_dicom_skipped == 2  # sidecar.json and manifest.json
        assert report.files_read == outcome.n_dicom_files
        assert len(report.slices) == 1
        result = report.slices[0]
        assert result.map_kind is MapKind.T1 and result.map_source == "scanner map"
        assert result.reference is ReferenceSource.GOLD_STANDARD and result.reference_readers == ("truth",)
        assert result.sop_instance_uid == sidecar["readers"][0]["map_sop_instance_uid"]
        assert set(report.readers) == {reader["reader"] for reader in sidecar["readers"]}
        assert {"truth", "expert1", "trainee1"} <= set(report.readers)
        by_name = {reader.reader: reader for reader in result.readers}
        assert by_name["truth"].score is None
        truth_mask = _seg_myocardium(outcome, sidecar["readers"][0])
        truth_t1 = sidecar["truth"]["t1_ms"]["global"]
        for reader in sidecar["readers"][1:]:
            analysed = by_name[reader["reader"]]
            expected = dice(_seg_myocardium(outcome, reader), truth_mask)
            assert analysed.score.dice_myocardium == pytest.approx(expected, abs=1e-6)
            assert analysed.myocardium.n_pixels == reader["myocardium_pixels"]
            assert abs(analysed.myocardium.mean_ms - truth_t1) < 0.25 * truth_t1  # MOLLI under-reads
            assert set(analysed.segments) == set(range(7, 13))
            assert analysed.insertion is InsertionSource.DEFAULT_ANGLES
            if reader["role"] == "trainee":
                trainees += 1
                agreeing += analysed.score.error_mode == reader["error_mode"]
        assert any("default RV insertion angles" in note for note in result.notes)
    assert trainees == 4 * len(SEEDS)
    assert agreeing >= 0.75 * trainees


def test_without_gold_standard_the_experts_staple_is_the_reference(studies):
    outcome, _ = studies[0]
    result = analyze_paths([outcome.folder], gold_standard=None).slices[0]
    assert result.reference is ReferenceSource.STAPLE
    assert result.reference_readers == ("expert1", "expert2", "expert3")
    scores = {reader.reader: reader.score for reader in result.readers}
    assert all(score is not None and score.reference == "staple" for score in scores.values())
    # The experts agree with their own consensus better than the trainees do.
    expert_dice = np.mean([scores[f"expert{i}"].dice_myocardium for i in (1, 2, 3)])
    trainee_dice = np.mean([scores[f"trainee{i}"].dice_myocardium for i in (1, 2, 3, 4)])
    assert expert_dice > trainee_dice


@pytest.mark.filterwarnings("ignore:Expected implicit VR")
def test_missing_gold_standard_and_bad_files_are_reported_not_raised(studies, tmp_path):
    outcome, sidecar = studies[0]
    (tmp_path / "notes.txt").write_text("not a DICOM file\n")
    (tmp_path / "broken.dcm").write_bytes(b"DICM" * 40)
    seg_only = tmp_path / "seg.dcm"
    shutil.copy(outcome.folder / sidecar["readers"][1]["seg"]["paths"][0], seg_only)
    lonely = analyze_paths([tmp_path], gold_standard="truth")
    assert lonely.slices == () and lonely.non_dicom_skipped == 2
    assert len(lonely.problems) == 1 and "no map image" in lonely.problems[0].message

    # The site's gold standard has not arrived: the experts' STAPLE meanwhile, each reader told so.
    result = analyze_paths([outcome.folder], gold_standard="nobody").slices[0]
    assert result.reference is ReferenceSource.STAPLE
    assert all("nobody not received yet" in reader.reference_reason for reader in result.readers)
    # A case whose policy is that gold standard is not scored against anything else.
    datasets, _ = read_files(files_under([outcome.folder]))
    rule = ReferenceRule(case=CasePolicy(ReferencePolicy.GOLD_STANDARD, "nobody"))
    strict = analyze_datasets(datasets, rule=rule).report.slices[0]
    assert strict.reference is ReferenceSource.NONE
    assert all(reader.score is None for reader in strict.readers)
    assert any("gold standard nobody has not contoured this" in note for note in strict.notes)


def test_map_is_reconstructed_from_the_raw_series_when_the_scanner_sent_none(studies, tmp_path):
    outcome, sidecar = studies[0]
    series = sidecar["sequences"][0]["series"]
    keep = [*series["magnitude"]["paths"], *(r["seg"]["paths"][0] for r in sidecar["readers"])]
    for relative in keep:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(outcome.folder / relative, target)
    report = analyze_paths([tmp_path], gold_standard="truth", report_t1="corrected")
    assert report.problems == ()
    result = report.slices[0]
    assert result.map_source == "node reconstruction, Bloch-corrected"
    truth_t1 = sidecar["truth"]["t1_ms"]["global"]
    truth_reader = next(reader for reader in result.readers if reader.reader == "truth")
    assert abs(truth_reader.myocardium.mean_ms - truth_t1) < 0.1 * truth_t1  # Bloch-corrected fit
    # By default the scanner-comparable plain fit is reported, as the vendor's map: it reads T1 several % low.
    (plain,) = analyze_paths([tmp_path], gold_standard="truth").slices
    assert plain.map_source == "node reconstruction, scanner-comparable (plain fit)"
    plain_truth = next(reader for reader in plain.readers if reader.reader == "truth")
    assert plain_truth.myocardium.mean_ms < truth_reader.myocardium.mean_ms * 0.97
    trainee = next(reader for reader in result.readers if reader.reader == "trainee1")
    assert 0.5 < trainee.score.dice_myocardium < 1.0


def test_command_prints_the_table_and_writes_json(studies, tmp_path):
    outcome, _ = studies[0]
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:
        """Keep "analyze" a sub-command."""

    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["analyze", str(outcome.folder), "--json", str(out), "--gold-standard", "truth"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "trainee1" in result.output and "gold_standard of truth" in result.output
    written = json.loads(out.read_text())
    assert written["gold_standard"] == "truth"
    assert set(written["readers"]) >= {"truth", "expert1", "trainee1"}
    first = written["slices"][0]
    trainee = next(reader for reader in first["readers"] if reader["reader"] == "trainee1")
    assert 0.0 < trainee["score"]["dice_myocardium"] <= 1.0 and set(trainee["segments"]) == {str(s) for s in
                                                                                             range(7, 13)}

    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(app, ["analyze", str(empty)]).exit_code == 2  # nothing to analyse


def test_every_scanner_t1_map_of_a_two_slice_study_gets_its_own_raw_images_for_motion(tmp_path):
    from inference.model_set import load_models

    request = StudyRequest(seed=11, n_slices=2, matrix=(80, 96), pixel_spacing_mm=2.2, vendor=Vendor.SIEMENS,
                           sequence=SequenceChoice.MOLLI, motion_rate=0.0)
    outcome = generate_study(plan_study(request, 0), tmp_path)
    report = analyze_paths([outcome.folder], gold_standard="truth", models=lambda: load_models(device="cpu"))
    analysed = [s for s in report.slices if s.map_kind is MapKind.T1 and s.model is not None]
    assert len(analysed) == 2, report.problems
    # The motion model ran on each: it needs the raw IR images of the same slice.
    assert all(s.model.motion is not None for s in analysed), [s.model for s in analysed]
