"""Reader scoring end to end: storescu sends a phantom study's T1 map and readers' SEG and RTSTRUCT objects to
`myomap serve`; the console (storescp, a peer receiving sr and sc) gets one comparison SR and one overlay
Secondary Capture per contour series, which pass dciodvfy.

Phantom study: seed 47, Siemens flavour, one mid-ventricular slice, MOLLI; three experts (whose STAPLE consensus is
the reference, no gold standard being named) and two trainees, one sending a SEG and one an RTSTRUCT.

Contours sent before the map they lie on (a PACS forwards a study's series in any order) wait for it: their jobs
are WAITING, with the reason on the series page, and are scored once the map arrives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import Job, JobState, Result, Transfer, TransferState
from dicomnode.analysis.study import analyze_paths
from dicomnode.jobs.reader_job import RESULT_KIND
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from reports import codes
from tests.integration.node_harness import (
    Console,
    NodeProcess,
    dcmtk_env,
    parse_storescu_log,
    requires_dcmtk,
    serve,
    storescu_command,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    requires_dcmtk,
]

PHANTOM_SEED = 47
#: (reader, contour object) pairs sent; each is one series and gets one SR and one overlay.
SENT = (("expert1", "seg"), ("expert2", "rtstruct"), ("expert3", "seg"), ("trainee1", "seg"),
        ("trainee2", "rtstruct"))
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"
SC_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    """The study's T1 map files and the sent readers' contour files (experts first)."""
    request = StudyRequest(seed=PHANTOM_SEED, n_slices=1, matrix=(80, 96), pixel_spacing_mm=2.2,
                           vendor=Vendor.SIEMENS, sequence=SequenceChoice.MOLLI, motion_rate=0.0)
    outcome = generate_study(plan_study(request, 0), tmp_path_factory.mktemp("phantom"))
    sidecar = json.loads((outcome.folder / "mid" / "sidecar.json").read_text())
    maps = [outcome.folder / path for path in sidecar["sequences"][0]["series"]["map"]["paths"]]
    readers = {entry["reader"]: entry for entry in sidecar["readers"]}
    contours = [outcome.folder / path for reader, kind in SENT for path in readers[reader][kind]["paths"]]
    return maps, contours


@pytest.fixture
def node(tmp_path: Path, console: Console) -> Iterator[NodeProcess]:
    # The storescp plays a readers' workstation: a configured peer that takes the reader comparisons (SR) and the
    # overlays (reader_sc).
    yield from serve(tmp_path / "node", console.port, quiet_seconds=1.0, console_receives=["sr", "reader_sc"])


def send(port: int, files: list[Path]) -> dict[Path, str]:
    """storescu as a viewer sending contours: only the files' own SOP classes are proposed (-R), since its
    default list leaves Segmentation and RT Structure Set out."""
    command = storescu_command(port, files)
    command.insert(1, "-R")
    done = subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=60)
    return parse_storescu_log((done.stdout + done.stderr).splitlines())


def _received(console: Console, node: NodeProcess | None = None) -> tuple[dict[str, pydicom.Dataset],
                                                                           dict[str, pydicom.Dataset]]:
    """The SRs and Secondary Captures at the console, by SOP Instance UID; with ``node``, those of the maps' own
    analysis (which the console gets too) left out."""
    srs, scs = {}, {}
    map_outputs = _map_analysis_uids(node) if node is not None else set()
    for path in console.files():
        ds = pydicom.dcmread(path)
        if ds.SOPInstanceUID in map_outputs:
            continue
        if ds.SOPClassUID == SR_STORAGE:
            srs[ds.SOPInstanceUID] = ds
        elif str(ds.SOPClassUID).startswith(SC_STORAGE_PREFIX):
            scs[ds.SOPInstanceUID] = ds
    return srs, scs


def _map_analysis_uids(node: NodeProcess) -> set[str]:
    """SOP Instance UIDs of the outputs of the node's map analyses (not the readers' results)."""
    engine = create_engine(f"sqlite:///{node.data / 'myomap.db'}")
    with Session(engine) as session:
        paths = [path for result in session.scalars(select(Result).where(Result.kind != RESULT_KIND))
                 for path in result.paths]
    engine.dispose()
    return {pydicom.dcmread(node.data / path, stop_before_pixels=True).SOPInstanceUID for path in paths}


def _dice(sr: pydicom.Dataset) -> list[float]:
    found = []

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            name = item.get("ConceptNameCodeSequence")
            if item.get("ValueType") == "NUM" and name and name[0].CodeValue == codes.DICE.value:
                found.append(float(item.MeasuredValueSequence[0].NumericValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


class NodeDatabase:
    """The node's SQLite database, read with a fresh session each time (the node writes it meanwhile)."""

    def __init__(self, node: NodeProcess) -> None:
        self.engine = create_engine(f"sqlite:///{node.data / 'myomap.db'}")

    def results(self) -> list[Result]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Result).where(Result.kind == RESULT_KIND).order_by(Result.id)))

    def settled(self, n_results: int) -> bool:
        """``n_results`` reader results, and every transfer sent."""
        with Session(self.engine) as session:
            states = {transfer.state for transfer in session.scalars(select(Transfer))}
        return len(self.results()) == n_results and states == {TransferState.SENT}

    def job_states(self) -> set[JobState]:
        with Session(self.engine) as session:
            return {job.state for job in session.scalars(select(Job))}

    def newest(self) -> dict[str, Result]:
        """Each reader's newest result (a reader is scored again when the study's reference changes)."""
        return {result.summary["reader"]: result for result in self.results()}

    def scored_against(self, readers: Iterable[str], reference_readers: list[str]) -> bool:
        """Each of ``readers``' newest result scored against ``reference_readers``, every job finished and every
        transfer sent: once all readers are scored against the whole reference, none is scored again."""
        newest = self.newest()
        if not all(reader in newest and newest[reader].summary["slices"][0]["reference_readers"] == reference_readers
                   for reader in readers):
            return False
        with Session(self.engine) as session:
            states = {transfer.state for transfer in session.scalars(select(Transfer))}
        return self.job_states() == {JobState.DONE} and states == {TransferState.SENT}


def _send_experts_then_trainees(node: NodeProcess, maps: list[Path], experts: list[Path],
                                trainees: list[Path]) -> NodeDatabase:
    """The experts' contours first, so that the trainees are scored against their consensus (a contour series is
    scored as soon as it is complete, against what the study holds then; an expert scored before the other experts
    arrived is scored again once they have)."""
    database = NodeDatabase(node)
    expert_readers = sorted(_reader(path) for path in experts)
    statuses = send(node.dicom_port, [*maps, *experts])
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(maps) + len(experts)
    wait_until(lambda: database.scored_against(expert_readers, expert_readers), timeout_s=30, interval_s=0.2,
               what="experts' results")
    statuses = send(node.dicom_port, trainees)
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(trainees)
    wait_until(lambda: database.scored_against([_reader(path) for path in trainees], expert_readers),
               timeout_s=30, interval_s=0.2, what="trainees' results")
    return database


def _reader(path: Path) -> str:
    """The reader of a phantom contour file (its folder is ``<reader>_<seg|rtstruct>``)."""
    return path.parent.name.rsplit("_", 1)[0]


def test_every_contour_series_comes_back_as_a_comparison_sr_and_overlay(
    phantom: tuple[list[Path], list[Path]], node: NodeProcess, console: Console
) -> None:
    maps, contours = phantom
    experts = [path for path in contours if "expert" in path.parent.name]
    trainees = [path for path in contours if "trainee" in path.parent.name]
    database = _send_experts_then_trainees(node, maps, experts, trainees)
    assert database.job_states() == {JobState.DONE}
    results = database.results()
    database.engine.dispose()
    by_reader = {result.summary["reader"]: result for result in results}
    assert set(by_reader) == {reader for reader, _ in SENT}

    # Everything the results list reached the console: one overlay per result (an expert scored before the other
    # experts arrived has two), an SR per scored one.
    srs, scs = _received(console, node)
    sent_uids = {
        output: {pydicom.dcmread(node.data / path, stop_before_pixels=True).SOPInstanceUID
                 for result in results for path in result.summary["outputs"][output]}
        for output in ("sr", "sc")
    }
    assert set(srs) == sent_uids["sr"] and set(scs) == sent_uids["sc"]
    assert len(scs) == len(results) and len({result.job_id for result in results}) == len(results)
    # Only experts were scored again (the later experts changed their reference); each trainee once.
    assert sorted(reader for result in results if (reader := result.summary["reader"]).startswith("trainee")) == \
        ["trainee1", "trainee2"]
    study_uid = pydicom.dcmread(maps[0]).StudyInstanceUID
    assert {ds.StudyInstanceUID for ds in (*srs.values(), *scs.values())} == {study_uid}

    # Each trainee's SR at the console carries the Dice the offline analysis gives for the same files.
    report = analyze_paths([*maps, *contours], gold_standard=None)
    (slice_result,) = report.slices
    for reader in ("trainee1", "trainee2"):
        summary = by_reader[reader].summary
        (sr_path,) = summary["outputs"]["sr"]
        sr = srs[pydicom.dcmread(node.data / sr_path, stop_before_pixels=True).SOPInstanceUID]
        expected = next(r for r in slice_result.readers if r.reader == reader).score
        assert summary["slices"][0]["reference"] == "staple"
        assert summary["slices"][0]["reference_readers"] == ["expert1", "expert2", "expert3"]
        assert _dice(sr) == [pytest.approx(expected.dice_myocardium, abs=1e-6)]

    # The node logged UIDs and reader labels, never the patient's name or ID.
    source = pydicom.dcmread(maps[0])
    log = node.log()
    for value in (str(source.PatientName), *str(source.PatientName).split("^"), str(source.PatientID)):
        assert value and value not in log


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed")
def test_comparison_sr_and_overlay_pass_dciodvfy(
    phantom: tuple[list[Path], list[Path]], node: NodeProcess, console: Console
) -> None:
    maps, contours = phantom
    experts = [path for path in contours if "expert" in path.parent.name]
    trainee = [path for path in contours if path.parent.name == "trainee1_seg"]
    database = _send_experts_then_trainees(node, maps, experts, trainee)
    n_results = len(database.results())
    database.engine.dispose()
    srs, scs = _received(console, node)
    assert len(srs) >= 1 and len(scs) == n_results >= len(experts) + 1
    for path in console.files():
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


def _series_api(node: NodeProcess, series_uid: str) -> dict:
    response = httpx.get(f"http://127.0.0.1:{node.web_port}/api/series/{series_uid}", auth=node.web_auth,
                         timeout=10)
    return response.json() if response.status_code == 200 else {}


def test_contours_sent_before_their_map_wait_for_it_and_are_scored_when_it_arrives(
    phantom: tuple[list[Path], list[Path]], node: NodeProcess, console: Console
) -> None:
    maps, contours = phantom
    database = NodeDatabase(node)
    sent = [path for path in contours if path.parent.name in {"expert1_seg", "expert2_rtstruct", "expert3_seg",
                                                                "trainee1_seg"}]
    trainee_series_uid = next(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
                              for path in sent if path.parent.name == "trainee1_seg")
    # The readers' contours first: every contour series' job waits for the map.
    statuses = send(node.dicom_port, sent)
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(sent)

    def trainee_job() -> dict:
        jobs = _series_api(node, trainee_series_uid).get("jobs", [])
        return jobs[0] if jobs else {}

    wait_until(lambda: trainee_job().get("state") == "waiting" and database.job_states() == {JobState.WAITING},
               timeout_s=30, interval_s=0.2, what="the contour series' jobs waiting")
    assert "waiting for the map" in trainee_job()["error"]
    assert _series_api(node, trainee_series_uid)["state"] != "failed"
    page = httpx.get(f"http://127.0.0.1:{node.web_port}/series/{trainee_series_uid}", auth=node.web_auth,
                     timeout=10).text
    assert 'state-waiting">waiting<' in page and "Waiting: reader &#39;trainee1&#39;" in page
    assert console.files() == []

    # The map arrives: the waiting jobs are scored, and the comparisons reach the console.
    statuses = send(node.dicom_port, maps)
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(maps)
    wait_until(lambda: database.settled(4), timeout_s=40, interval_s=0.2, what="the waiting jobs' results")
    assert database.job_states() == {JobState.DONE}
    trainee = next(result for result in database.results() if result.summary["reader"] == "trainee1")
    database.engine.dispose()
    assert trainee_job()["state"] == "done" and trainee_job()["error"] == ""
    srs, scs = _received(console, node)
    assert len(scs) == 4 and len(srs) >= 1
    (sr_path,) = trainee.summary["outputs"]["sr"]
    sr = srs[pydicom.dcmread(node.data / sr_path, stop_before_pixels=True).SOPInstanceUID]
    (slice_result,) = analyze_paths([*maps, *sent], gold_standard=None).slices
    expected = next(r for r in slice_result.readers if r.reader == "trainee1").score
    assert trainee.summary["slices"][0]["reference_readers"] == ["expert1", "expert2", "expert3"]
    assert _dice(sr) == [pytest.approx(expected.dice_myocardium, abs=1e-6)]


def _texts(items: pydicom.Sequence) -> list[str]:
    """Every TEXT value of an SR content tree (the tracking identifiers name reader and reference)."""
    found = []
    for item in items:
        if item.get("ValueType") == "TEXT":
            found.append(str(item.TextValue))
        found.extend(_texts(item.get("ContentSequence", [])))
    return found


def test_a_trainee_scored_before_the_experts_is_scored_again_when_they_arrive(
    phantom: tuple[list[Path], list[Path]], node: NodeProcess, console: Console
) -> None:
    maps, contours = phantom
    experts = [path for path in contours if "expert" in path.parent.name]
    trainee = [path for path in contours if path.parent.name == "trainee1_seg"]
    database = NodeDatabase(node)

    def trainee_results() -> list[Result]:
        return [result for result in database.results() if result.summary["reader"] == "trainee1"]

    # The trainee first: no expert yet, the consensus model draws the reference.
    statuses = send(node.dicom_port, [*maps, *trainee])
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(maps) + len(trainee)
    wait_until(lambda: database.scored_against(["trainee1"], []), timeout_s=30, interval_s=0.2,
               what="the trainee's first comparison")
    (first,) = trainee_results()
    assert first.summary["slices"][0]["reference"] == "consensus_model"
    (first_sr_path,) = first.summary["outputs"]["sr"]
    first_sr_uid = pydicom.dcmread(node.data / first_sr_path, stop_before_pixels=True).SOPInstanceUID
    srs, _ = _received(console, node)
    assert set(srs) == {first_sr_uid}
    assert any(text.startswith("trainee1 vs consensus model") for text in _texts(srs[first_sr_uid].ContentSequence))

    # The three experts arrive: the trainee is scored again against their consensus, as a new SR (the experts'
    # series complete one after the other; where the trainee was scored against the first two meanwhile, that
    # result stays too).
    statuses = send(node.dicom_port, experts)
    assert set(statuses.values()) == {"Success"} and len(statuses) == len(experts)
    expert_readers = ["expert1", "expert2", "expert3"]
    wait_until(lambda: database.scored_against(["trainee1", *expert_readers], expert_readers), timeout_s=40,
               interval_s=0.2, what="the trainee scored again")
    first_again, *between, second = trainee_results()
    database.engine.dispose()
    assert len(between) <= 1 and all(r.summary["slices"][0]["reference"] == "staple" for r in between)
    assert first_again.id == first.id and first_again.summary == first.summary  # the first stays as it was
    (slice_summary,) = second.summary["slices"]
    assert slice_summary["reference"] == "staple"
    assert slice_summary["reference_readers"] == ["expert1", "expert2", "expert3"]
    (sr_path,) = second.summary["outputs"]["sr"]
    srs, _ = _received(console, node)
    sr = srs[pydicom.dcmread(node.data / sr_path, stop_before_pixels=True).SOPInstanceUID]
    assert first_sr_uid in srs and sr.SOPInstanceUID != first_sr_uid
    assert sr.SeriesInstanceUID != srs[first_sr_uid].SeriesInstanceUID
    assert any(text.startswith("trainee1 vs expert consensus") for text in _texts(sr.ContentSequence))
    (slice_result,) = analyze_paths([*maps, *trainee, *experts], gold_standard=None).slices
    expected = next(r for r in slice_result.readers if r.reader == "trainee1").score
    assert _dice(sr) == [pytest.approx(expected.dice_myocardium, abs=1e-6)]
