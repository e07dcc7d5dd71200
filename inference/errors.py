"""Errors raised by the analysis code.

Every message names the offending value and what was expected, so that the caller can log it as it stands.
"""

from __future__ import annotations


class AnalysisError(ValueError):
    """Root of the errors raised by ``inference``: the input cannot be analysed as given."""


class ShapeMismatchError(AnalysisError):
    """Arrays that must agree in shape do not (images and their timings, maps and their sources)."""


class TimingError(AnalysisError):
    """Inversion times, preparation times or the RR interval are missing, not finite or out of range."""


class SignalError(AnalysisError):
    """Image values cannot be magnitude data (negative values, too few images)."""


class UnknownSchemeError(AnalysisError):
    """The mapping scheme is not one the reconstruction knows."""
