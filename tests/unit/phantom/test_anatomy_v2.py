"""Phantom v2 anatomy: imaging choices, template shapes, structures, truth masks consistent with what is drawn."""

import numpy as np
import pytest
from scipy import ndimage

from phantom.anatomy import AnatomyError, make_heart_geometry
from phantom.anatomy_v2 import (
    MATRIX_RANGE,
    MAX_ACQUIRED_PHASE_MM,
    PIXEL_SPACING_RANGE_MM,
    ImagingV2,
    Structure,
    choose_imaging,
    make_realistic_slice,
    make_study_shape,
)
from phantom.model import FieldStrength, SliceLevel, Tissue
from phantom.readers import myocardium_mask
from phantom.tissue import Pathology, PathologyKind, sample_pathology, sample_tissue_properties

SEEDS = range(6)


def _study(seed, *, field=FieldStrength.T3, matrix=None, spacing=None, pathology=True):
    rng = np.random.default_rng(seed)
    geometry = make_heart_geometry(rng)
    properties = sample_tissue_properties(rng, field)
    imaging = choose_imaging(rng, matrix=matrix, pixel_spacing_mm=spacing)
    shape = make_study_shape(rng, geometry, field)
    return {
        level: make_realistic_slice(rng, level, field, imaging=imaging, geometry=geometry, study_shape=shape,
                                    properties=properties,
                                    pathology=sample_pathology(rng, level, probability=0.5) if pathology else None)
        for level in SliceLevel
    }


@pytest.fixture(scope="module")
def studies():
    # Half of them at the coarsest spacing, where thin walls are hardest to keep closed on the pixel grid.
    return [_study(seed, matrix=(100, 112) if seed % 2 else None, spacing=2.5 if seed % 2 else None)
            for seed in SEEDS]


def test_imaging_choices_stay_in_range():
    rng = np.random.default_rng(0)
    factors = set()
    for _ in range(200):
        imaging = choose_imaging(rng)
        rows, columns = imaging.display_matrix
        assert MATRIX_RANGE[0] <= rows <= MATRIX_RANGE[1] and MATRIX_RANGE[0] <= columns <= MATRIX_RANGE[1]
        assert PIXEL_SPACING_RANGE_MM[0] <= imaging.pixel_spacing_mm <= PIXEL_SPACING_RANGE_MM[1]
        row_mm, column_mm = imaging.acquired_spacing_mm
        assert imaging.pixel_spacing_mm - 1e-6 <= min(row_mm, column_mm)
        assert max(row_mm, column_mm) <= MAX_ACQUIRED_PHASE_MM + 0.05
        readout_mm = column_mm if imaging.phase_encoding == "COL" else row_mm
        factors.add(round(readout_mm / imaging.pixel_spacing_mm, 1))
    assert max(factors) >= 1.9 and min(factors) <= 1.05  # interpolated two-fold and not at all
    fixed = choose_imaging(rng, matrix=(80, 96), pixel_spacing_mm=2.2)
    assert fixed.display_matrix == (80, 96) and fixed.pixel_spacing_mm == 2.2
    with pytest.raises(AnatomyError, match="acquired_matrix"):
        ImagingV2((100, 100), 1.5, (120, 100), "COL", "none")
    with pytest.raises(AnatomyError, match="phase_encoding"):
        ImagingV2((100, 100), 1.5, (80, 100), "AP", "none")


def test_fractions_are_area_fractions_with_partial_volume(studies):
    for study in studies:
        for realistic in study.values():
            fractions = realistic.fractions
            np.testing.assert_allclose(fractions.sum(axis=0), 1.0, atol=1e-5)
            assert fractions.min() >= 0.0
            myocardium = realistic.anatomy.myocardium_mask
            # Every border is partial: pixels of the labelled myocardium mix with blood, and most are mostly muscle.
            drawn = fractions[Structure.MYOCARDIUM][myocardium]
            assert np.mean(drawn) > 0.7
            assert np.any((drawn > 0.05) & (drawn < 0.95))
            assert np.any((fractions[Structure.LV_BLOOD] > 0.05) & (fractions[Structure.LV_BLOOD] < 0.95))
            # The truth's cavity and RV hold what is drawn there.
            cavity = fractions[Structure.LV_BLOOD] + fractions[Structure.PAPILLARY]
            assert cavity[realistic.anatomy.cavity_mask].mean() > 0.8
            rv = fractions[Structure.RV_BLOOD] + fractions[Structure.RV_WALL] + fractions[Structure.RV_TRABECULA]
            if realistic.rv_mask.any():
                assert rv[realistic.rv_mask].mean() > 0.6


def test_truth_masks_are_the_rasterised_contours_and_the_ring_is_closed(studies):
    for study in studies:
        for realistic in study.values():
            anatomy = realistic.anatomy
            shape = anatomy.label_map.shape
            assert np.array_equal(anatomy.myocardium_mask,
                                  myocardium_mask(shape, anatomy.endo_contour_px, anatomy.epi_contour_px))
            # The cavity (blood, papillary muscles, trabeculae) is enclosed: cut out the myocardium and no
            # 4-connected path leads from the cavity to the image border.
            labels, _ = ndimage.label(~anatomy.myocardium_mask)
            border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
            assert not set(np.unique(labels[anatomy.cavity_mask])) & border
            assert not (anatomy.cavity_mask & anatomy.myocardium_mask).any()
            assert anatomy.aha_segment_map[anatomy.myocardium_mask].min() >= 1
            assert not anatomy.aha_segment_map[~anatomy.myocardium_mask].any()


def test_areas_and_structures_are_plausible(studies):
    for study in studies:
        for level, realistic in study.items():
            anatomy = realistic.anatomy
            pixel_cm2 = anatomy.geometry.pixel_spacing_mm[0] ** 2 / 100.0
            myocardium_cm2 = anatomy.myocardium_mask.sum() * pixel_cm2
            cavity_cm2 = anatomy.cavity_mask.sum() * pixel_cm2
            assert 4.0 < myocardium_cm2 < 40.0, (level, myocardium_cm2)
            assert 2.0 < cavity_cm2 < 60.0, (level, cavity_cm2)
            assert all(3.9 <= t <= 15.1 for t in anatomy.wall_thickness_mm.values())
            labels = set(np.unique(anatomy.label_map).tolist())
            assert {Tissue.LV_BLOOD, Tissue.MYOCARDIUM, Tissue.LUNG, Tissue.CHEST_WALL} <= labels
            if level is SliceLevel.BASAL:
                assert Tissue.RV_BLOOD in labels and realistic.rv_mask.sum() * pixel_cm2 > 3.0
        basal, apical = study[SliceLevel.BASAL].anatomy, study[SliceLevel.APICAL].anatomy
        assert apical.cavity_mask.sum() < basal.cavity_mask.sum()
    drawn = set()
    for study in studies:
        for realistic in study.values():
            drawn |= {s for s in Structure if realistic.fractions[s].max() > 0.5}
    assert drawn == set(Structure) - {Structure.SPLEEN} or drawn == set(Structure)


def test_shapes_come_from_several_templates_and_the_heart_is_off_centre(studies):
    templates = {realistic.template for study in studies for realistic in study.values()}
    assert len({patient for patient, _ in templates}) >= 3
    offsets = [realistic.extras["lv_offset_from_image_centre_mm"] for study in studies for realistic in
               study.values()]
    assert np.median(offsets) > 10.0


def test_truth_property_maps_and_pathology():
    pathology = Pathology(PathologyKind.FOCAL_OEDEMA, (7, 8), 1.2, 1.3)
    rng = np.random.default_rng(5)
    geometry = make_heart_geometry(rng)
    properties = sample_tissue_properties(rng, FieldStrength.T1_5)
    imaging = choose_imaging(rng)
    shape = make_study_shape(rng, geometry, FieldStrength.T1_5)
    realistic = make_realistic_slice(rng, SliceLevel.MID, FieldStrength.T1_5, imaging=imaging, geometry=geometry,
                                     study_shape=shape, properties=properties, pathology=pathology)
    anatomy = realistic.anatomy
    inside = anatomy.myocardium_mask & np.isin(anatomy.aha_segment_map, [7, 8])
    outside = anatomy.myocardium_mask & np.isin(anatomy.aha_segment_map, [10, 11])
    assert np.median(anatomy.t1_ms[inside]) > 1.1 * np.median(anatomy.t1_ms[outside])
    assert np.median(realistic.t2_factor[inside]) > 1.2
    blood = anatomy.label_map == Tissue.LV_BLOOD
    assert np.median(anatomy.t1_ms[blood]) > np.median(anatomy.t1_ms[outside])
    air = anatomy.proton_density[anatomy.label_map == Tissue.BACKGROUND]
    assert np.median(air) == 0.0 and air.max() < 0.75  # only partial volume at the body's outline
    with pytest.raises(AnatomyError, match="pathology segments"):
        make_realistic_slice(rng, SliceLevel.APICAL, FieldStrength.T1_5, imaging=imaging, geometry=geometry,
                             study_shape=shape, properties=properties, pathology=pathology)


def test_transmit_field_varies_more_at_3t():
    spread = {}
    for field in FieldStrength:
        values = [np.ptp(r.b1_relative) for seed in range(3)
                  for r in _study(10 + seed, field=field, pathology=False).values()]
        spread[field] = np.mean(values)
    assert spread[FieldStrength.T3] > 1.5 * spread[FieldStrength.T1_5] > 0
