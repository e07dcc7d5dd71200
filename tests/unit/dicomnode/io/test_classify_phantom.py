"""classify() over every series the phantom writes, for each vendor convention it imitates."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from db.models import SeriesRole
from dicomnode.io.classify import classify

study = pytest.importorskip("phantom.study")
model = pytest.importorskip("phantom.model")

# Folder name suffixes the phantom writes (``<nnn>_<sequence>_<kind>`` or ``<reader>_<kind>``).
EXPECTED = {
    ("molli533", "magnitude"): SeriesRole.RAW_IR,
    ("molli533", "phase"): SeriesRole.RAW_IR_PHASE,
    ("molli533", "moco"): SeriesRole.MOCO,
    ("molli533", "map"): SeriesRole.T1_MAP,
    ("shmolli", "magnitude"): SeriesRole.RAW_IR,
    ("shmolli", "phase"): SeriesRole.RAW_IR_PHASE,
    ("shmolli", "moco"): SeriesRole.MOCO,
    ("shmolli", "map"): SeriesRole.T1_MAP,
    ("t2prep", "magnitude"): SeriesRole.T2_PREP,
    ("t2prep", "phase"): SeriesRole.T2_PREP_PHASE,
    ("t2prep", "moco"): SeriesRole.MOCO,
    ("t2prep", "map"): SeriesRole.T2_MAP,
}
BY_KIND = {"fit_quality": SeriesRole.FIT_QUALITY, "seg": SeriesRole.SEG, "rtstruct": SeriesRole.RTSTRUCT}


def _expected(folder: str) -> SeriesRole:
    parts = folder.split("_")
    kind = "_".join(parts[-2:]) if folder.endswith("fit_quality") else parts[-1]
    if kind in BY_KIND:
        return BY_KIND[kind]
    return EXPECTED[(parts[1], kind)]


@pytest.mark.slow
@pytest.mark.parametrize("vendor", ["SIEMENS", "PHILIPS", "GE", "ENHANCED"])
def test_every_phantom_series_gets_its_role(vendor: str, tmp_path: Path) -> None:
    request = study.StudyRequest(seed=11, vendor=model.Vendor[vendor], n_slices=1)
    outcome = study.generate_study(study.plan_study(request, 0), tmp_path)
    files = sorted(outcome.folder.rglob("*.dcm"))
    assert files
    wrong = {}
    for path in files:
        role = classify(pydicom.dcmread(path, stop_before_pixels=True))
        if role != _expected(path.parent.name):
            wrong[path.parent.name] = role
    assert wrong == {}
