"""Vendor quirks on request: GE mixed components, one series per TI, Siemens display copies, no field strength."""

import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage, SecondaryCaptureImageStorage

from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from phantom.vendors import QUIRK_VENDORS, VendorQuirk, parse_quirks, quirks_for
from tests.unit.phantom.test_dicom_images import dciodvfy_errors

SMALL = {"n_slices": 1, "matrix": (80, 96), "pixel_spacing_mm": 2.2, "with_experts": False, "with_trainees": False}


def quirky_study(tmp_path, *, seed=5, sequence=SequenceChoice.MOLLI, **choices):
    request = StudyRequest(seed=seed, sequence=sequence, **(SMALL | choices))
    return generate_study(plan_study(request, 0), tmp_path)


def sidecar_of(outcome):
    return json.loads((outcome.folder / "mid" / "sidecar.json").read_text())


def files_of(folder):
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


def test_parse_quirks_and_the_vendors_they_belong_to():
    assert parse_quirks("ge-mixed, per-ti") == {VendorQuirk.GE_MIXED, VendorQuirk.PER_TI}
    assert parse_quirks("") == parse_quirks(None) == frozenset()
    with pytest.raises(ValueError, match="vendor quirks are"):
        parse_quirks("ge-mixed,colour")
    every = frozenset(VendorQuirk)
    assert quirks_for(Vendor.GE, every) == {VendorQuirk.GE_MIXED, VendorQuirk.PER_TI, VendorQuirk.NO_FIELD_STRENGTH}
    assert quirks_for(Vendor.SIEMENS, every) == {VendorQuirk.DISPLAY_COPY, VendorQuirk.NO_FIELD_STRENGTH}
    assert quirks_for(Vendor.ENHANCED, every) == frozenset()
    assert set(QUIRK_VENDORS) == set(VendorQuirk)


def test_a_quirk_the_chosen_vendor_lacks_is_refused():
    with pytest.raises(ValueError, match="ge-mixed belongs to"):
        StudyRequest(seed=1, vendor=Vendor.SIEMENS, vendor_quirks={"ge-mixed"})
    with pytest.raises(ValueError, match="no-field-strength"):
        StudyRequest(seed=1, vendor=Vendor.ENHANCED, vendor_quirks={VendorQuirk.NO_FIELD_STRENGTH})
    assert StudyRequest(seed=1, vendor_quirks=["per-ti"]).vendor_quirks == {VendorQuirk.PER_TI}


def test_quirks_apply_only_to_the_studies_whose_vendor_has_them(tmp_path):
    request = StudyRequest(seed=7, vendor_quirks={"display-copy"}, **SMALL)
    index = next(i for i in range(20) if plan_study(request, i).vendor is not Vendor.SIEMENS)
    assert plan_study(request, index).vendor_quirks == frozenset()
    plain = generate_study(plan_study(StudyRequest(seed=7, **SMALL), index), tmp_path / "plain")
    quirky = generate_study(plan_study(request, index), tmp_path / "quirky")
    paths = files_of(plain.folder)
    assert paths == files_of(quirky.folder)
    assert [p for p in paths if (plain.folder / p).read_bytes() != (quirky.folder / p).read_bytes()] == []


@pytest.fixture(scope="module")
def ge_mixed(tmp_path_factory):
    return quirky_study(tmp_path_factory.mktemp("ge_mixed"), vendor=Vendor.GE, vendor_quirks={"ge-mixed"},
                        motion_rate=0.0)


def test_ge_mixed_series_holds_four_components_per_ti_marked_only_privately(ge_mixed):
    sequence = sidecar_of(ge_mixed)["sequences"][0]
    series = sequence["series"]
    assert set(series) == {"magnitude", "map", "fit_quality"}  # phase lives in the raw series
    record = series["magnitude"]
    n_tis = len(sequence["scheme"]["inversion_times_ms"])
    assert record["image_components"] == ["MAGNITUDE", "PHASE", "REAL", "IMAGINARY"] * n_tis
    datasets = [pydicom.dcmread(ge_mixed.folder / path) for path in record["paths"]]
    assert {ds.SeriesInstanceUID for ds in datasets} == {record["series_instance_uid"]}
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, 4 * n_tis + 1))
    assert all(list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "OTHER"] for ds in datasets)
    assert all(ds[0x0043, 0x0010].value == "GEMS_PARM_01" for ds in datasets)
    codes = [int(ds[0x0043, 0x102F].value) for ds in datasets]
    assert codes == [0, 1, 2, 3] * n_tis
    assert all(int(ds.ImagesInAcquisition) == 4 * n_tis for ds in datasets)
    by_code = {code: [ds for ds, c in zip(datasets, codes, strict=True) if c == code] for code in range(4)}
    assert all(int(ds.PixelRepresentation) == 0 and ds.pixel_array.min() >= 0 for ds in by_code[0])
    for code in (1, 2, 3):
        assert all(int(ds.PixelRepresentation) == 1 for ds in by_code[code])
        assert min(int(ds.pixel_array.min()) for ds in by_code[code]) < 0
    phase = np.stack([ds.pixel_array for ds in by_code[1]]) / 1000.0
    assert phase.min() >= -np.pi - 1e-3 and phase.max() <= np.pi + 1e-3
    # real and imaginary recombine to the magnitude, up to the scale and rounding
    magnitude = np.stack([ds.pixel_array for ds in by_code[0]]).astype(float)
    modulus = np.hypot(*(np.stack([ds.pixel_array for ds in by_code[c]]).astype(float) for c in (2, 3)))
    bright = magnitude > 0.2 * magnitude.max()
    np.testing.assert_allclose(modulus[bright] / magnitude[bright], 32767 / 65535, rtol=0.02)
    tis = [float(ds.InversionTime) for ds in by_code[0]]
    np.testing.assert_allclose(tis, sequence["scheme"]["inversion_times_ms"], atol=0.5)


def test_ge_mixed_map_references_only_magnitude_images(ge_mixed):
    series = sidecar_of(ge_mixed)["sequences"][0]["series"]
    record = series["magnitude"]
    magnitude_uids = {uid for uid, component in zip(record["sop_instance_uids"], record["image_components"],
                                                    strict=True) if component == "MAGNITUDE"}
    parametric_map = pydicom.dcmread(ge_mixed.folder / series["map"]["paths"][0])
    referenced = {
        item.ReferencedSOPInstanceUID
        for study in parametric_map.ReferencedSeriesSequence
        for item in study.ReferencedInstanceSequence
    }
    assert referenced == magnitude_uids


@pytest.fixture(scope="module")
def ge_per_ti(tmp_path_factory):
    return quirky_study(tmp_path_factory.mktemp("ge_per_ti"), vendor=Vendor.GE, vendor_quirks={"per-ti", "ge-mixed"},
                        motion_rate=0.0)


def test_per_ti_series_have_consecutive_numbers_one_protocol_and_one_ti_each(ge_per_ti):
    sequence = sidecar_of(ge_per_ti)["sequences"][0]
    records = sequence["series"]["magnitude_per_ti"]
    assert "magnitude" not in sequence["series"] and "phase" not in sequence["series"]
    numbers = [record["series_number"] for record in records]
    assert numbers == list(range(numbers[0], numbers[0] + len(records)))
    assert [record["times_ms"][0] for record in records] == pytest.approx(
        sequence["scheme"]["inversion_times_ms"], abs=1e-3
    )
    protocols, tis = set(), []
    for record in records:
        datasets = [pydicom.dcmread(ge_per_ti.folder / path) for path in record["paths"]]
        assert len(datasets) == 4 and record["image_components"] == ["MAGNITUDE", "PHASE", "REAL", "IMAGINARY"]
        assert {int(ds.ImagesInAcquisition) for ds in datasets} == {4}
        protocols |= {str(ds.ProtocolName) for ds in datasets}
        assert len({ds.InversionTime for ds in datasets}) == 1
        tis.append(float(datasets[0].InversionTime))
        assert f"TI={tis[-1]:.0f}" in str(datasets[0].SeriesDescription)
    assert len(protocols) == 1
    assert len(set(tis)) == len(tis)
    assert tis != sorted(tis)  # series follow acquisition order, not TI order (MOLLI interleaves)


def test_philips_per_ti_series_keep_ti_in_image_comments(tmp_path):
    outcome = quirky_study(tmp_path, vendor=Vendor.PHILIPS, vendor_quirks={"per-ti"}, sequence=SequenceChoice.T2PREP)
    sequence = sidecar_of(outcome)["sequences"][0]
    records = sequence["series"]["magnitude_per_ti"]
    datasets = [pydicom.dcmread(outcome.folder / record["paths"][0]) for record in records]
    assert [ds.ImageComments for ds in datasets] == [f"T2prep {t:.0f} ms" for t in sequence["scheme"]["t2_prep_ms"]]
    # one scale over the acquisition: the reference image (no preparation) is the brightest
    peaks = [int(ds.pixel_array.max()) for ds in datasets]
    assert peaks[int(np.argmin(sequence["scheme"]["t2_prep_ms"]))] == 65535 == max(peaks)


@pytest.fixture(scope="module")
def siemens_quirks(tmp_path_factory):
    return quirky_study(tmp_path_factory.mktemp("siemens"), vendor=Vendor.SIEMENS,
                        vendor_quirks={"display-copy", "no-field-strength"}, sequence=SequenceChoice.ALL)


def test_siemens_map_series_holds_a_colour_display_copy(siemens_quirks):
    for sequence in sidecar_of(siemens_quirks)["sequences"]:
        record = sequence["series"]["map"]
        assert record["sop_class_uids"] == [MRImageStorage, SecondaryCaptureImageStorage]
        grey, colour = (pydicom.dcmread(siemens_quirks.folder / path) for path in record["paths"])
        assert colour.SeriesInstanceUID == grey.SeriesInstanceUID and colour.Modality == "MR"
        assert int(colour.SamplesPerPixel) == 3 and colour.PhotometricInterpretation == "RGB"
        assert colour.pixel_array.shape == (*grey.pixel_array.shape, 3)
        assert list(colour.ImagePositionPatient) == list(grey.ImagePositionPatient)
        assert list(colour.ImageOrientationPatient) == list(grey.ImageOrientationPatient)
        quantity = "T2 MAP" if sequence["scheme"]["sequence"] == "t2prep" else "T1 MAP"
        assert list(colour.ImageType)[:3] == ["DERIVED", "PRIMARY", quantity]
        assert colour.SourceImageSequence[0].ReferencedSOPInstanceUID == grey.SOPInstanceUID
        assert np.all(colour.pixel_array[grey.pixel_array == 0] == 0)  # background stays black
        assert "sop_class_uids" not in sequence["series"]["fit_quality"]  # no copy of the fit quality


def test_no_field_strength_in_any_mr_header(siemens_quirks):
    for path in siemens_quirks.folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.SOPClassUID == MRImageStorage:
            assert "MagneticFieldStrength" not in ds and "ImagingFrequency" not in ds, path
    manifest = json.loads((siemens_quirks.folder / "manifest.json").read_text())
    assert manifest["vendor_quirks"] == ["display-copy", "no-field-strength"]
    assert sidecar_of(siemens_quirks)["vendor_quirks"] == ["display-copy", "no-field-strength"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("vendor", "quirks", "sequence"),
    [
        (Vendor.GE, {"ge-mixed"}, SequenceChoice.ALL),
        (Vendor.GE, {"ge-mixed", "per-ti", "no-field-strength"}, SequenceChoice.SHMOLLI),
        (Vendor.PHILIPS, {"per-ti", "no-field-strength"}, SequenceChoice.ALL),
        (Vendor.SIEMENS, {"display-copy", "no-field-strength"}, SequenceChoice.ALL),
    ],
)
def test_every_file_of_every_quirk_passes_dciodvfy(tmp_path, vendor, quirks, sequence):
    outcome = quirky_study(tmp_path, vendor=vendor, vendor_quirks=quirks, sequence=sequence, with_experts=True)
    dicom_files = [outcome.folder / path for path in files_of(outcome.folder) if path.suffix == ".dcm"]
    assert len(dicom_files) == outcome.n_dicom_files > 0
    failures = {str(path.relative_to(outcome.folder)): dciodvfy_errors(path) for path in dicom_files}
    assert {path: errors for path, errors in failures.items() if errors} == {}
