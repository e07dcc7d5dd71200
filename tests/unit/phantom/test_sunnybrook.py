"""The phantom's own Sunnybrook reader: point lists, images with contours, canonical orientation, shape templates.

Fixture (see shared/data/README.md): sunnybrook/ holds GE 1.5 T cine short-axis images of five heart-failure
patients with expert endocardial (i) contours, about half of them also epicardial (o) ones, from the Sunnybrook
Cardiac Data (Radau et al., MICCAI 2009 LV segmentation challenge); CC0.
"""

import numpy as np
import pytest

from phantom.sunnybrook import (
    DISPLACED_EPICARDIUM,
    TEMPLATE_ANGLES_DEG,
    SunnybrookError,
    canonical_axes,
    load_sunnybrook,
    parse_point_list,
    polar_radii,
    shape_module_text,
    shape_templates,
    shipped_templates,
)

SUNNYBROOK = None
try:
    from tests.shared_data import SHARED_DATA

    SUNNYBROOK = SHARED_DATA / "sunnybrook"
except FileNotFoundError:  # pragma: no cover - the fixture folder is beside the checkout in this project
    pass

needs_data = pytest.mark.skipif(SUNNYBROOK is None or not (SUNNYBROOK / "link.csv").is_file(),
                                reason="shared/data/sunnybrook is not here")


@pytest.fixture(scope="module")
def slices():
    return load_sunnybrook(SUNNYBROOK)


def test_point_list_parsing_rules():
    points = parse_point_list("# header\n1 2\n\n3,4\n5\t6\n")
    np.testing.assert_array_equal(points, [[1, 2], [3, 4], [5, 6]])
    with pytest.raises(SunnybrookError, match="line 2"):
        parse_point_list("1 2\n3 4 5\n6 7\n")
    with pytest.raises(SunnybrookError, match="at least 3"):
        parse_point_list("1 2\n3 4\n")


def test_polar_radii_of_a_circle_and_of_a_contour_around_another_point():
    angles = np.radians(np.arange(0, 360, 3))
    circle = np.stack([10 * np.cos(angles), -10 * np.sin(angles)], axis=1)
    np.testing.assert_allclose(polar_radii(circle, TEMPLATE_ANGLES_DEG), 10.0, atol=0.02)
    with pytest.raises(SunnybrookError, match="surround"):
        polar_radii(circle + [30.0, 0.0], TEMPLATE_ANGLES_DEG)


def test_canonical_axes_are_a_rotation_or_a_flip():
    for orientation in [(1, 0, 0, 0, 1, 0), (-0.105, 0.346, -0.932, -0.733, -0.66, -0.163),
                        (0.712, 0.701, -0.034, -0.308, 0.268, -0.913)]:
        axes = canonical_axes(orientation)
        np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-9)


@needs_data
def test_every_contoured_image_is_read_with_its_contours(slices):
    assert len(slices) == 96
    assert {image.patient for image in slices} == {"SC-HF-I-1", "SC-HF-I-2", "SC-HF-I-4", "SC-HF-I-5", "SC-HF-I-6"}
    assert sum(image.has_epicardium for image in slices) == 37  # 46 drawn, SC-HF-I-6's 9 unusable
    assert sum(image.diastolic for image in slices) == 46
    assert not any(image.has_epicardium for image in slices if image.patient in DISPLACED_EPICARDIUM)
    for image in slices:
        assert image.pixels.shape == (256, 256) and 1.2 < image.pixel_spacing_mm[0] < 1.45
        assert image.endo_px.shape[1] == 2 and len(image.endo_px) > 20


@needs_data
def test_templates_put_the_rv_on_the_septal_side(slices):
    """In the phantom's orientation the RV (bright blood) lies around 180 deg, outside the LV's septum."""
    from phantom.sunnybrook import polygon_centroid

    sides = []
    for image in slices:
        if not image.has_epicardium:
            continue
        centre = polygon_centroid(image.endo_px)
        axes = canonical_axes(image.image_orientation_patient)
        radius = float(polar_radii(
            (image.endo_px - centre) * image.pixel_spacing_mm[::-1] @ axes.T, TEMPLATE_ANGLES_DEG).mean())

        def mean_beyond(angle_deg, centre=centre, axes=axes, image=image, radius=radius):
            rad = np.radians(angle_deg)
            u, v = (radius + 18.0) * np.cos(rad), -(radius + 18.0) * np.sin(rad)
            offset_mm = np.array([u, v]) @ axes  # back to (row, column) mm
            x, y = centre + offset_mm / np.array(image.pixel_spacing_mm[::-1])
            return float(image.pixels[int(round(y)), int(round(x))])

        septal = np.mean([mean_beyond(a) for a in (160, 180, 200)])
        lateral = np.mean([mean_beyond(a) for a in (-20, 0, 20)])
        sides.append(septal > lateral)
    assert np.mean(sides) > 0.75


@needs_data
def test_shipped_templates_are_those_of_the_data(slices):
    derived = shape_templates(slices)
    shipped = shipped_templates()
    assert [(t.patient, t.instance_number, t.diastolic) for t in derived] == \
        [(t.patient, t.instance_number, t.diastolic) for t in shipped]
    for mine, theirs in zip(derived, shipped, strict=True):
        np.testing.assert_allclose(mine.endo_mm, theirs.endo_mm, atol=0.051)
        assert (mine.epi_mm is None) == (theirs.epi_mm is None)
        if mine.epi_mm is not None:
            assert np.all(mine.epi_mm >= mine.endo_mm + 1.0 - 1e-9)
    assert "do not edit by hand" in shape_module_text(derived[:1])
    # Base to apex: the cavities shrink.
    for patient in {t.patient for t in derived}:
        own = [t for t in derived if t.patient == patient and t.diastolic]
        basal = np.mean([t.endo_mm.mean() for t in own if t.position < 0.4])
        apical = np.mean([t.endo_mm.mean() for t in own if t.position > 0.6])
        assert apical < basal


def test_a_folder_without_link_csv_is_refused(tmp_path):
    with pytest.raises(SunnybrookError, match="link.csv"):
        load_sunnybrook(tmp_path)
