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


def _normals(contour):
    tangent = np.roll(contour, -1, axis=0) - np.roll(contour, 1, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    return normal / np.hypot(*normal.T)[:, None]


def test_motion_labels_follow_the_rule(anatomy):
    assert not any(motion_labels(anatomy, [FrameMotion((0.0, 0.0), 0.0, 0.0)] * 4).values())
    thickness = anatomy.wall_thickness_mm
    contours = (anatomy.endo_contour_px, anatomy.epi_contour_px)
    normals = np.concatenate([_normals(c) for c in contours])
    segments = np.concatenate([contour_segments(anatomy, c) for c in contours])
    # Pure translation d: each border point moves across the border by |d . n|; the rule compares the segment's
    # mean of that with 0.5 x wall.
    for distance in np.linspace(2.0, 12.0, 6):
        frames = [FrameMotion((0.0, 0.0), 0.0, 0.0), FrameMotion((0.0, float(distance)), 0.0, 0.0)]
        labels = motion_labels(anatomy, frames)
        across = np.abs(distance * normals[:, 1])
        assert labels == {s: across[segments == s].mean() > 0.5 * t for s, t in thickness.items()}
    # The segments facing the shift are spoiled first; a border sliding along itself is not.
    labels = motion_labels(anatomy, [FrameMotion((0.0, 8.0), 0.0, 0.0)])
    facing = {s: np.abs(normals[segments == s, 1]).mean() for s in thickness}
    assert any(labels.values()) and not all(labels.values())
    spoiled = [facing[s] for s, flag in labels.items() if flag]
    spared = [facing[s] for s, flag in labels.items() if not flag]
    assert min(spoiled) > max(spared)
    # Rotation about the LV centre: each border point moves along the chord 2 r sin(angle / 2).
    angle = 12.0
    labels = motion_labels(anatomy, [FrameMotion((0.0, 0.0), angle, 0.0)])
    spacing = anatomy.geometry.pixel_spacing_mm[0]
    points = np.concatenate(contours)
    offset = (points - np.array(anatomy.lv_centre_px)) * spacing
    chord = 2 * np.sin(np.radians(angle / 2))
    # Moving by the chord of the rotation: direction at angle/2 past the tangent.
    tangent_dir = np.stack([-offset[:, 1], offset[:, 0]], axis=1) / np.hypot(*offset.T)[:, None]
    radial_dir = offset / np.hypot(*offset.T)[:, None]
    half = np.radians(angle / 2)
    move = chord * np.hypot(*offset.T)[:, None] * (np.cos(half) * tangent_dir - np.sin(half) * radial_dir)
    across = np.abs((move * normals).sum(axis=1))
    expected = {s: across[segments == s].mean() > 0.5 * thickness[s] for s in thickness}
    assert labels == expected
