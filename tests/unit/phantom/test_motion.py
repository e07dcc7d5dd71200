"""Breathing motion: sampling, displacement fields and the segment motion rule."""

import numpy as np
import pytest

from phantom.anatomy import contour_segments, make_slice_anatomy
from phantom.model import FieldStrength, FrameMotion, SliceLevel
from phantom.motion import MotionError, displacement_field, motion_labels, sample_breathing


@pytest.fixture(scope="module")
def anatomy():
    return make_slice_anatomy(np.random.default_rng(21), SliceLevel.MID, FieldStrength.T1_5)


def test_sample_breathing_still_or_one_to_three_frames():
    rng = np.random.default_rng(1)
    assert all(f.is_still for f in sample_breathing(rng, 8, motion_probability=0.0))
    for _ in range(50):
        frames = sample_breathing(rng, 8, motion_probability=1.0)
        moved = [f for f in frames if not f.is_still]
        assert len(frames) == 8 and 1 <= len(moved) <= 3
        for f in moved:
            assert 1.0 <= np.hypot(*f.translation_mm) <= 7.0 and abs(f.rotation_deg) <= 6.0
    with pytest.raises(MotionError):
        sample_breathing(rng, 8, motion_probability=1.5)


def test_displacement_field_translation_and_rotation(anatomy):
    spacing = anatomy.geometry.pixel_spacing_mm[0]
    field = displacement_field(FrameMotion((3.0, -2.0), 0.0, 0.0), anatomy.geometry, centre_px=anatomy.lv_centre_px)
    assert field.shape == (2, *anatomy.label_map.shape)
    assert np.allclose(field[0], 3.0 / spacing) and np.allclose(field[1], -2.0 / spacing)
    cx, cy = anatomy.lv_centre_px
    rotated = displacement_field(FrameMotion((0.0, 0.0), 10.0, 0.0), anatomy.geometry, centre_px=(round(cx), round(cy)))
    assert np.allclose(rotated[:, round(cy), round(cx)], 0.0)
    # A point 20 px to the right of the centre moves by 2 * 20 * sin(5 deg) px.
    assert np.hypot(*rotated[:, round(cy), round(cx) + 20]) == pytest.approx(40 * np.sin(np.radians(5)), rel=1e-6)


def test_motion_labels_follow_the_rule(anatomy):
    assert not any(motion_labels(anatomy, [FrameMotion((0.0, 0.0), 0.0, 0.0)] * 4).values())
    thickness = anatomy.wall_thickness_mm
    # Pure translation: every border point moves by the same distance, so the rule compares it with 0.5 x wall.
    for distance in np.linspace(2.0, 8.0, 7):
        frames = [FrameMotion((0.0, 0.0), 0.0, 0.0), FrameMotion((0.0, float(distance)), 0.0, 0.0)]
        labels = motion_labels(anatomy, frames)
        assert labels == {s: distance > 0.5 * t for s, t in thickness.items()}
    # Rotation about the LV centre moves each border point by 2 r sin(angle / 2): check against that directly.
    angle = 12.0
    labels = motion_labels(anatomy, [FrameMotion((0.0, 0.0), angle, 0.0)])
    spacing = anatomy.geometry.pixel_spacing_mm[0]
    for contour_set in ((anatomy.endo_contour_px, anatomy.epi_contour_px),):
        points = np.concatenate(contour_set)
        segments = np.concatenate([contour_segments(anatomy, c) for c in contour_set])
        radius_mm = np.hypot(*(points - np.array(anatomy.lv_centre_px)).T) * spacing
        moved = 2 * radius_mm * np.sin(np.radians(angle / 2))
        expected = {s: moved[segments == s].mean() > 0.5 * thickness[s] for s in thickness}
        assert labels == expected
