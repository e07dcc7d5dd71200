"""Phantom v2 image formation: k-space sampling and interpolation, Rician noise, misregistration, scanner maps."""


import numpy as np
import pytest
from scipy import ndimage

from phantom.acquisition import AcquisitionError
from phantom.acquisition_v2 import (
    RESIDUAL_TRANSLATION_SD_MM,
    KSpaceSampling,
    acquire_v2,
    noise_free_signal,
    sample_residual_misregistration,
    scanner_map,
)
from phantom.anatomy import make_heart_geometry
from phantom.anatomy_v2 import ImagingV2, choose_imaging, make_realistic_slice, make_study_shape
from phantom.dicom_images import encode_magnitude
from phantom.model import FieldStrength, FrameMotion, SequenceKind, SliceLevel, Tissue
from phantom.motion import STILL
from phantom.schemes import make_scheme
from phantom.tissue import sample_tissue_properties


def _slice(seed, imaging=None, field=FieldStrength.T3, level=SliceLevel.MID):
    rng = np.random.default_rng(seed)
    geometry = make_heart_geometry(rng)
    properties = sample_tissue_properties(rng, field)
    imaging = imaging or choose_imaging(rng)
    shape = make_study_shape(rng, geometry, field)
    return make_realistic_slice(rng, level, field, imaging=imaging, geometry=geometry, study_shape=shape,
                                properties=properties)


@pytest.fixture(scope="module")
def interpolated():
    """Two-fold interpolation, 75 % phase resolution down the columns, no raw-data filter."""
    return _slice(3, ImagingV2((192, 176), 1.2, (72, 88), "COL", "none"))


@pytest.fixture(scope="module")
def molli(interpolated):
    scheme = make_scheme(SequenceKind.MOLLI_533, 900.0, np.random.default_rng(1))
    return scheme, acquire_v2(interpolated, scheme, np.random.default_rng(2), snr=40.0, b1_scale=0.9)


def test_only_the_acquired_part_of_k_space_holds_signal(molli, interpolated):
    _, series = molli
    images = series.magnitude * np.exp(1j * series.phase_rad)
    power = np.abs(np.fft.fft2(images, axes=(-2, -1))) ** 2
    window = KSpaceSampling.of(interpolated).window > 0
    outside = power[:, ~window].sum() / power.sum()
    assert outside < 1e-6


def test_noise_is_rician_with_the_stated_sigma_and_correlated_by_interpolation(molli, interpolated):
    scheme, _ = molli
    # At SNR 2 the noise swamps the ringing that the truncated k-space spreads from the body into the air.
    series = acquire_v2(interpolated, scheme, np.random.default_rng(5), snr=2.0)
    air = ndimage.binary_erosion(interpolated.anatomy.label_map == Tissue.BACKGROUND, iterations=6)
    assert air.sum() > 500
    values = series.magnitude[:, air]
    # Rayleigh in air: mean sigma sqrt(pi / 2).
    assert abs(values.mean() / (series.noise_sigma * np.sqrt(np.pi / 2)) - 1.0) < 0.1
    # Two-fold zero-filling correlates neighbours strongly; the phase-encoding direction (rows) more so.
    image = series.magnitude[0]
    pairs_x = air[:, 1:] & air[:, :-1]
    pairs_y = air[1:, :] & air[:-1, :]
    corr_x = np.corrcoef(image[:, 1:][pairs_x], image[:, :-1][pairs_x])[0, 1]
    corr_y = np.corrcoef(image[1:, :][pairs_y], image[:-1, :][pairs_y])[0, 1]
    assert corr_x > 0.3 and corr_y > corr_x


def test_snr_refers_to_the_noise_free_myocardium(interpolated):
    scheme = make_scheme(SequenceKind.MOLLI_533, 900.0, np.random.default_rng(1))
    quiet = acquire_v2(interpolated, scheme, np.random.default_rng(4), snr=1000.0)
    reference = int(np.argmax(scheme.inversion_times_ms))
    level = quiet.magnitude[reference][interpolated.anatomy.myocardium_mask].mean()
    assert abs(level / quiet.noise_sigma / 1000.0 - 1.0) < 0.02
    with pytest.raises(AcquisitionError, match="snr"):
        acquire_v2(interpolated, scheme, np.random.default_rng(4), snr=0.5)
    with pytest.raises(AcquisitionError, match="one frame per image"):
        acquire_v2(interpolated, scheme, np.random.default_rng(4), snr=40.0, motion=[STILL])


def test_partial_volume_mixes_signals_not_relaxation_times(interpolated):
    """A pixel half blood, half myocardium holds the sum of both signals (the fit later reads neither)."""
    scheme = make_scheme(SequenceKind.MOLLI_533, 900.0, np.random.default_rng(1))
    clean = noise_free_signal(interpolated, scheme)
    fractions = interpolated.fractions
    from phantom.anatomy_v2 import Structure

    mixed = (fractions[Structure.MYOCARDIUM] > 0.3) & (fractions[Structure.LV_BLOOD] > 0.3)
    assert mixed.any()
    assert np.isfinite(clean).all() and clean.shape == (scheme.n_images, *fractions.shape[1:])


def test_every_still_frame_keeps_a_small_residual_misregistration():
    rng = np.random.default_rng(6)
    breathing = FrameMotion((1.0, 5.0), 2.0, 1.5)
    frames = sample_residual_misregistration(rng, [STILL, breathing, STILL, STILL, STILL])
    assert frames[1] == breathing
    residual = [frame for index, frame in enumerate(frames) if index != 1]
    assert not any(frame.is_still for frame in residual)
    for frame in residual:
        assert np.hypot(*frame.translation_mm) < 5 * RESIDUAL_TRANSLATION_SD_MM[1]
        assert abs(frame.rotation_deg) < 2.0 and frame.deformation_mm <= 1.0


def test_residual_misregistration_alone_labels_no_segment(molli):
    _, series = molli
    assert not any(frame.is_still for frame in series.frame_motion)
    assert not any(series.motion_labels.values())


def test_scanner_map_fits_noise_into_salt_and_pepper(molli, interpolated):
    scheme, series = molli
    stored = encode_magnitude(series.magnitude).astype(np.float64)
    fitted = scanner_map(stored, series.inversion_times_ms, scheme.kind, rr_ms=900.0)
    labels = interpolated.anatomy.label_map
    air = labels == Tissue.BACKGROUND
    q10, q90 = np.percentile(fitted.map_ms[air], [10, 90])
    assert q90 - q10 > 800.0  # noise over a wide range of T1
    assert fitted.map_ms.min() >= 0.0 and fitted.map_ms.max() <= 4000.0
    myocardium = interpolated.anatomy.myocardium_mask
    blood = ndimage.binary_erosion(labels == Tissue.LV_BLOOD, iterations=2)
    # 3 T native MOLLI as in vivo: myocardium about 1250 ms, blood about 1900 ms.
    assert 1100.0 < np.median(fitted.map_ms[myocardium]) < 1400.0
    assert 1650.0 < np.median(fitted.map_ms[blood]) < 2050.0
    region = np.zeros(air.shape, dtype=bool)
    region[40:100, 50:110] = True
    cropped = scanner_map(stored, series.inversion_times_ms, scheme.kind, rr_ms=900.0, region=region)
    np.testing.assert_allclose(cropped.map_ms[region], fitted.map_ms[region])
    assert not cropped.map_ms[~region].any()


@pytest.mark.parametrize("kind", [SequenceKind.SHMOLLI, SequenceKind.T2PREP])
def test_other_sequences_form_and_fit(interpolated, kind):
    scheme = make_scheme(kind, 800.0, np.random.default_rng(1))
    series = acquire_v2(interpolated, scheme, np.random.default_rng(2), snr=50.0)
    stored = encode_magnitude(series.magnitude).astype(np.float64)
    times = series.inversion_times_ms if series.inversion_times_ms is not None else series.t2_prep_ms
    index = np.asarray(scheme.image_set_index) if kind is SequenceKind.SHMOLLI else None
    fitted = scanner_map(stored, times, kind, rr_ms=800.0, inversion_index=index)
    value = np.median(fitted.map_ms[interpolated.anatomy.myocardium_mask])
    assert (30.0 < value < 70.0) if kind is SequenceKind.T2PREP else (1000.0 < value < 1450.0)
