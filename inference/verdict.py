"""The verdict of an analysis in the words a radiographer acts on: one line per slice, one per series."""

from __future__ import annotations

from collections.abc import Iterable

from inference.slice_analysis import SliceAnalysis

REPEAT_ADVICE = "consider repeating the breath-hold"
#: Said instead of values when the quality model doubts the automatic contours.
UNCERTAIN_CONTOURS = "automatic contours uncertain - check before use"


def motion_text(segments: Iterable[int]) -> str:
    """The warning for motion in AHA ``segments`` (numbers in order), or in the image when none is named."""
    numbers = sorted(set(segments))
    if numbers:
        return f"Motion artefact in {segment_list(numbers)} - {REPEAT_ADVICE}"
    return f"Motion artefact in the image - {REPEAT_ADVICE}"


def segment_list(segments: Iterable[int]) -> str:
    """AHA segments in words, in order: "segment 6", "segments 7, 10"; empty for none."""
    numbers = sorted(set(segments))
    if not numbers:
        return ""
    noun = "segment" if len(numbers) == 1 else "segments"
    return f"{noun} {', '.join(str(s) for s in numbers)}"


def banner_text(analysis: SliceAnalysis | None, failure_reason: str | None = None) -> str:
    """The one-line verdict of one slice, at the top of every console image.

    "Motion artefact in segments 1, 4, 5 - consider repeating the breath-hold" (AHA numbers in order),
    "No motion artefact detected", "No motion check (no raw images)" or "Analysis not possible: <reason>"; when the
    quality model doubts the contours, "; automatic contours uncertain - check before use" follows (the motion
    verdict comes first: it is what the radiographer can still act on while the patient is on the table).

    Raises
    ------
    ValueError
        If neither an analysis nor a failure reason is given.
    """
    if failure_reason is not None:
        return f"Analysis not possible: {failure_reason}"
    if analysis is None:
        raise ValueError("banner_text needs an analysis or a failure reason")
    verdict = _motion_verdict(analysis)
    return f"{verdict}; {UNCERTAIN_CONTOURS}" if analysis.segmentation_doubtful else verdict


def _motion_verdict(analysis: SliceAnalysis) -> str:
    motion = analysis.motion
    if motion is None:  # T1 and T2 maps alike are checked from their raw images (IR or T2-prep)
        return "No motion check (no raw images)"
    if motion.motion_segments or motion.has_motion:
        return motion_text(motion.motion_segments)
    return "No motion artefact detected"
