"""Plain-text point lists ("x y" per line, pixel coordinates), including the Sunnybrook Cardiac Data layout.

Sunnybrook contour files are named ``IM-0001-NNNN-{i,o}contour-{manual,auto}.txt``: NNNN is the Instance Number
of the image they were drawn on, ``i`` the endocardium (the cavity) and ``o`` the epicardium.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.io.contours.errors import ContourFormatError, UnresolvedReferenceError
from dicomnode.io.contours.model import ContourSet, ImageGeometry, Structure

LOGGER = logging.getLogger(__name__)

SUNNYBROOK_NAME = re.compile(r"IM-(?P<series>\d+)-(?P<instance>\d+)-(?P<border>[io])contour-(?:manual|auto)\.txt$")
SUNNYBROOK_BORDERS = {"i": Structure.CAVITY, "o": Structure.EPICARDIUM}


def parse_point_list(text: str) -> np.ndarray:
    """(N, 2) float (x, y) points from "x y" lines (spaces, tabs or a comma between); blank and # lines skipped.

    Raises
    ------
    ContourFormatError
        If a line does not hold two numbers or fewer than three points remain.
    """
    points = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.replace(",", " ").split()
        try:
            if len(fields) != 2:
                raise ValueError(len(fields))
            points.append((float(fields[0]), float(fields[1])))
        except ValueError:
            raise ContourFormatError(f"line {number} {stripped!r} is not two numbers 'x y'") from None
    if len(points) < 3:
        raise ContourFormatError(f"a closed contour needs at least 3 points, got {len(points)}")
    return np.asarray(points, dtype=np.float64)


def read_point_list(path: Path | str) -> np.ndarray:
    """(N, 2) (x, y) pixel points of a point-list file; raises as :func:`parse_point_list`."""
    return parse_point_list(Path(path).read_text(encoding="ascii", errors="replace"))


def contour_set_from_point_lists(
    point_lists: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
    geometries: Sequence[ImageGeometry],
    *,
    reader: str,
    source_format: str = "point list",
) -> ContourSet:
    """A :class:`ContourSet` from ``point_lists[label][sop_instance_uid]`` = polygons of (x, y) pixel points.

    Raises
    ------
    UnresolvedReferenceError
        If a SOP Instance UID is not among ``geometries``.
    """
    shapes = {geometry.sop_instance_uid: geometry.shape for geometry in geometries}
    missing = {uid for by_image in point_lists.values() for uid in by_image if uid not in shapes}
    if missing:
        frames = {g.frame_of_reference_uid for g in geometries if g.frame_of_reference_uid}
        raise UnresolvedReferenceError(missing, next(iter(frames)) if len(frames) == 1 else None)
    contours = {label: {uid: tuple(np.asarray(p, dtype=np.float64) for p in polygons)
                        for uid, polygons in by_image.items()}
                for label, by_image in point_lists.items()}
    used = {uid: shapes[uid] for by_image in contours.values() for uid in by_image}
    return ContourSet(reader=reader, contours=contours, source_format=source_format, shapes=used)


def read_sunnybrook(contour_paths: Iterable[Path], images: Sequence[Dataset], *, reader: str) -> ContourSet:
    """Sunnybrook i/o contour files placed on the images whose InstanceNumber their names give.

    Raises
    ------
    ContourFormatError
        If a file name does not follow the Sunnybrook pattern.
    UnresolvedReferenceError
        If no image has the Instance Number a file names.
    """
    by_instance = {int(ds.InstanceNumber): ImageGeometry.from_dataset(ds) for ds in images}
    point_lists: dict[str, dict[str, list[np.ndarray]]] = {}
    missing = []
    for path in contour_paths:
        match = SUNNYBROOK_NAME.search(Path(path).name)
        if match is None:
            raise ContourFormatError(f"{Path(path).name} does not match {SUNNYBROOK_NAME.pattern}")
        instance = int(match["instance"])
        if instance not in by_instance:
            missing.append(f"Instance Number {instance}")
            continue
        label = SUNNYBROOK_BORDERS[match["border"]].value
        uid = by_instance[instance].sop_instance_uid
        point_lists.setdefault(label, {}).setdefault(uid, []).append(read_point_list(path))
    if missing:
        raise UnresolvedReferenceError(missing, None, f"images known: Instance Numbers {sorted(by_instance)}")
    return contour_set_from_point_lists(point_lists, list(by_instance.values()), reader=reader,
                                        source_format="Sunnybrook point list")
