"""The fit of one slice's map from its raw images, with the acquisition inferred from the series (as the map job
and the offline analysis both fit)."""

from __future__ import annotations

from dicomnode.io.acquisition import inversion_index, mapping_scheme, rr_interval_ms
from dicomnode.io.series_loader import LoadedSeries, SliceStack
from dicomnode.io.t1_protocol import t1_protocol
from inference.mapping import MappingResult, MappingScheme, T1Correction, reconstruct_map


def fit_slice(loaded: LoadedSeries, stack: SliceStack, *,
              correction: T1Correction | str = T1Correction.BLOCH) -> MappingResult:
    """Fit the map of one slice, with the scheme, RR interval and protocol inferred from the series."""
    scheme = mapping_scheme(loaded, stack)
    rr_ms = rr_interval_ms(loaded, stack) if scheme is not MappingScheme.T2PREP else None
    return reconstruct_map(
        stack.images,
        stack.times_ms,
        scheme,
        rr_ms=rr_ms if scheme is MappingScheme.SHMOLLI else None,
        inversion_index=inversion_index(stack) if scheme is MappingScheme.SHMOLLI else None,
        protocol=t1_protocol(stack, loaded, scheme, rr_ms),
        correction=correction,
    )
