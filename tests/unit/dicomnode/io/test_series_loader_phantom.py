"""The loader and classify() over the phantom's vendor quirks: GE mixed components, one series per TI, Siemens
display copies, headers without field strength."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from db.models import SeriesRole
from dicomnode.io.classify import classify, classify_series
from dicomnode.io.series_loader import (
    SeriesLoadError,
    TimingKind,
    belongs_to_same_acquisition,
    complex_component,
    load_series,
    load_series_files,
    load_series_group,
)
from dicomnode.io.t1_protocol import FIELD_STRENGTH_NOTE, field_strength_note

study = pytest.importorskip("phantom.study")
model = pytest.importorskip("phantom.model")

SMALL = {"n_slices": 1, "matrix": (80, 96), "pixel_spacing_mm": 2.2, "with_experts": False, "with_trainees": False,
         "motion_rate": 0.0}


def _study(tmp_path: Path, vendor: str, quirks: set[str], sequence: str = "molli") -> tuple[Path, dict]:
    request = study.StudyRequest(seed=8, vendor=model.Vendor(vendor), vendor_quirks=quirks,
                                 sequence=study.SequenceChoice(sequence), **SMALL)
    outcome = study.generate_study(study.plan_study(request, 0), tmp_path)
    return outcome.folder, json.loads((outcome.folder / "mid" / "sidecar.json").read_text())


def test_ge_mixed_series_loads_its_magnitude_images_and_is_raw(tmp_path: Path) -> None:
    folder, sidecar = _study(tmp_path, "ge", {"ge-mixed"})
    sequence = sidecar["sequences"][0]
    paths = [folder / path for path in sequence["series"]["magnitude"]["paths"]]
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
    assert [complex_component(ds) for ds in headers] == sequence["series"]["magnitude"]["image_components"]
    assert {classify(ds) for ds in headers} == {SeriesRole.RAW_IR}
    assert classify_series(headers) == SeriesRole.RAW_IR
    (stack,) = load_series_files(paths, TimingKind.INVERSION).slices
    np.testing.assert_allclose(stack.times_ms, sorted(sequence["scheme"]["inversion_times_ms"]), atol=0.5)
    assert stack.images.min() >= 0


@pytest.mark.parametrize(("vendor", "quirks"), [("ge", {"per-ti", "ge-mixed", "no-field-strength"}),
                                                ("philips", {"per-ti", "no-field-strength"})])
def test_per_ti_series_are_grouped_and_loaded_as_one(tmp_path: Path, vendor: str, quirks: set[str]) -> None:
    folder, sidecar = _study(tmp_path, vendor, quirks)
    sequence = sidecar["sequences"][0]
    records = sequence["series"]["magnitude_per_ti"]
    groups = [[pydicom.dcmread(folder / path) for path in record["paths"]] for record in records]
    firsts = [group[0] for group in groups]
    assert all(belongs_to_same_acquisition(a, b) for a, b in itertools.combinations(firsts, 2))
    map_header = pydicom.dcmread(folder / sequence["series"]["map"]["paths"][0], stop_before_pixels=True)
    assert not belongs_to_same_acquisition(firsts[0], map_header)  # the map is another protocol name
    loaded = load_series_group(list(reversed(groups)), TimingKind.INVERSION)
    assert loaded.series_instance_uid == records[0]["series_instance_uid"]  # the lowest series number
    (stack,) = loaded.slices
    np.testing.assert_allclose(stack.times_ms, sorted(sequence["scheme"]["inversion_times_ms"]), atol=0.5)
    assert field_strength_note(stack.sources[0]) == FIELD_STRENGTH_NOTE
    with pytest.raises(SeriesLoadError, match="instances belong to"):
        load_series([ds for group in groups for ds in group], TimingKind.INVERSION)


def test_siemens_display_copy_is_not_a_map_and_the_grey_map_is(tmp_path: Path) -> None:
    folder, sidecar = _study(tmp_path, "siemens", {"display-copy"})
    grey, colour = (pydicom.dcmread(folder / path) for path in sidecar["sequences"][0]["series"]["map"]["paths"])
    assert classify(grey) == SeriesRole.T1_MAP
    assert classify(colour) == SeriesRole.OTHER
    assert classify_series([colour, grey]) == SeriesRole.T1_MAP
    raw = pydicom.dcmread(folder / sidecar["sequences"][0]["series"]["magnitude"]["paths"][0])
    assert field_strength_note(raw) is None
