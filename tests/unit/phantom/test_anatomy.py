"""Short-axis anatomy: sizes, wall thickness, AHA segments, geometry and partial volume."""

import numpy as np
import pytest
from skimage.draw import polygon2mask

from phantom.anatomy import AnatomyError, contour_segments, make_heart_geometry, make_slice_anatomy
from phantom.model import FieldStrength, SliceLevel, Tissue
from phantom.tissue import Pathology, PathologyKind

SEEDS = range(8)


@pytest.fixture(scope="module")
def studies():
    out = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        geometry = make_heart_geometry(rng)
        out.append(
            {level: make_slice_anatomy(rng, level, FieldStrength.T1_5, geometry=geometry) for level in SliceLevel}
        )
    return out


def _endo_diameter_mm(anatomy):
    spacing = anatomy.geometry.pixel_spacing_mm[0]
    radius = np.hypot(*(anatomy.endo_contour_px - np.array(anatomy.lv_centre_px)).T) * spacing
    return 2 * radius.mean()


def test_sizes_and_wall_thickness(studies):
    for study in studies:
        assert 43.0 <= _endo_diameter_mm(study[SliceLevel.BASAL]) <= 57.0
        assert _endo_diameter_mm(study[SliceLevel.APICAL]) < _endo_diameter_mm(study[SliceLevel.MID])
        for anatomy in study.values():
            assert all(6.0 <= t <= 15.0 for t in anatomy.wall_thickness_mm.values())
            spacing = anatomy.geometry.pixel_spacing_mm
            assert 1.2 <= spacing[0] == spacing[1] <= 2.0
        basal = np.mean(list(study[SliceLevel.BASAL].wall_thickness_mm.values()))
        apical = np.mean(list(study[SliceLevel.APICAL].wall_thickness_mm.values()))
        assert apical < basal


def test_structures_present_where_expected(studies):
    for study in studies:
        for level, anatomy in study.items():
            labels = set(np.unique(anatomy.label_map))
            assert {Tissue.LV_BLOOD, Tissue.MYOCARDIUM, Tissue.LUNG, Tissue.CHEST_WALL, Tissue.BACKGROUND} <= labels
            assert (Tissue.PAPILLARY in labels) == (level is not SliceLevel.APICAL)
            if level is SliceLevel.BASAL:
                assert Tissue.RV_BLOOD in labels and Tissue.EPICARDIAL_FAT in labels
    rv_pixels = [(s[SliceLevel.BASAL].label_map == Tissue.RV_BLOOD).sum() for s in studies]
    apical_rv = [(s[SliceLevel.APICAL].label_map == Tissue.RV_BLOOD).sum() for s in studies]
    assert np.mean(apical_rv) < 0.5 * np.mean(rv_pixels)


def test_aha_segments_count_contiguity_and_order(studies):
    expected = {
        SliceLevel.BASAL: [2, 3, 4, 5, 6, 1],
        SliceLevel.MID: [8, 9, 10, 11, 12, 7],
        SliceLevel.APICAL: [14, 15, 16, 13],
    }
    for study in studies:
        for level, anatomy in study.items():
            present = set(np.unique(anatomy.aha_segment_map)) - {0}
            assert present == set(expected[level])
            assert np.array_equal(anatomy.aha_segment_map > 0, anatomy.myocardium_mask)
            # Walking counter-clockwise on the screen from just past the anterior insertion, each segment comes
            # once, in AHA order (basal and mid start at the anterior insertion; apical at the septal sector).
            segments = contour_segments(anatomy, anatomy.epi_contour_px)
            theta = (
                np.degrees(
                    np.arctan2(
                        -(anatomy.epi_contour_px[:, 1] - anatomy.lv_centre_px[1]),
                        anatomy.epi_contour_px[:, 0] - anatomy.lv_centre_px[0],
                    )
                )
                % 360
            )
            ax, ay = anatomy.rv_insertion_px[0]
            anterior = np.degrees(np.arctan2(-(ay - anatomy.lv_centre_px[1]), ax - anatomy.lv_centre_px[0])) % 360
            walk = segments[np.argsort((theta - anterior - 1.0) % 360)]
            runs = [int(s) for i, s in enumerate(walk) if i == 0 or s != walk[i - 1]]
            start = runs.index(expected[level][0])
            assert (runs[start:] + runs[:start])[: len(expected[level])] == expected[level]
            assert len(runs) in (len(expected[level]), len(expected[level]) + 1)
            for segment in present:  # each segment is one connected piece of wall
                assert anatomy.wall_thickness_mm[int(segment)] > 0


def test_geometry_orthonormal_and_position_consistent(studies):
    rng = np.random.default_rng(3)
    geometry = make_heart_geometry(rng)
    for level in SliceLevel:
        anatomy = make_slice_anatomy(rng, level, FieldStrength.T3, geometry=geometry)
        g = anatomy.geometry
        row, col = np.array(g.image_orientation_patient[:3]), np.array(g.image_orientation_patient[3:])
        assert np.linalg.norm(row) == pytest.approx(1, abs=1e-6) and np.linalg.norm(col) == pytest.approx(1, abs=1e-6)
        assert abs(row @ col) < 1e-6
        assert row[0] > 0  # image right is the patient's left
        x, y = anatomy.lv_centre_px
        centre = (
            np.array(g.image_position_patient_mm) + x * g.pixel_spacing_mm[1] * row + y * g.pixel_spacing_mm[0] * col
        )
        assert np.allclose(centre, geometry.slice_centre_mm(level), atol=1e-3)
    offsets = np.diff(geometry.level_offsets_mm)
    assert np.all(offsets > 10)


def test_truth_mask_matches_polygon_rasterisation(studies):
    anatomy = studies[0][SliceLevel.MID]
    shape = anatomy.label_map.shape
    mask = polygon2mask(shape, anatomy.epi_contour_px[:, ::-1]) & ~polygon2mask(shape, anatomy.endo_contour_px[:, ::-1])
    assert (mask != anatomy.myocardium_mask).sum() <= 2


def test_partial_volume_at_borders(studies):
    anatomy = studies[1][SliceLevel.MID]
    myocardium = anatomy.t1_ms[anatomy.label_map == Tissue.MYOCARDIUM]
    blood = anatomy.t1_ms[anatomy.label_map == Tissue.LV_BLOOD]
    mixed = ((myocardium > np.median(myocardium) + 50) & (myocardium < np.median(blood) - 50)).sum()
    assert mixed > 20  # border pixels mix myocardium and blood
    assert np.median(myocardium) == pytest.approx(np.median(anatomy.t1_ms[anatomy.aha_segment_map == 8]), rel=0.05)


def test_focal_pathology_raises_t1_only_in_its_segments():
    rng = np.random.default_rng(9)
    geometry = make_heart_geometry(rng)
    pathology = Pathology(PathologyKind.FOCAL_OEDEMA, (8, 9), 1.2, 1.4)
    anatomy = make_slice_anatomy(
        np.random.default_rng(4), SliceLevel.MID, FieldStrength.T1_5, geometry=geometry, pathology=pathology
    )
    normal = make_slice_anatomy(np.random.default_rng(4), SliceLevel.MID, FieldStrength.T1_5, geometry=geometry)
    for segment in range(7, 13):
        ratio = np.median(anatomy.t2_ms[anatomy.aha_segment_map == segment]) / np.median(
            normal.t2_ms[normal.aha_segment_map == segment]
        )
        assert (ratio > 1.25) if segment in (8, 9) else ratio == pytest.approx(1.0, abs=0.01)
    with pytest.raises(AnatomyError, match="segments"):
        make_slice_anatomy(rng, SliceLevel.APICAL, FieldStrength.T1_5, geometry=geometry, pathology=pathology)
