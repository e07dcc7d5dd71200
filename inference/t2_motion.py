"""Motion check of T2 maps from the fit quality of their T2-prep images.

A T2-prep series has three or four images, too few for the T1 motion model's image streams, but enough to show
motion: where the heart moves between them, pixels at the moving borders mix tissues across the images and the
two-parameter fit explains them poorly. The score of an AHA segment is its misfit ``1 - median R2`` over the
segment's pixels, turned into a probability of motion by a logistic curve and judged at a threshold that keeps
false banners rare. Both come from the phantom (``python -m training.t2_motion``): the curve fitted on the T2 cases
of the v1 and v2 training sets, the threshold the lowest with an image-level specificity of 0.95 on the even
validation studies. On the odd ones (90 slices, 30 with motion; phantom, not patients) it reached an image-level
AUC of 0.96, specificity 0.92 and sensitivity 0.80, but a per-segment AUC of only 0.87: it finds that a slice
moved better than where. Scanner T2 maps without their T2-prep images get no check.
"""

from __future__ import annotations

import numpy as np

from inference.motion import MotionResult

#: P(motion) = 1 / (1 + exp(-(INTERCEPT + SLOPE * misfit))), misfit = 1 - median R2 of the segment.
INTERCEPT = -2.6887
SLOPE = 8.6051
THRESHOLD = 0.291
MIN_SEGMENT_PIXELS = 5


def motion_probability(misfit: float) -> float:
    return float(1.0 / (1.0 + np.exp(-(INTERCEPT + SLOPE * misfit))))


def detect_t2_motion(r2: np.ndarray, aha_segment_map: np.ndarray) -> MotionResult:
    """Motion probability per AHA segment (segments with at least :data:`MIN_SEGMENT_PIXELS` pixels) from the T2
    fit's R2 (0..1, same pixels as the map); the whole image takes its most likely segment. The attention map of a
    segment is its pixels' misfit, so the console shows where the fit failed."""
    r2 = np.nan_to_num(np.asarray(r2, dtype=np.float32))
    segments = np.asarray(aha_segment_map)
    probabilities: dict[int, float] = {}
    attention: dict[int, np.ndarray] = {}
    for segment in (int(s) for s in np.unique(segments) if s > 0):
        inside = segments == segment
        if inside.sum() < MIN_SEGMENT_PIXELS:
            continue
        probabilities[segment] = motion_probability(1.0 - float(np.median(r2[inside])))
        attention[segment] = np.where(inside, np.clip(1.0 - r2, 0.0, 1.0), 0.0).astype(np.float32)
    whole = max(probabilities.values(), default=0.0)
    return MotionResult(segment_probabilities=probabilities, whole_image_probability=whole,
                        attention_maps=attention, threshold=THRESHOLD)
