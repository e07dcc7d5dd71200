"""One phantom study end to end: every flavour valid, deterministic bytes, scanner conventions, truth in sidecars."""

import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import ParametricMapStorage

from phantom.dicom_contours import MYOCARDIUM_LABEL, read_seg_masks
from phantom.model import SequenceKind, Vendor
from phantom.sidecar import MANIFEST_NAME, PHANTOM_VERSION
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from tests.unit.phantom.test_dicom_images import dciodvfy_errors

SMALL = {"n_slices": 1, "matrix": (80, 96), "pixel_spacing_mm": 2.2}


def small_study(tmp_path, *, seed=5, index=0, **choices):
    request = StudyRequest(seed=seed, **(SMALL | choices))
    return generate_study(plan_study(request, index), tmp_path)


def sidecar_of(outcome, level="mid"):
    return json.loads((outcome.folder / level / "sidecar.json").read_text())


def files_of(folder):
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


def read_map_ms(path):
    """A map file's values in ms (or R2), whatever the vendor's encoding."""
    ds = pydicom.dcmread(path)
    if ds.SOPClassUID == ParametricMapStorage:
        mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        return ds.pixel_array.reshape(int(ds.Rows), int(ds.Columns)) * float(mapping.RealWorldValueSlope)
    return ds.pixel_array * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept", 0.0))


@pytest.mark.slow
@pytest.mark.parametrize("vendor", list(Vendor))
@pytest.mark.parametrize("sequence", [SequenceChoice.MOLLI, SequenceChoice.SHMOLLI, SequenceChoice.T2PREP])
def test_every_file_of_every_flavour_passes_dciodvfy(tmp_path, vendor, sequence):
    outcome = small_study(tmp_path, vendor=vendor, sequence=sequence, with_trainees=False)
    dicom_files = [outcome.folder / path for path in files_of(outcome.folder) if path.suffix == ".dcm"]
    assert len(dicom_files) == outcome.n_dicom_files > 0
    failures = {str(path.relative_to(outcome.folder)): dciodvfy_errors(path) for path in dicom_files}
    assert {path: errors for path, errors in failures.items() if errors} == {}


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = small_study(tmp_path / "a", vendor=Vendor.GE, sequence=SequenceChoice.MOLLI)
    again = small_study(tmp_path / "b", vendor=Vendor.GE, sequence=SequenceChoice.MOLLI)
    other = small_study(tmp_path / "c", seed=6, vendor=Vendor.GE, sequence=SequenceChoice.MOLLI)
    paths = files_of(first.folder)
    assert paths == files_of(again.folder)
    assert [p for p in paths if (first.folder / p).read_bytes() != (again.folder / p).read_bytes()] == []
    assert first.study_instance_uid != other.study_instance_uid
    magnitude = next(p for p in paths if "magnitude" in str(p))
    assert (first.folder / magnitude).read_bytes() != (other.folder / magnitude).read_bytes()


@pytest.fixture(scope="module")
def philips_molli(tmp_path_factory):
    return small_study(tmp_path_factory.mktemp("philips"), vendor=Vendor.PHILIPS, sequence=SequenceChoice.MOLLI,
                       motion_rate=0.0, snr=80.0)


def test_philips_inversion_times_only_in_image_comments(philips_molli):
    sidecar = sidecar_of(philips_molli)
    series = sidecar["sequences"][0]["series"]["magnitude"]
    datasets = [pydicom.dcmread(philips_molli.folder / path) for path in series["paths"]]
    assert all(ds.InversionTime in (None, "") for ds in datasets)
    comments = [float(ds.ImageComments.removeprefix("TIeff ").removesuffix(" ms")) for ds in datasets]
    np.testing.assert_allclose(comments, sidecar["sequences"][0]["scheme"]["inversion_times_ms"], atol=0.5)


def test_molli_instance_order_is_not_ti_order(philips_molli):
    series = sidecar_of(philips_molli)["sequences"][0]["series"]["magnitude"]
    datasets = sorted((pydicom.dcmread(philips_molli.folder / path) for path in series["paths"]),
                      key=lambda ds: int(ds.InstanceNumber))
    tis = [float(ds.ImageComments.split()[1]) for ds in datasets]
    assert tis != sorted(tis)
    assert len({tuple(ds.ImagePositionPatient) for ds in datasets}) == 1


def test_sidecar_holds_truth_motion_readers_and_paths(philips_molli):
    sidecar = sidecar_of(philips_molli)
    assert sidecar["phantom_version"] == PHANTOM_VERSION
    assert sidecar["vendor"] == "philips" and sidecar["slice"]["level"] == "mid"
    assert set(sidecar["truth"]["t1_ms"]["segments"]) == {str(s) for s in range(7, 13)}
    assert 800 < sidecar["truth"]["t1_ms"]["global"] < 1600 and 30 < sidecar["truth"]["t2_ms"]["global"] < 70
    assert 4 < sidecar["truth"]["wall_thickness_mm"]["mean"] < 16
    assert set(sidecar["motion_labels"]) == {str(s) for s in range(7, 13)}
    frames = sidecar["sequences"][0]["motion"]["frames"]
    assert len(frames) == len(sidecar["sequences"][0]["scheme"]["inversion_times_ms"])
    assert all(frame["still"] for frame in frames)  # motion_rate 0
    roles = [reader["role"] for reader in sidecar["readers"]]
    assert roles[0] == "truth" and roles.count("expert") == 3 and roles.count("trainee") == 4
    trainee = next(reader for reader in sidecar["readers"] if reader["role"] == "trainee")
    assert trainee["error_mode"] is not None and trainee["parameters"]
    for reader in sidecar["readers"]:
        seg = pydicom.dcmread(philips_molli.folder / reader["seg"]["paths"][0])
        assert int(np.count_nonzero(read_seg_masks(seg)[MYOCARDIUM_LABEL])) == reader["myocardium_pixels"]
        assert str(seg.ContentCreatorName) == reader["reader"]
        assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
            reader["map_sop_instance_uid"]
    manifest = json.loads((philips_molli.folder / MANIFEST_NAME).read_text())
    assert manifest["n_dicom_files"] == philips_molli.n_dicom_files
    assert manifest["slices"][0]["sidecar"] == "mid/sidecar.json"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("vendor", "sequence", "tolerance"),
    [
        (Vendor.SIEMENS, SequenceChoice.MOLLI, 0.15),  # MOLLI under-reads T1
        (Vendor.PHILIPS, SequenceChoice.SHMOLLI, 0.15),
        (Vendor.GE, SequenceChoice.T2PREP, 0.15),
        (Vendor.ENHANCED, SequenceChoice.MOLLI, 0.15),
    ],
)
def test_scanner_maps_read_near_the_truth(tmp_path, vendor, sequence, tolerance):
    outcome = small_study(tmp_path, vendor=vendor, sequence=sequence, motion_rate=0.0, snr=80.0,
                          with_experts=False, with_trainees=False)
    sidecar = sidecar_of(outcome)
    truth_seg = pydicom.dcmread(outcome.folder / sidecar["readers"][0]["seg"]["paths"][0])
    myocardium = read_seg_masks(truth_seg)[MYOCARDIUM_LABEL]
    values = read_map_ms(outcome.folder / sidecar["sequences"][0]["series"]["map"]["paths"][0])
    fitted = values[myocardium]
    assert np.count_nonzero(fitted == 0) < 0.05 * fitted.size  # nearly every myocardial pixel fitted
    measured = float(fitted[fitted > 0].mean())
    quantity = "t2_ms" if sequence is SequenceChoice.T2PREP else "t1_ms"
    truth = sidecar["truth"][quantity]["global"]
    assert abs(measured - truth) < tolerance * truth
    r2 = read_map_ms(outcome.folder / sidecar["sequences"][0]["series"]["fit_quality"]["paths"][0])
    r2_scale = 4000.0 if vendor is Vendor.SIEMENS else 1.0
    assert np.median(r2[myocardium]) / r2_scale > 0.9


def test_siemens_writes_moco_with_the_raw_images_count(tmp_path):
    outcome = small_study(tmp_path, vendor=Vendor.SIEMENS, sequence=SequenceChoice.T2PREP, motion_rate=1.0,
                          with_experts=False, with_trainees=False)
    series = sidecar_of(outcome)["sequences"][0]["series"]
    assert len(series["moco"]["paths"]) == len(series["magnitude"]["paths"])
    moco = pydicom.dcmread(outcome.folder / series["moco"]["paths"][0])
    assert list(moco.ImageType)[-1] == "MOCO" and moco.SeriesDescription.endswith("_MOCO")
    fit = pydicom.dcmread(outcome.folder / series["fit_quality"]["paths"][0])
    assert fit.SeriesDescription.endswith("_FITPARAMS")


def test_open_choices_vary_with_the_seed_and_given_ones_do_not():
    plans = [plan_study(StudyRequest(seed=9), index) for index in range(12)]
    assert len({plan.vendor for plan in plans}) > 1
    assert len({plan.field for plan in plans}) == 2
    assert len({plan.rr_ms for plan in plans}) == 12
    assert {plan.sequences[0] for plan in plans} == {SequenceKind.MOLLI_533, SequenceKind.MOLLI_5S3S3S}
    assert plan_study(StudyRequest(seed=9), 3) == plans[3]
    fixed = [plan_study(StudyRequest(seed=9, vendor=Vendor.GE, snr=33.0), index) for index in range(6)]
    assert {plan.vendor for plan in fixed} == {Vendor.GE} and {plan.snr for plan in fixed} == {33.0}


@pytest.mark.parametrize(("field", "value"), [("n_slices", 4), ("motion_rate", 1.5), ("seed", -1)])
def test_request_refuses_values_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        StudyRequest(**({"seed": 1} | {field: value}))
