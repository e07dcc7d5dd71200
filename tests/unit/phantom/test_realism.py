"""Realism measures: known edges and noise, the Sunnybrook reference, and phantom v2 closer to it than v1.

Fixture (see shared/data/README.md): sunnybrook/, GE 1.5 T cine SSFP short-axis images of five heart-failure
patients with expert contours, from the Sunnybrook Cardiac Data (Radau et al., MICCAI 2009); CC0.
"""

import numpy as np
import pytest
from scipy import ndimage

from phantom.realism import (
    ImageRegions,
    RealismError,
    blood_texture,
    compare,
    edge_width_mm,
    measure,
    phantom_regions,
    summarise,
    sunnybrook_regions,
)
from phantom.study import SequenceChoice, StudyRequest, generate_studies

try:
    from tests.shared_data import SHARED_DATA

    SUNNYBROOK = SHARED_DATA / "sunnybrook"
except FileNotFoundError:  # pragma: no cover
    SUNNYBROOK = None

needs_data = pytest.mark.skipif(SUNNYBROOK is None or not (SUNNYBROOK / "link.csv").is_file(),
                                reason="shared/data/sunnybrook is not here")
TEXTURE = ("acf_lag1", "high_frequency_fraction")


def _ring_image(blur_sigma_px, spacing=1.0, size=160):
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(xx - size / 2, yy - size / 2)
    cavity = radius < 30
    myocardium = (radius >= 30) & (radius < 40)
    image = np.where(cavity, 1.0, np.where(myocardium, 0.4, 0.1))
    image = ndimage.gaussian_filter(image, blur_sigma_px)
    return ImageRegions("ring", image, (spacing, spacing), cavity, myocardium)


@pytest.mark.parametrize(("sigma_mm", "spacing"), [(0.8, 1.0), (1.0, 1.0), (1.2, 1.4), (1.5, 2.0)])
def test_edge_width_of_a_gaussian_blurred_step(sigma_mm, spacing):
    """Within 15 % for edges of about 2-4 mm (wider ones read short: the profiles' plateaus are 2.5-5 mm away)."""
    image = _ring_image(sigma_mm / spacing, spacing)
    expected_mm = 2.563 * sigma_mm  # 10-90 % of a Gaussian edge: 2 x 1.2816 sigma
    measured = edge_width_mm(image.pixels, image.cavity, image.pixel_spacing_mm)
    assert abs(measured - expected_mm) < 0.15 * expected_mm


def test_texture_of_white_and_interpolated_noise():
    rng = np.random.default_rng(0)
    image = _ring_image(0.5)
    white = image.pixels + rng.normal(0.0, 0.05, image.pixels.shape)
    acf, length, high = blood_texture(white, image.cavity, image.pixel_spacing_mm)
    assert abs(acf) < 0.1 and length < 0.7 and 0.65 < high < 0.85
    # Two-fold zero-filled k-space: correlated grain, little power in the upper half of the band.
    noise = rng.normal(0.0, 1.0, (80, 80)) + 1j * rng.normal(0.0, 1.0, (80, 80))
    spectrum = np.fft.fftshift(np.fft.fft2(noise))
    padded = np.zeros((160, 160), dtype=complex)
    padded[40:120, 40:120] = spectrum
    interpolated = np.real(np.fft.ifft2(np.fft.ifftshift(padded)))
    grain = image.pixels + 0.05 * interpolated / interpolated.std()
    acf, length, high = blood_texture(grain, image.cavity, image.pixel_spacing_mm)
    assert acf > 0.5 and length > 1.0 and high < 0.1


def test_measures_of_one_image_and_refusals():
    image = _ring_image(1.0)
    result = measure(image)
    assert abs(result.myocardium_contrast - 0.4) < 0.05
    assert result.cv_blood < 0.05 and set(result.values) == {"blood", "myocardium", "surroundings"}
    empty = ImageRegions("empty", image.pixels, (1.0, 1.0), np.zeros_like(image.cavity), None)
    with pytest.raises(RealismError, match="too small"):
        measure(empty)
    with pytest.raises(RealismError, match="no slice"):
        summarise("nothing", [empty])
    with pytest.raises(RealismError, match="image kind"):
        phantom_regions(".", image_kind="phase")


@needs_data
def test_sunnybrook_reference_measures():
    reference = summarise("Sunnybrook", sunnybrook_regions(SUNNYBROOK))
    assert reference.n_slices == 96 and reference.n_myocardium_slices == 37
    medians = reference.medians
    assert 0.2 < medians["myocardium_contrast"] < 0.5  # cine SSFP: dark myocardium, bright blood
    assert 2.0 < medians["edge_10_90_mm"] < 4.0
    assert 0.5 < medians["acf_lag1"] < 0.85 and medians["high_frequency_fraction"] < 0.3
    distances = compare(reference, [reference], "map").distances["Sunnybrook"]
    assert all(value == pytest.approx(0.0, abs=1e-12) for value in distances.values())


@pytest.fixture(scope="module")
def phantom_folders(tmp_path_factory):
    """Three studies of v1 and of v2 (basal and mid slices, MOLLI, truth only), from the same seed."""
    folders = {}
    for anatomy in ("v1", "v2"):
        folder = tmp_path_factory.mktemp(anatomy)
        request = StudyRequest(seed=0, anatomy=anatomy, n_slices=2, sequence=SequenceChoice.MOLLI,
                               with_experts=False, with_trainees=False)
        generate_studies(request, folder, n_studies=3, workers=1)
        folders[anatomy] = folder
    return folders


@needs_data
@pytest.mark.slow
def test_v2_is_closer_to_sunnybrook_than_v1_in_sharpness_and_texture(phantom_folders):
    """Measured (seed 0, 6 slices each): edge 10-90 % v1 2.06 mm, v2 3.18 mm, Sunnybrook 2.88 mm; autocorrelation
    at one pixel 0.52 / 0.67 / 0.70; high-frequency power fraction 0.30 / 0.15 / 0.16."""
    reference = summarise("Sunnybrook", sunnybrook_regions(SUNNYBROOK))
    v1 = summarise("v1", phantom_regions(phantom_folders["v1"]))
    v2 = summarise("v2", phantom_regions(phantom_folders["v2"]))
    assert v1.n_slices == v2.n_slices == 6

    def distance(summary, name):
        return abs(summary.medians[name] - reference.medians[name])

    assert distance(v2, "edge_10_90_mm") < 0.6 * distance(v1, "edge_10_90_mm")
    for name in TEXTURE:
        assert distance(v2, name) < 0.7 * distance(v1, name), name
    assert v2.medians["edge_10_90_mm"] > v1.medians["edge_10_90_mm"] + 0.5  # v1's borders are too sharp
    magnitude = summarise("v2", phantom_regions(phantom_folders["v2"], image_kind="magnitude"))
    assert magnitude.n_slices == 6 and magnitude.medians["edge_10_90_mm"] > v1.medians["edge_10_90_mm"]
