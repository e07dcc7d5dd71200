"""Image formation: noise level, motion, timing."""

import time

import numpy as np
import pytest

from phantom.acquisition import AcquisitionError, acquire
from phantom.anatomy import make_heart_geometry, make_slice_anatomy
from phantom.model import FieldStrength, FrameMotion, SequenceKind, SliceLevel
from phantom.motion import STILL
from phantom.schemes import make_scheme


@pytest.fixture(scope="module")
def anatomy():
    rng = np.random.default_rng(31)
    return make_slice_anatomy(
        rng,
        SliceLevel.MID,
        FieldStrength.T1_5,
        geometry=make_heart_geometry(rng),
        matrix=(256, 218),
        pixel_spacing_mm=1.4,
    )


def test_series_shapes_times_and_snr(anatomy):
    scheme = make_scheme(SequenceKind.MOLLI_533, 850.0, np.random.default_rng(2))
    series = acquire(anatomy, scheme, np.random.default_rng(3), snr=40.0)
    assert series.magnitude.shape == (8, 256, 218) and series.magnitude.dtype == np.float32
    assert series.phase_rad.min() >= -np.pi and series.phase_rad.max() < np.pi
    assert np.array_equal(series.inversion_times_ms, scheme.inversion_times_ms) and series.t2_prep_ms is None
    assert np.all(np.diff(series.acquisition_times_s) > 0.5)
    # Air outside the body holds noise only: Rayleigh with mean sigma * sqrt(pi / 2).
    air = anatomy.proton_density == 0
    assert series.magnitude[:, air].mean() == pytest.approx(series.noise_sigma * np.sqrt(np.pi / 2), rel=0.03)
    reference = int(np.argmax(series.inversion_times_ms))
    myocardium = series.magnitude[reference][anatomy.myocardium_mask].mean()
    assert myocardium / series.noise_sigma == pytest.approx(40.0, rel=0.1)
    assert not any(series.motion_labels.values())


def test_t2prep_series(anatomy):
    scheme = make_scheme(SequenceKind.T2PREP, 900.0, np.random.default_rng(4))
    series = acquire(anatomy, scheme, np.random.default_rng(5), snr=200.0)
    assert series.inversion_times_ms is None and list(series.t2_prep_ms) == [0.0, 25.0, 55.0]
    myocardium = series.magnitude[:, anatomy.myocardium_mask].mean(axis=1)
    assert myocardium[0] > myocardium[1] > myocardium[2]


def test_motion_displaces_only_the_moved_frame(anatomy):
    scheme = make_scheme(SequenceKind.MOLLI_533, 850.0, np.random.default_rng(2))
    moved = FrameMotion((0.0, 8.0), 0.0, 0.0)
    frames = [STILL] * 8
    frames[3] = moved
    still = acquire(anatomy, scheme, np.random.default_rng(3), snr=500.0)
    moving = acquire(anatomy, scheme, np.random.default_rng(3), snr=500.0, motion=frames)
    assert np.array_equal(still.magnitude[2], moving.magnitude[2])
    # The moved frame matches the still frame shifted down by 8 mm (rows) inside the heart.
    shift = int(round(8.0 / anatomy.geometry.pixel_spacing_mm[0]))
    x, y = (int(round(c)) for c in anatomy.lv_centre_px)
    window = (slice(y - 30, y + 30), slice(x - 30, x + 30))
    shifted_window = (slice(y - 30 + shift, y + 30 + shift), slice(x - 30, x + 30))
    error_shifted = np.abs(moving.magnitude[3][shifted_window] - still.magnitude[3][window]).mean()
    error_unshifted = np.abs(moving.magnitude[3][window] - still.magnitude[3][window]).mean()
    assert error_shifted < 0.35 * error_unshifted
    assert any(moving.motion_labels.values())
    with pytest.raises(AcquisitionError):
        acquire(anatomy, scheme, np.random.default_rng(3), snr=30.0, motion=frames[:5])


def test_acquire_is_fast_enough_for_study_generation():
    rng = np.random.default_rng(8)
    anatomy = make_slice_anatomy(rng, SliceLevel.BASAL, FieldStrength.T3, matrix=(288, 384), pixel_spacing_mm=1.2)
    scheme = make_scheme(SequenceKind.MOLLI_5S3S3S, 700.0, rng)  # the largest series: 14 images
    frames = [STILL] * scheme.n_images
    frames[2] = FrameMotion((2.0, 5.0), 3.0, 2.0)
    durations = []
    for _ in range(3):
        start = time.perf_counter()
        acquire(anatomy, scheme, rng, snr=30.0, motion=frames)
        durations.append(time.perf_counter() - start)
    assert min(durations) < 0.3
