"""The `myomap phantom` and `myomap phantom-stats` commands."""

import json

import pytest
import typer
from typer.testing import CliRunner

from phantom.cli import register
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def generated(app, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    result = CliRunner().invoke(app, [
        "phantom", "--out", str(out), "--studies", "2", "--seed", "4", "--slices", "1", "--sequence", "t2prep",
        "--vendor", "siemens", "--workers", "2",
    ])
    assert result.exit_code == 0, result.output
    return out


def _files(folder):
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


@pytest.mark.slow
def test_pool_writes_the_same_bytes_as_one_process(generated, tmp_path):
    assert sorted(path.name for path in generated.iterdir()) == ["study_0000", "study_0001"]
    request = StudyRequest(seed=4, vendor=Vendor.SIEMENS, sequence=SequenceChoice.T2PREP, n_slices=1)
    direct = generate_study(plan_study(request, 1), tmp_path)
    pooled = generated / "study_0001"
    assert _files(pooled) == _files(direct.folder)
    assert all((pooled / p).read_bytes() == (direct.folder / p).read_bytes() for p in _files(pooled))


@pytest.mark.slow
def test_stats_json_and_table(app, generated):
    result = CliRunner().invoke(app, ["phantom-stats", str(generated), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["n_studies"] == 2 and stats["n_slices"] == 2
    assert stats["expert_pairwise_dice"]["n"] == 6  # three pairs of experts per slice
    assert sum(mode["n"] for mode in stats["trainee_vs_truth_dice"].values()) == 8
    table = CliRunner().invoke(app, ["phantom-stats", str(generated)])
    assert table.exit_code == 0 and "experts pairwise" in table.output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--readers", "experts,interns", "--readers"), ("--sequence", "sasha", "--sequence"), ("--vendor", "acme", "")],
)
def test_bad_options_are_refused(app, tmp_path, option, value, message):
    result = CliRunner().invoke(app, ["phantom", "--out", str(tmp_path), option, value])
    assert result.exit_code == 2
    assert message in result.output
    assert not any(tmp_path.iterdir())


def test_stats_on_a_folder_without_sidecars_fails_cleanly(app, tmp_path):
    result = CliRunner().invoke(app, ["phantom-stats", str(tmp_path)])
    assert result.exit_code == 1
    assert "no sidecar.json" in result.output


def test_anatomy_option_takes_v1_or_v2(app, tmp_path):
    result = CliRunner().invoke(app, ["phantom", "--out", str(tmp_path), "--anatomy", "v3"])
    assert result.exit_code == 2 and "--anatomy" in result.output
    result = CliRunner().invoke(app, ["phantom", "--out", str(tmp_path), "--anatomy", "v2", "--vials"])
    assert result.exit_code == 2 and "vial phantom has no heart" in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_v2_studies_and_the_realism_table(app, generated, tmp_path):
    out = tmp_path / "v2"
    result = CliRunner().invoke(app, [
        "phantom", "--out", str(out), "--studies", "1", "--seed", "4", "--slices", "1", "--sequence", "molli",
        "--readers", "", "--anatomy", "v2", "--workers", "1",
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "study_0000" / "manifest.json").read_text())
    assert manifest["anatomy"] == "v2"
    # generated (v1) holds T2-prep only: no T1 map to compare, so it is refused cleanly
    refused = CliRunner().invoke(app, ["phantom-realism", str(generated)])
    assert refused.exit_code == 1 and "no phantom heart slice with a T1 sequence" in refused.output
    result = CliRunner().invoke(app, ["phantom-realism", str(out), "--json"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.output)
    assert comparison["datasets"][0]["label"] == "phantom v2" and comparison["reference"]["n_slices"] == 96
    assert "cine SSFP" in comparison["note"]
    table = CliRunner().invoke(app, ["phantom-realism", str(out), "--image", "magnitude"])
    assert table.exit_code == 0 and "Sunnybrook" in table.output and "edge 10-90" in table.output
