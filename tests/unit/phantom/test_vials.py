"""The vial T1 phantom: a non-cardiac study with per-vial truth and the scanner's MOLLI and ShMOLLI maps."""

import json

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from phantom.vials import VIAL_T1_MS, VialPhantomError, make_vial_phantom, vial_t2_ms
from tests.unit.phantom.test_dicom_images import dciodvfy_errors

SMALL = {"matrix": (80, 96), "pixel_spacing_mm": 2.2, "motion_rate": 0.3}


def vial_study(tmp_path, vendor=Vendor.SIEMENS, **choices):
    request = StudyRequest(seed=12, vendor=vendor, vials=True, snr=60.0, **(SMALL | choices))
    return generate_study(plan_study(request, 0), tmp_path)


def test_vials_span_300_to_3600_ms_in_a_water_bath():
    assert len(VIAL_T1_MS) == 9 and VIAL_T1_MS[0] == 300.0 and VIAL_T1_MS[-1] == 3600.0
    phantom = make_vial_phantom(np.random.default_rng(0), matrix=(96, 96), pixel_spacing_mm=2.0)
    anatomy = phantom.anatomy
    assert not anatomy.myocardium_mask.any() and anatomy.wall_thickness_mm == {}
    for vial in phantom.vials:
        roi = phantom.roi_labels == vial.number
        assert roi.sum() > 20
        np.testing.assert_allclose(anatomy.t1_ms[roi], vial.t1_ms)
        np.testing.assert_allclose(anatomy.t2_ms[roi], vial_t2_ms(vial.t1_ms))
    assert anatomy.proton_density[0, 0] == 0.0  # air in the corner
    with pytest.raises(VialPhantomError, match="cannot hold"):
        make_vial_phantom(np.random.default_rng(0), matrix=(64, 64), pixel_spacing_mm=2.0)


def test_vials_with_t2prep_are_refused():
    with pytest.raises(ValueError, match="T1 phantom"):
        StudyRequest(seed=1, vials=True, sequence=SequenceChoice.T2PREP)


@pytest.fixture(scope="module")
def siemens_vials(tmp_path_factory):
    return vial_study(tmp_path_factory.mktemp("vials"))


def test_vial_study_layout_sidecar_and_no_heart(siemens_vials):
    folder = siemens_vials.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["study_kind"] == "t1_vials"
    (only,) = manifest["slices"]
    assert only["level"] == "vials" and only["sidecar"] == "vials/sidecar.json"
    assert only["sequences"][1] == "shmolli" and only["sequences"][0].startswith("molli")
    sidecar = json.loads((folder / "vials" / "sidecar.json").read_text())
    assert sidecar["lv_present"] is False and "readers" not in sidecar
    assert [vial["t1_ms"] for vial in sidecar["vials"]] == list(VIAL_T1_MS)
    assert [item["scheme"]["sequence"] for item in sidecar["sequences"]][1] == "shmolli"
    assert not (folder / "vials" / "readers").exists()
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert "BodyPartExamined" not in ds and ds.StudyDescription == "T1 phantom^Vials"
    raw = pydicom.dcmread(folder / sidecar["sequences"][0]["series"]["magnitude"]["paths"][0])
    assert list(raw.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    series = sidecar["sequences"][0]["series"]
    moco, raws = ([pydicom.dcmread(folder / path).pixel_array for path in series[role]["paths"]]
                  for role in ("moco", "magnitude"))
    assert all(np.array_equal(a, b) for a, b in zip(moco, raws, strict=True))  # vials do not breathe


def test_scanner_maps_measure_each_vial(siemens_vials):
    sidecar = json.loads((siemens_vials.folder / "vials" / "sidecar.json").read_text())
    for item in sidecar["sequences"]:
        map_ds = pydicom.dcmread(siemens_vials.folder / item["series"]["map"]["paths"][0])
        values = map_ds.pixel_array.astype(float)  # Siemens: ms, 0 where the fit failed
        y, x = np.mgrid[0:values.shape[0], 0:values.shape[1]]
        for vial, measured in zip(sidecar["vials"], item["scanner_map_in_vial_roi"], strict=True):
            assert measured["vial"] == vial["vial"] and 10 < measured["fitted_pixels"] <= vial["roi_pixels"]
            # the plain MOLLI/ShMOLLI fit reads low, more so for long T1 (docs/phantom.md)
            assert -0.15 < measured["mean_ms"] / vial["t1_ms"] - 1 < 0.05, (item["scheme"]["sequence"], vial)
            roi = np.hypot(x - vial["centre_px"][0], y - vial["centre_px"][1]) <= vial["roi_radius_px"]
            assert roi.sum() == vial["roi_pixels"]
            fitted = values[roi & (values > 0)]
            assert fitted.size == measured["fitted_pixels"]
            assert fitted.mean() == pytest.approx(measured["mean_ms"], abs=1.0)  # the file holds what the sidecar says


@pytest.mark.slow
@pytest.mark.parametrize("vendor", list(Vendor))
def test_every_vial_file_passes_dciodvfy(tmp_path, vendor):
    outcome = vial_study(tmp_path, vendor=vendor, sequence=SequenceChoice.SHMOLLI)
    failures = {str(path): dciodvfy_errors(path) for path in outcome.folder.rglob("*.dcm")}
    assert len(failures) == outcome.n_dicom_files
    assert {path: errors for path, errors in failures.items() if errors} == {}


def test_cli_vials_and_quirk_options(tmp_path):
    import typer

    from phantom.cli import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, [
        "phantom", "--out", str(tmp_path), "--seed", "3", "--vendor", "ge", "--vials", "--sequence", "molli",
        "--vendor-quirks", "ge-mixed,no-field-strength", "--workers", "1",
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "study_0000" / "manifest.json").read_text())
    assert manifest["study_kind"] == "t1_vials"
    assert manifest["vendor_quirks"] == ["ge-mixed", "no-field-strength"]
    refused = CliRunner().invoke(app, ["phantom", "--out", str(tmp_path / "x"), "--vendor-quirks", "colour"])
    assert refused.exit_code == 2 and "vendor quirks are" in refused.output
    wrong = CliRunner().invoke(app, ["phantom", "--out", str(tmp_path / "y"), "--vendor", "siemens",
                                     "--vendor-quirks", "ge-mixed"])
    assert wrong.exit_code == 2 and "ge-mixed belongs to" in wrong.output
