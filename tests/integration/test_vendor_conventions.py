"""Vendors' conventions over DCMTK: GE's mixed image types in one series per inversion time without a field
strength, Siemens' colour display copy of each map, and a study that is not a short-axis heart (a vial phantom).
Each study gets one correct, honest analysis per slice and sequence."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import AnalysisUnit, Job, JobState, Result, Transfer, TransferState
from tests.integration.node_harness import (
    Console,
    NodeProcess,
    myomap_executable,
    requires_dcmtk,
    send,
    serve,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_dcmtk]

FIELD_STRENGTH_NOTE = "field strength not in the header; T2 model assumed 1.5 T"


def _phantom(out: Path, *options: str) -> Path:
    subprocess.run(
        [*myomap_executable(), "phantom", "--out", str(out), "--studies", "1", "--seed", "7", "--readers", "",
         "--workers", "1", "--motion-rate", "0", *options],
        check=True, capture_output=True, timeout=300,
    )
    return out / "study_0000"


@pytest.fixture(scope="module")
def ge_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _phantom(tmp_path_factory.mktemp("ge"), "--sequence", "molli", "--vendor", "ge", "--slices", "1",
                    "--vendor-quirks", "ge-mixed,per-ti,no-field-strength")


@pytest.fixture(scope="module")
def siemens_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _phantom(tmp_path_factory.mktemp("siemens"), "--sequence", "molli", "--vendor", "siemens", "--slices",
                    "2", "--vendor-quirks", "display-copy")


@pytest.fixture(scope="module")
def vial_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _phantom(tmp_path_factory.mktemp("vials"), "--vials", "--vendor", "siemens")


@pytest.fixture
def node(tmp_path: Path, console: Console) -> Iterator[NodeProcess]:
    yield from serve(tmp_path / "node", console.port, quiet_seconds=1.0, console_receives=["sc"],
                     overrides={"series": {"pairing_seconds": 1.5}})


def _files(study: Path, *suffixes: str) -> list[Path]:
    return sorted(f for folder in study.glob("*/*") if folder.is_dir() and folder.name.endswith(suffixes)
                  for f in folder.glob("*.dcm"))


def _results(node: NodeProcess, n_units: int) -> list[dict]:
    engine = create_engine(f"sqlite:///{node.data / 'myomap.db'}")

    def settled() -> bool:
        with Session(engine) as session:
            units = session.scalars(select(AnalysisUnit)).all()
            jobs = session.scalars(select(Job)).all()
            transfers = session.scalars(select(Transfer)).all()
        return (len(units) >= n_units and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs)
                and bool(transfers) and all(t.state is TransferState.SENT for t in transfers))

    wait_until(settled, timeout_s=120, what=f"{n_units} analysed units, every transfer sent")
    with Session(engine) as session:
        jobs = session.scalars(select(Job)).all()
        assert all(job.state is JobState.DONE for job in jobs), [(j.key, j.error) for j in jobs]
        assert len(session.scalars(select(AnalysisUnit)).all()) == n_units
        # The slices' own results; a study bullseye may follow them with its own (kind "study_bullseye").
        slices_only = select(Result).where(Result.kind != "study_bullseye").order_by(Result.id)
        return [r.summary for r in session.scalars(slices_only)]


def _send(node: NodeProcess, files: list[Path]) -> None:
    statuses = send(node.dicom_port, files)
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(files)


def test_ge_mixed_components_per_ti_series_without_field_strength(ge_study: Path, node: NodeProcess,
                                                                   console: Console) -> None:
    raw = _files(ge_study, "_magnitude")
    assert len({pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in raw}) >= 7  # one per TI
    _send(node, raw)
    (summary,) = _results(node, 1)
    # Eight per-TI series of magnitude, phase, real and imaginary images: one fit of the magnitude images.
    assert summary["map_source"] == "node reconstruction" and summary["slices"] == 1
    assert len(summary["unit_series"]) == len({pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID
                                               for f in raw})
    assert FIELD_STRENGTH_NOTE in summary["notes"]
    (figures,) = summary["analysis"]["slices"]
    assert figures["status"] == "analysed", figures.get("reason")
    # The node's scanner-comparable T1 is the scanner's own map's value (the phantom's GE map is the plain fit).
    scanner = _files(ge_study, "_map")
    report_path = node.folder / "scanner-map.json"
    offline = subprocess.run([*myomap_executable(), "analyze", *map(str, scanner), "--json", str(report_path)],
                             capture_output=True, text=True, timeout=300)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    (scanner_slice,) = json.loads(report_path.read_text())["slices"]
    assert figures["myocardium"]["mean_ms"] == pytest.approx(scanner_slice["model"]["myocardium"]["mean_ms"], rel=0.01)
    assert "magnitude images must be non-negative" not in node.log()


def test_siemens_display_copy_is_one_slice(siemens_study: Path, node: NodeProcess, console: Console) -> None:
    maps = _files(siemens_study, "_map")
    assert any(int(pydicom.dcmread(f, stop_before_pixels=True).get("SamplesPerPixel", 1)) == 3 for f in maps)
    _send(node, [*_files(siemens_study, "_magnitude"), *maps])
    summaries = _results(node, 2)
    assert [s["slices"] for s in summaries] == [1, 1]
    assert {s["map_source"] for s in summaries} == {"scanner map"}
    captures = [pydicom.dcmread(p, stop_before_pixels=True) for p in console.files_of(SecondaryCaptureImageStorage)]
    per_slice = {ds.SeriesInstanceUID for ds in captures if "study bullseye" not in ds.SeriesDescription}
    assert len(per_slice) == 2  # one verdict series per slice: the colour display copies add none


def test_a_vial_phantom_is_not_a_heart(vial_study: Path, node: NodeProcess, console: Console) -> None:
    _send(node, _files(vial_study, "_magnitude", "_map"))
    summaries = _results(node, 2)  # MOLLI and ShMOLLI of the same slice: two sequences, two units
    for summary in summaries:
        (figures,) = summary["analysis"]["slices"]
        assert figures["status"] == "failed"
        assert figures["reason"].startswith("no left ventricle found"), figures["reason"]
        assert "myocardium" not in figures and "segments" not in figures
    comments = [str(pydicom.dcmread(p, stop_before_pixels=True).get("ImageComments", ""))
                for p in console.files_of(SecondaryCaptureImageStorage)]
    assert comments and all("no left ventricle found" in c for c in comments)
