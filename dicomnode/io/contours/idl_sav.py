"""Contours saved by IDL-based T1 analysis tools (IDL SAVE files) as pixel point contours.

Accepted variables, compared case-insensitively (IDL upper-cases names), for each border name that
:func:`~dicomnode.io.contours.model.structure_label` maps to a structure (``endo``, ``epi``, ``endocardium``,
``epicardium``, ``lv_endo`` ...):

- a pair of 1-D arrays ``<border>_x`` / ``<border>_y``, ``<border>x`` / ``<border>y`` or ``x_<border>`` /
  ``y_<border>``;
- one array ``<border>`` of shape (N, 2) or (2, N);
- any of the above as fields of a structure (``roi.endo_x``), or a structure ``<border>`` with fields ``x``, ``y``.

Points are (x = column, y = row) pixel coordinates of the image the file belongs to; non-finite points are dropped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import readsav

from dicomnode.io.contours.errors import ContourFormatError
from dicomnode.io.contours.model import ContourSet, ImageGeometry, Structure, structure_label

LOGGER = logging.getLogger(__name__)

_STRUCTURES = {structure.value for structure in Structure}
_SUFFIX_AXIS = re.compile(r"^(?P<border>.+?)_?(?P<axis>[xy])$")
_PREFIX_AXIS = re.compile(r"^(?P<axis>[xy])_?(?P<border>.+)$")


def _border(name: str) -> str | None:
    label = structure_label(name.replace("_", " "))
    return label if label in _STRUCTURES else None


def _leaves(name: str, value: Any) -> Iterator[tuple[str, str, Any]]:
    """(parent name, own name, value) of every non-structure value, descending into structures."""
    if isinstance(value, np.recarray | np.record) or (
            isinstance(value, np.ndarray) and value.dtype.names is not None):
        record = value.ravel()[0] if isinstance(value, np.ndarray) else value
        fields = record.dtype.names
        if fields is None:  # a record array of a plain dtype (readsav makes none): say so, not fail on None
            raise ContourFormatError(f"structure {name} has no fields; expected named fields")
        for field in fields:
            for _, own, leaf in _leaves(field.lower(), record[field]):
                yield (name if own == field.lower() else field.lower()), own, leaf
        return
    yield "", name.lower(), value


def _vector(value: Any, where: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64).squeeze()
    if array.ndim != 1:
        raise ContourFormatError(f"{where} has shape {array.shape}; expected a 1-D array of coordinates")
    return array


def sav_contours(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Border label -> (N, 2) (x, y) points from the variables :func:`scipy.io.readsav` returns.

    Raises
    ------
    ContourFormatError
        If x and y of a border differ in length, an array has an unexpected shape, or no border is found.
    """
    axes: dict[str, dict[str, np.ndarray]] = {}
    points: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        for parent, own, leaf in _leaves(name, value):
            where = f"{parent}.{own}" if parent else own
            if own in ("x", "y") and parent and _border(parent):
                axes.setdefault(_border(parent), {})[own] = _vector(leaf, where)  # type: ignore[arg-type]
                continue
            match = _SUFFIX_AXIS.match(own) or _PREFIX_AXIS.match(own)
            if match and _border(match["border"]):
                axes.setdefault(_border(match["border"]), {})[match["axis"]] = _vector(leaf, where)  # type: ignore[arg-type]
                continue
            if _border(own) and isinstance(leaf, np.ndarray) and leaf.dtype.names is None:
                array = np.asarray(leaf, dtype=np.float64).squeeze()
                if array.ndim == 2 and 2 in array.shape:
                    points[_border(own)] = array if array.shape[1] == 2 else array.T  # type: ignore[index]
    for border, pair in axes.items():
        if set(pair) != {"x", "y"}:
            raise ContourFormatError(f"border {border} has only {sorted(pair)}; expected both x and y")
        if pair["x"].shape != pair["y"].shape:
            raise ContourFormatError(f"border {border} has {pair['x'].size} x and {pair['y'].size} y values; "
                                     "expected equal")
        points[border] = np.stack([pair["x"], pair["y"]], axis=1)
    if not points:
        raise ContourFormatError(f"no contour variables among {sorted(variables)}; expected e.g. endo_x/endo_y")
    return {border: array[np.all(np.isfinite(array), axis=1)] for border, array in points.items()}


def read_idl_sav(path: Path | str, geometry: ImageGeometry, *, reader: str) -> ContourSet:
    """Contours of an IDL SAVE file drawn on the image ``geometry`` describes.

    Raises
    ------
    ContourFormatError
        If the file is not an IDL SAVE file or holds no accepted contour variables.
    """
    try:
        variables = readsav(str(path), verbose=False)
    except Exception as error:  # scipy raises bare Exception for a bad signature or record
        raise ContourFormatError(f"{Path(path).name} is not a readable IDL SAVE file: {error}") from error
    contours: dict[str, dict[str, tuple[np.ndarray, ...]]] = {
        label: {geometry.sop_instance_uid: (points,)} for label, points in sav_contours(variables).items()
    }
    LOGGER.debug("IDL SAVE %s: borders %s", Path(path).name, sorted(contours))
    return ContourSet(reader=reader, contours=contours, source_format="IDL SAVE",
                      shapes={geometry.sop_instance_uid: geometry.shape})
