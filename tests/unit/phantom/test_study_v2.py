"""Phantom v2 studies end to end, and phantom v1 left as it was by default."""

import hashlib
import json

import numpy as np
import pydicom
import pytest

from phantom.acquisition import make_coil_field
from phantom.anatomy import choose_matrix, make_heart_geometry, make_slice_anatomy
from phantom.dicom_contours import CAVITY_LABEL, MYOCARDIUM_LABEL, read_seg_masks
from phantom.model import AnatomyVersion, FieldStrength, SliceLevel, Vendor
from phantom.readers import myocardium_mask
from phantom.realism import read_map_values
from phantom.sidecar import MANIFEST_NAME
from phantom.study import (
    LEVEL_ORDER,
    SequenceChoice,
    StudyRequest,
    _Purpose,
    _rng,
    draw_study_v2,
    generate_study,
    make_slice,
    plan_study,
)
from phantom.tissue import sample_pathology, sample_tissue_properties
from tests.unit.phantom.test_dicom_images import dciodvfy_errors
from tests.unit.phantom.test_study import files_of, sidecar_of

SMALL_V2 = {"n_slices": 1, "matrix": (96, 112), "pixel_spacing_mm": 2.4, "anatomy": "v2"}


def small_v2_study(tmp_path, *, seed=5, index=0, **choices):
    request = StudyRequest(seed=seed, **(SMALL_V2 | choices))
    return generate_study(plan_study(request, index), tmp_path)


@pytest.fixture(scope="module")
def ge_molli(tmp_path_factory):
    return small_v2_study(tmp_path_factory.mktemp("v2"), vendor=Vendor.GE, sequence=SequenceChoice.MOLLI,
                          with_trainees=False, field=FieldStrength.T3)


def test_v2_sidecar_and_manifest_record_the_anatomy_and_imaging(ge_molli):
    sidecar = sidecar_of(ge_molli)
    assert sidecar["anatomy"] == "v2"
    imaging = sidecar["imaging"]
    assert imaging["display_matrix"] == [96, 112] and imaging["pixel_spacing_mm"] == 2.4
    assert all(a <= d for a, d in zip(imaging["acquired_matrix"], imaging["display_matrix"], strict=True))
    assert sidecar["shape_template"]["patient"].startswith("SC-HF-I-")
    assert sidecar["truth"]["cavity_pixels"] > 0 and sidecar["truth"]["rv_pixels"] > 0
    manifest = json.loads((ge_molli.folder / MANIFEST_NAME).read_text())
    assert manifest["anatomy"] == "v2" and manifest["imaging"] == imaging


def test_v2_truth_seg_is_the_rasterised_truth_and_the_map_is_noisy_outside_the_body(ge_molli):
    sidecar = sidecar_of(ge_molli)
    truth = sidecar["readers"][0]
    masks = read_seg_masks(pydicom.dcmread(ge_molli.folder / truth["seg"]["paths"][0]))
    myocardium, cavity = masks[MYOCARDIUM_LABEL], masks[CAVITY_LABEL]
    assert int(myocardium.sum()) == sidecar["truth"]["myocardium_pixels"] == truth["myocardium_pixels"]
    assert int(cavity.sum()) == sidecar["truth"]["cavity_pixels"]
    experts = [entry for entry in sidecar["readers"] if entry["role"] == "expert"]
    assert len(experts) == 3
    values = read_map_values(pydicom.dcmread(ge_molli.folder / sidecar["sequences"][0]["series"]["map"]["paths"][0]))
    assert 1100.0 < np.median(values[myocardium]) < 1400.0
    corners = np.concatenate([values[:6, :6].ravel(), values[:6, -6:].ravel(), values[-6:, :6].ravel()])
    assert np.count_nonzero(corners) > 0.5 * corners.size  # the scanner fits the noise in air
    assert np.ptp(corners) > 1000.0


@pytest.mark.slow
@pytest.mark.parametrize("vendor", list(Vendor))
@pytest.mark.parametrize("sequence", [SequenceChoice.MOLLI, SequenceChoice.SHMOLLI, SequenceChoice.T2PREP])
def test_every_v2_file_of_every_flavour_passes_dciodvfy(tmp_path, vendor, sequence):
    outcome = small_v2_study(tmp_path, vendor=vendor, sequence=sequence, with_trainees=False)
    dicom_files = [outcome.folder / path for path in files_of(outcome.folder) if path.suffix == ".dcm"]
    assert len(dicom_files) == outcome.n_dicom_files > 0
    failures = {str(path.relative_to(outcome.folder)): dciodvfy_errors(path) for path in dicom_files}
    assert {path: errors for path, errors in failures.items() if errors} == {}
    sidecar = sidecar_of(outcome)
    assert sidecar["anatomy"] == "v2" and sidecar["sequences"][0]["scheme"]["sequence"]


@pytest.mark.slow
def test_v2_same_seed_same_bytes(tmp_path):
    first = small_v2_study(tmp_path / "a", vendor=Vendor.SIEMENS, sequence=SequenceChoice.T2PREP, motion_rate=1.0)
    again = small_v2_study(tmp_path / "b", vendor=Vendor.SIEMENS, sequence=SequenceChoice.T2PREP, motion_rate=1.0)
    paths = files_of(first.folder)
    assert paths == files_of(again.folder)
    assert [p for p in paths if (first.folder / p).read_bytes() != (again.folder / p).read_bytes()] == []


def test_make_slice_gives_the_written_slices_truth(ge_molli):
    plan = plan_study(StudyRequest(seed=5, vendor=Vendor.GE, sequence=SequenceChoice.MOLLI, with_trainees=False,
                                   field=FieldStrength.T3, **SMALL_V2), 0)
    heart_rng = _rng(plan.seed, 0, _Purpose.HEART)
    heart = make_heart_geometry(heart_rng)
    properties = sample_tissue_properties(heart_rng, plan.field)
    study_v2 = draw_study_v2(plan, heart)
    truth = make_slice(plan, SliceLevel.MID, heart, properties, study_v2.imaging.display_matrix,
                       study_v2.imaging.pixel_spacing_mm, study_v2)
    assert truth.realistic is not None
    anatomy = truth.anatomy
    assert int(anatomy.myocardium_mask.sum()) == sidecar_of(ge_molli)["truth"]["myocardium_pixels"]
    assert np.array_equal(anatomy.myocardium_mask,
                          myocardium_mask(anatomy.label_map.shape, anatomy.endo_contour_px, anatomy.epi_contour_px))


# --- phantom v1 by default, unchanged ---------------------------------------------------------------------------

#: Digests of v1 slices (labels, T1 and proton density maps, coil field, drawn matrix) computed with the phantom as
#: it was before v2 (commit 6f680bc): v2's streams and options must not move a v1 draw.
V1_DIGESTS = {3: "6c58f3c23e33b0e5", 17: "3c124e910c49395e", 29: "3780ce9fe1d30b5c"}


def _v1_digest(seed):
    plan = plan_study(StudyRequest(seed=seed, n_slices=1), 0)
    heart_rng = _rng(seed, 0, _Purpose.HEART)
    heart = make_heart_geometry(heart_rng)
    properties = sample_tissue_properties(heart_rng, plan.field)
    matrix, spacing = choose_matrix(heart_rng)
    rng = _rng(seed, 0, _Purpose.SLICE, LEVEL_ORDER.index(SliceLevel.MID))
    pathology = sample_pathology(rng, SliceLevel.MID)
    anatomy = make_slice_anatomy(rng, SliceLevel.MID, plan.field, matrix=matrix, pixel_spacing_mm=spacing,
                                 pathology=pathology, geometry=heart, properties=properties)
    coil = make_coil_field(anatomy, rng)
    b1 = float(rng.uniform(0.8, 1.0) if plan.field is FieldStrength.T3 else rng.uniform(0.95, 1.02))
    digest = hashlib.sha256()
    for array in (anatomy.label_map, np.round(anatomy.t1_ms, 1), np.round(anatomy.proton_density, 3),
                  np.round(coil.sensitivity, 4)):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr((round(b1, 6), plan.vendor.value, plan.field.value, matrix, spacing)).encode())
    return digest.hexdigest()[:16], anatomy, plan, heart, properties, matrix, spacing


@pytest.mark.parametrize("seed", sorted(V1_DIGESTS))
def test_v1_slices_are_as_before_and_make_slice_draws_them_alike(seed):
    digest, anatomy, plan, heart, properties, matrix, spacing = _v1_digest(seed)
    assert digest == V1_DIGESTS[seed]
    truth = make_slice(plan, SliceLevel.MID, heart, properties, matrix, spacing)
    assert truth.realistic is None
    assert np.array_equal(truth.anatomy.label_map, anatomy.label_map)
    assert np.array_equal(truth.anatomy.t1_ms, anatomy.t1_ms)


def test_v1_is_the_default_and_writes_no_v2_keys(tmp_path):
    assert StudyRequest(seed=1).anatomy is AnatomyVersion.V1
    assert plan_study(StudyRequest(seed=1), 0).anatomy is AnatomyVersion.V1
    assert plan_study(StudyRequest(seed=1), 0) == plan_study(StudyRequest(seed=1, anatomy="v1"), 0)
    outcome = generate_study(plan_study(StudyRequest(seed=5, n_slices=1, matrix=(80, 96), pixel_spacing_mm=2.2,
                                                     sequence=SequenceChoice.T2PREP, with_experts=False,
                                                     with_trainees=False), 0), tmp_path)
    manifest = json.loads((outcome.folder / MANIFEST_NAME).read_text())
    sidecar = sidecar_of(outcome)
    assert not {"anatomy", "imaging", "shape_template_patient"} & set(manifest)
    assert not {"anatomy", "imaging", "shape_template"} & set(sidecar)
    assert "cavity_pixels" not in sidecar["truth"]


def test_bad_anatomy_requests_are_refused():
    with pytest.raises(ValueError, match="anatomy must be one of v1, v2"):
        StudyRequest(seed=1, anatomy="v3")
    with pytest.raises(ValueError, match="vial phantom has no heart"):
        StudyRequest(seed=1, anatomy="v2", vials=True)
    assert StudyRequest(seed=1, anatomy="v2").anatomy is AnatomyVersion.V2
