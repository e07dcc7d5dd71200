"""Reader statistics from the SEG files of a phantom folder."""

import json

import numpy as np
import pytest

from phantom.model import Vendor
from phantom.stats import DiceSummary, PhantomStatsError, collect_reader_stats, dice, render_table
from phantom.study import SequenceChoice, StudyRequest, generate_studies


def test_dice_of_overlapping_disjoint_and_empty_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert dice(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, ~a) == 0.0


def test_summary_of_no_values_is_empty():
    summary = DiceSummary.of([])
    assert summary.n == 0 and summary.to_json() == {"n": 0, "mean": None, "min": None, "max": None}
    assert DiceSummary.of([0.8, 0.9]).to_json() == {"n": 2, "mean": 0.85, "min": 0.8, "max": 0.9}


def test_folder_without_sidecars_is_refused(tmp_path):
    with pytest.raises(PhantomStatsError, match="no sidecar.json"):
        collect_reader_stats(tmp_path)


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats")
    request = StudyRequest(seed=21, vendor=Vendor.SIEMENS, sequence=SequenceChoice.T2PREP, n_slices=3)
    generate_studies(request, out, n_studies=4, workers=1)
    return out


@pytest.mark.slow
def test_expert_agreement_matches_the_published_inter_observer_dice(phantom_folder, capsys):
    stats = collect_reader_stats(phantom_folder)
    assert stats.n_studies == 4 and stats.n_slices == 12
    assert stats.expert_pairwise.n == 36
    # Experts agree with each other at a myocardium Dice of about 0.908 (the published inter-observer figure).
    assert 0.88 <= stats.expert_pairwise.mean <= 0.92
    assert stats.expert_vs_truth.mean > stats.expert_pairwise.mean
    assert sum(summary.n for summary in stats.trainee_vs_truth.values()) == 48
    if "good" in stats.trainee_vs_truth and "shifted" in stats.trainee_vs_truth:
        assert stats.trainee_vs_truth["good"].mean > stats.trainee_vs_truth["shifted"].mean
    render_table(stats)
    assert "experts pairwise" in capsys.readouterr().out
    assert json.loads(json.dumps(stats.to_json()))["expert_pairwise_dice"]["n"] == 36


@pytest.mark.slow
def test_missing_seg_file_is_reported(phantom_folder, tmp_path):
    sidecar = next(phantom_folder.rglob("sidecar.json"))
    study = tmp_path / sidecar.parent.parent.name
    (study / sidecar.parent.name).mkdir(parents=True)
    (study / "manifest.json").write_text("{}")
    (study / sidecar.parent.name / "sidecar.json").write_text(sidecar.read_text())
    with pytest.raises(PhantomStatsError, match="does not exist"):
        collect_reader_stats(tmp_path)
