"""Real scanners' sending orders over DCMTK: each gives exactly one analysis per slice and sequence, and nothing
from a partial series reaches the console.

A Siemens-flavoured phantom study with three short-axis slices of MOLLI: per slice the raw magnitude images, their
phase images, the MOCO images, the scanner's T1 map and its fit-quality map, each a series of its own. The orders
are those scanners and PACS use: slice by slice (raw images, then that slice's map) in one association, the maps
first, raw images only, maps only, raw images and maps in separate associations, and the whole study sent twice.
``myomap analyze`` on the same files must give the node's slices and values.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import AnalysisUnit, Job, JobState, Result, Series, SeriesRole, Transfer, TransferState
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

SEED = 33
SLICES = ("basal", "mid", "apical")
QUIET_S = 1.0
PAIRING_S = 2.0


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("orderings")
    subprocess.run(
        [*myomap_executable(), "phantom", "--out", str(out), "--studies", "1", "--seed", str(SEED), "--sequence",
         "molli", "--vendor", "siemens", "--readers", "", "--slices", "3", "--workers", "1", "--motion-rate", "0"],
        check=True, capture_output=True, timeout=300,
    )
    return out / "study_0000"


@pytest.fixture
def node(tmp_path: Path, console: Console) -> Iterator[NodeProcess]:
    yield from serve(tmp_path / "node", console.port, quiet_seconds=QUIET_S, console_receives=["sc"],
                     overrides={"series": {"pairing_seconds": PAIRING_S}})


def _series_folders(study: Path, level: str, *kinds: str) -> list[Path]:
    """The files of one slice's series of the given kinds (magnitude, phase, moco, map, fit_quality), in folder
    order."""
    folders = sorted(p for p in (study / level).iterdir() if p.is_dir() and p.name != "readers")
    return [f for folder in folders if folder.name.split("_", 2)[-1] in kinds for f in sorted(folder.glob("*.dcm"))]


def _raw(study: Path, level: str) -> list[Path]:
    return _series_folders(study, level, "magnitude", "phase", "moco")


def _maps(study: Path, level: str) -> list[Path]:
    return _series_folders(study, level, "map", "fit_quality")


def _database(node: NodeProcess) -> Session:
    return Session(create_engine(f"sqlite:///{node.data / 'myomap.db'}"))


def _settled(node: NodeProcess, n_units: int) -> bool:
    with _database(node) as session:
        units = session.scalars(select(AnalysisUnit)).all()
        jobs = session.scalars(select(Job)).all()
        transfers = session.scalars(select(Transfer)).all()
    return (len(units) >= n_units and bool(jobs) and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs)
            and all(t.state is TransferState.SENT for t in transfers) and len(transfers) > 0)


def _send_all(node: NodeProcess, *batches: list[Path]) -> None:
    for files in batches:
        statuses = send(node.dicom_port, files)
        assert set(statuses.values()) == {"Success"} and len(statuses) == len(files)


def _check_one_analysis_per_slice(node: NodeProcess, console: Console, *, map_source: str) -> list[dict]:
    """Three units, one result each from the given source, every raw series whole, one SC series per slice."""
    wait_until(lambda: _settled(node, 3), timeout_s=120, what="three analysed units, every transfer sent")
    with _database(node) as session:
        units = session.scalars(select(AnalysisUnit).order_by(AnalysisUnit.id)).all()
        # The slices' own results; the study bullseye that follows them has its own (kind "study_bullseye").
        results = session.scalars(select(Result).where(Result.kind != "study_bullseye").order_by(Result.id)).all()
        jobs = session.scalars(select(Job)).all()
        assert all(job.state is JobState.DONE for job in jobs), [(j.key, j.error) for j in jobs]
        assert len(units) == 3 and all(unit.supersedes_unit_id is None for unit in units)
        for unit in units:
            for member in unit.members:
                series = session.get(Series, member["series_id"])
                if series.role is SeriesRole.RAW_IR:
                    assert series.n_instances == series.expected_instances  # never a partial series
    summaries = [r.summary for r in results]
    assert len(summaries) == 3 and all(s["slices"] == 1 for s in summaries)
    assert {s["map_source"] for s in summaries} == {map_source}
    log = node.log()
    assert "images are needed" not in log and "magnitude images must be non-negative" not in log
    captures = [pydicom.dcmread(p, stop_before_pixels=True) for p in console.files_of(SecondaryCaptureImageStorage)]
    per_slice = [ds for ds in captures if "study bullseye" not in ds.SeriesDescription]
    assert len({ds.SeriesInstanceUID for ds in per_slice}) == 3  # one verdict series per slice, none from a part
    assert {ds.SeriesDescription for ds in per_slice} == {f"myomap T1 MOLLI {level} SC" for level in SLICES}
    return summaries


def _analysed_slices(summaries: list[dict]) -> list[dict]:
    return [s for summary in summaries for s in summary["analysis"]["slices"]]


def test_slice_by_slice_raw_then_map_in_one_association(study: Path, node: NodeProcess, console: Console) -> None:
    _send_all(node, [f for level in SLICES for f in (*_raw(study, level), *_maps(study, level))])
    summaries = _check_one_analysis_per_slice(node, console, map_source="scanner map")
    # The node's own reconstruction is the cross-check of the scanner's map: the phantom's scanner map is the same
    # plain fit, so they agree closely wherever the slice was analysed.
    analysed = [figures for figures in _analysed_slices(summaries) if figures["status"] == "analysed"]
    assert len(analysed) >= 2, [f.get("reason") for f in _analysed_slices(summaries)]
    for figures in analysed:
        assert figures["map_source"] == "scanner map"
        assert abs(figures["cross_check"]["median_difference_percent"]) < 2.0
        assert figures["second_measurement"]["label"] == "node reconstruction, Bloch-corrected"
        assert figures["second_measurement"]["mean_ms"] > figures["myocardium"]["mean_ms"]


def test_maps_first_then_raw_images(study: Path, node: NodeProcess, console: Console) -> None:
    _send_all(node, [f for level in SLICES for f in _maps(study, level)]
              + [f for level in SLICES for f in _raw(study, level)])
    _check_one_analysis_per_slice(node, console, map_source="scanner map")


def test_raw_images_only(study: Path, node: NodeProcess, console: Console) -> None:
    _send_all(node, [f for level in SLICES for f in _raw(study, level)])
    summaries = _check_one_analysis_per_slice(node, console, map_source="node reconstruction")
    assert all(s["report_t1"] == "scanner" for s in summaries)


def test_maps_only(study: Path, node: NodeProcess, console: Console) -> None:
    _send_all(node, [f for level in SLICES for f in _maps(study, level)])
    summaries = _check_one_analysis_per_slice(node, console, map_source="scanner map")
    assert all("cross_check" not in figures for figures in _analysed_slices(summaries))


def test_raw_and_maps_in_separate_associations(study: Path, node: NodeProcess, console: Console) -> None:
    _send_all(node, [f for level in SLICES for f in _raw(study, level)],
              [f for level in SLICES for f in _maps(study, level)])
    _check_one_analysis_per_slice(node, console, map_source="scanner map")


def test_a_re_send_gives_no_second_analysis(study: Path, node: NodeProcess, console: Console) -> None:
    everything = [f for level in SLICES for f in (*_raw(study, level), *_maps(study, level))]
    _send_all(node, everything)
    wait_until(lambda: _settled(node, 3), timeout_s=120, what="the first analysis")
    _send_all(node, everything)
    _check_one_analysis_per_slice(node, console, map_source="scanner map")


def test_analyze_agrees_with_the_network_path(study: Path, node: NodeProcess, console: Console,
                                               tmp_path: Path) -> None:
    everything = [f for level in SLICES for f in (*_raw(study, level), *_maps(study, level))]
    _send_all(node, everything)
    summaries = _check_one_analysis_per_slice(node, console, map_source="scanner map")
    report_path = tmp_path / "analyze.json"
    done = subprocess.run([*myomap_executable(), "analyze", str(study), "--json", str(report_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    assert len(report["slices"]) == len(summaries) == 3
    offline = sorted(
        (s["model"]["myocardium"]["mean_ms"] for s in report["slices"] if s["model"] and s["model"]["status"]
         == "analysed"),
    )
    network = sorted(f["myocardium"]["mean_ms"] for f in _analysed_slices(summaries) if f["status"] == "analysed")
    assert offline == pytest.approx(network, abs=0.2)
    assert all(re.fullmatch(r"scanner map", s["map_source"]) for s in report["slices"])
    offline_checks = sorted(s["model"]["cross_check"]["median_difference_percent"] for s in report["slices"]
                            if s["model"] and s["model"]["status"] == "analysed")
    network_checks = sorted(f["cross_check"]["median_difference_percent"] for f in _analysed_slices(summaries)
                            if f["status"] == "analysed")
    assert offline_checks == pytest.approx(network_checks, abs=0.01)


def test_images_arriving_after_the_analysis_make_a_new_analysis_that_supersedes_it(
    study: Path, node: NodeProcess, console: Console
) -> None:
    raw = _series_folders(study, "mid", "magnitude")
    _send_all(node, raw[:6])  # the sender stops: the series is complete only after the quiet period
    wait_until(lambda: _settled(node, 1), timeout_s=120, what="the analysis of the six images")
    _send_all(node, raw[6:])
    wait_until(lambda: _settled(node, 2), timeout_s=120, what="the analysis of all the images")
    with _database(node) as session:
        first, second = session.scalars(select(AnalysisUnit).order_by(AnalysisUnit.id)).all()
        assert second.supersedes_unit_id == first.id
        old, new = (session.scalars(select(Result).where(Result.job_id == unit.job_id)).one()
                    for unit in (first, second))
        assert new.summary["supersedes"]["job_id"] == first.job_id
        old_sr = [pydicom.dcmread(node.data / path) for path in old.summary["outputs"]["sr"]]
        new_sr = [pydicom.dcmread(node.data / path) for path in new.summary["outputs"]["sr"]]
    assert new.summary["outputs"]["sc"] and old.output_series_uid != new.output_series_uid
    # Both analyses found the heart; the new report names the old one as its predecessor.
    (old_report,), (new_report,) = old_sr, new_sr
    (predecessor,) = new_report.PredecessorDocumentsSequence
    named = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert named == old_report.SOPInstanceUID
