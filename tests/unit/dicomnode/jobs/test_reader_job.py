"""The reader-score job on a phantom study ingested into a node: one comparison SR and overlay per contour series,
scores equal to the offline analysis', transfers to the peer that takes them, one result however often it runs;
and a further job, result and SR when the study's reference changes after the reader was scored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pydicom
import pytest
from huey import MemoryHuey
from onnx import TensorProto, helper
from pydicom.dataset import Dataset
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings, load_settings
from config.settings import ScoringSettings
from db import migrate
from db.models import Job, JobState, Result, Series, SeriesState, Transfer
from db.session import make_engine, make_session_factory
from dicomnode.analysis.reference import CONSENSUS_MODEL_REFERENCE
from dicomnode.analysis.study import analyze_paths
from dicomnode.jobs import reader_job
from dicomnode.jobs.creation import JobKind, enqueue_series, requeue_unfinished
from dicomnode.jobs.map_job import JobOutcome, run_job
from dicomnode.jobs.queue import NodeQueue
from dicomnode.jobs.reader_job import RESULT_KIND, gold_standard_reader, run_reader_job
from dicomnode.jobs.rescoring import requeue_rescoring
from dicomnode.jobs.tasks import register_tasks
from dicomnode.store.storage import store_instance
from inference.expert_consensus import INPUT_NAME as CONSENSUS_INPUT
from inference.expert_consensus import OUTPUT_NAME as CONSENSUS_OUTPUT
from inference.model_set import SHIPPED_FILES
from inference.runtime import Device, Model, load_model, shipped_model_path
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from reports import codes
from training.model_card import tensor, write_card

PHANTOM_SEED = 43
PEER_AE = "PACS"
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SC_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # (multi-frame) Secondary Capture Image Storage


@dataclass(frozen=True)
class PhantomStudy:
    folder: Path
    sidecar: dict

    def map_files(self) -> list[Path]:
        return [self.folder / path for path in self.sidecar["sequences"][0]["series"]["map"]["paths"]]

    def map_series_uid(self) -> str:
        return self.sidecar["sequences"][0]["series"]["map"]["series_instance_uid"]

    def raw_files(self) -> list[Path]:
        return [self.folder / path for path in self.sidecar["sequences"][0]["series"]["magnitude"]["paths"]]

    def contour_files(self, reader: str, kind: str) -> list[Path]:
        entry = next(r for r in self.sidecar["readers"] if r["reader"] == reader)
        return [self.folder / path for path in entry[kind]["paths"]]

    def contour_series_uid(self, reader: str, kind: str) -> str:
        return next(r for r in self.sidecar["readers"] if r["reader"] == reader)[kind]["series_instance_uid"]

    def readers(self) -> list[str]:
        return [r["reader"] for r in self.sidecar["readers"]]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomStudy:
    request = StudyRequest(seed=PHANTOM_SEED, n_slices=1, matrix=(80, 96), pixel_spacing_mm=2.2,
                           vendor=Vendor.SIEMENS, sequence=SequenceChoice.MOLLI, motion_rate=0.0)
    outcome = generate_study(plan_study(request, 0), tmp_path_factory.mktemp("phantom"))
    return PhantomStudy(outcome.folder, json.loads((outcome.folder / "mid" / "sidecar.json").read_text()))


@dataclass
class Node:
    settings: Settings
    factory: sessionmaker[Session]

    def store(self, files: list[Path], *, calling_ae: str = "VIEWER") -> None:
        for path in files:
            store_instance(path.read_bytes(), calling_ae=calling_ae, calling_host="127.0.0.1",
                           settings=self.settings, session_factory=self.factory)

    def job_for(self, series_instance_uid: str) -> int:
        """Queue the jobs of a stored series as the assembler does once it is complete; the one job's id."""
        (job_id,) = self.complete(series_instance_uid, _NoQueue())
        return job_id

    def complete(self, series_instance_uid: str, sink: object) -> list[int]:
        """Hand a stored series on as the assembler does once it is complete; the ids of the jobs it created."""
        with self.factory() as session:
            series = session.scalars(select(Series).where(Series.series_instance_uid == series_instance_uid)).one()
            series_id, revision = series.id, series.revision
        return enqueue_series(series_id, revision, session_factory=self.factory, sink=sink)

    def job(self, job_id: int) -> tuple[JobState, str, SeriesState]:
        """The job's state and error, and its series' state."""
        with self.factory() as session:
            job = session.get(Job, job_id)
            return job.state, job.error, job.series.state

    def run(self, job_id: int, deliveries: list[int] | None = None, **options: object) -> JobOutcome:
        sink = deliveries if deliveries is not None else []
        return run_reader_job(job_id, settings=self.settings, session_factory=self.factory,
                              enqueue_delivery=sink.append, **options)

    def result(self, job_id: int) -> Result:
        with self.factory() as session:
            (result,) = session.scalars(select(Result).where(Result.job_id == job_id)).all()
            return result

    def datasets(self, result: Result, output: str) -> list[Dataset]:
        return [pydicom.dcmread(self.settings.storage_root / path) for path in result.summary["outputs"][output]]


class _NoQueue:
    def enqueue_job(self, job_id: int) -> None:
        pass

    def enqueue_delivery(self, transfer_id: int, *, delay_s: float = 0.0) -> None:
        pass


class _RecordingQueue(_NoQueue):
    def __init__(self) -> None:
        self.jobs: list[int] = []

    def enqueue_job(self, job_id: int) -> None:
        self.jobs.append(job_id)


def _node(folder: Path, **overrides: object) -> Iterator[Node]:
    settings = load_settings(
        storage={"path": folder / "data", "min_free_mb": 1},
        peers=[{"ae_title": PEER_AE, "host": "127.0.0.1", "port": 11199, "receives": ["sr", "reader_sc"]}],
        **overrides,
    )
    settings.storage_root.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    yield Node(settings, make_session_factory(engine))
    engine.dispose()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from _node(tmp_path)


@pytest.fixture
def node_without_consensus_model(tmp_path: Path) -> Iterator[Node]:
    yield from _node(tmp_path, models={"consensus": str(tmp_path / "no-such-consensus.onnx")})


def _with_gold_standard(settings: Settings, reader: str) -> Settings:
    return settings.model_copy(update={"scoring": ScoringSettings(gold_standard=reader)})


def _all_contours(phantom: PhantomStudy, kinds: tuple[str, ...] = ("seg", "rtstruct")) -> list[Path]:
    return [path for reader in phantom.readers() for kind in kinds for path in phantom.contour_files(reader, kind)]


def _sr_numbers(ds: Dataset, code: object) -> list[float]:
    """Every numeric value of concept ``code`` anywhere in an SR's content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        name = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") == "NUM" and name and name[0].CodeValue == code.value:
            found.append(float(item.MeasuredValueSequence[0].NumericValue))
        found.extend(_sr_numbers(item, code))
    return found


def _analysed(phantom: PhantomStudy, reader: str, gold_standard: str | None, files: list[Path]):
    report = analyze_paths([*phantom.map_files(), *files], gold_standard=gold_standard, models=None)
    (slice_result,) = report.slices
    return next(r for r in slice_result.readers if r.reader == reader).score


def test_trainee_seg_is_scored_against_the_experts_and_sent_as_sr_and_overlay(phantom: PhantomStudy,
                                                                              node: Node) -> None:
    node.store([*phantom.map_files(), *_all_contours(phantom)])
    job_id = node.job_for(phantom.contour_series_uid("trainee3", "seg"))
    deliveries: list[int] = []
    assert node.run(job_id, deliveries) is JobOutcome.DONE

    result = node.result(job_id)
    assert result.kind == RESULT_KIND
    summary = result.summary
    assert summary["reader"] == "trainee3" and summary["gold_standard"] is None
    (slice_summary,) = summary["slices"]
    assert slice_summary["status"] == "scored" and slice_summary["reference"] == "staple"
    assert slice_summary["reference_readers"] == ["expert1", "expert2", "expert3"]
    # The patient's name and ID never reach the summary.
    source = pydicom.dcmread(phantom.map_files()[0])
    text = json.dumps(summary)
    assert str(source.PatientID) not in text and str(source.PatientName) not in text

    # The SR's Dice is the offline analysis' figure for the same contours.
    expected = _analysed(phantom, "trainee3", None, _all_contours(phantom, ("seg",)))
    (sr,) = node.datasets(result, "sr")
    (sc,) = node.datasets(result, "sc")
    assert sr.SOPClassUID == SR_STORAGE and sr.SeriesInstanceUID == result.output_series_uid
    assert _sr_numbers(sr, codes.DICE) == [pytest.approx(expected.dice_myocardium, abs=1e-6)]
    assert _sr_numbers(sr, codes.HAUSDORFF_DISTANCE) == [pytest.approx(expected.hausdorff_mm, abs=1e-6)]
    assert slice_summary["dice_myocardium"] == pytest.approx(expected.dice_myocardium, abs=1e-3)
    assert slice_summary["error_mode"] == expected.error_mode
    assert str(sc.SOPClassUID).startswith(SC_STORAGE_PREFIX)
    for output in (sr, sc):
        assert output.StudyInstanceUID == source.StudyInstanceUID
        assert output.PatientID == source.PatientID
    assert sc.pixel_array.ndim == 3 and sc.pixel_array.shape[-1] == 3
    assert sc.SeriesDescription == "myomap reader comparison SC"

    with node.factory() as session:
        job = session.get(Job, job_id)
        transfers = session.scalars(select(Transfer).order_by(Transfer.id)).all()
        assert job.state is JobState.DONE and job.series.state is SeriesState.DONE
        # The viewer that sent the contours has no [[peers]] entry: only the peer receiving sr and reader_sc gets
        # them.
        assert [(t.ae_title, t.sop_instance_uid) for t in transfers] == [
            (PEER_AE, sc.SOPInstanceUID), (PEER_AE, sr.SOPInstanceUID),
        ]
        assert sorted(deliveries) == [t.id for t in transfers]

    # The job ran: a second run finds it DONE and changes nothing.
    again: list[int] = []
    assert node.run(job_id, again) is JobOutcome.SKIPPED
    assert again == []
    with node.factory() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 1
        assert session.scalar(select(func.count()).select_from(Transfer)) == 2


def test_rerun_after_a_crash_rewrites_the_same_outputs_and_keeps_one_result(phantom: PhantomStudy,
                                                                            node: Node) -> None:
    node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",))])
    job_id = node.job_for(phantom.contour_series_uid("trainee1", "seg"))
    assert node.run(job_id) is JobOutcome.DONE
    first_paths = sorted(node.result(job_id).paths)
    with node.factory() as session:
        # As if the node died after writing the files but before committing: no result, job back in the queue.
        session.execute(delete(Transfer))
        session.execute(delete(Result))
        session.get(Job, job_id).state = JobState.QUEUED
        session.commit()
    assert node.run(job_id) is JobOutcome.DONE
    assert sorted(node.result(job_id).paths) == first_paths
    written = sorted(str(p.relative_to(node.settings.storage_root))
                     for p in (node.settings.storage_root / "outputs").rglob("*.dcm"))
    assert written == first_paths and len(written) == 2


def test_rtstruct_job_scores_the_rtstruct_against_the_named_gold_standard(phantom: PhantomStudy,
                                                                         node: Node) -> None:
    node.settings = _with_gold_standard(node.settings, "truth")
    assert gold_standard_reader(node.settings) == "truth"
    node.store([*phantom.map_files(), *_all_contours(phantom)])
    job_id = node.job_for(phantom.contour_series_uid("trainee2", "rtstruct"))
    assert node.run(job_id) is JobOutcome.DONE
    result = node.result(job_id)
    (slice_summary,) = result.summary["slices"]
    assert result.summary["gold_standard"] == "truth"
    assert slice_summary["reference"] == "gold_standard" and slice_summary["reference_readers"] == ["truth"]
    # The job of the RTSTRUCT gives the offline analysis' figure for the RTSTRUCTs.
    rtstructs = _all_contours(phantom, ("rtstruct",))
    expected = _analysed(phantom, "trainee2", "truth", rtstructs)
    (sr,) = node.datasets(result, "sr")
    assert _sr_numbers(sr, codes.DICE) == [pytest.approx(expected.dice_myocardium, abs=1e-6)]

    # The gold standard's own contour is the reference, not scored: its job sends nothing.
    truth_job = node.job_for(phantom.contour_series_uid("truth", "seg"))
    assert node.run(truth_job) is JobOutcome.DONE
    truth_result = node.result(truth_job)
    assert truth_result.paths == [] and truth_result.summary["slices"][0]["status"] == "not scored"
    with node.factory() as session:
        assert session.scalar(select(func.count()).select_from(Transfer).where(
            Transfer.result_id == truth_result.id)) == 0


def test_without_reference_or_consensus_model_the_reader_is_told_why(phantom: PhantomStudy,
                                                                     node_without_consensus_model: Node) -> None:
    node = node_without_consensus_model
    # One expert so far: too few for a consensus.
    node.store([*phantom.map_files(), *phantom.contour_files("expert1", "seg"),
                *phantom.contour_files("trainee4", "seg")])
    job_id = node.job_for(phantom.contour_series_uid("trainee4", "seg"))
    assert node.run(job_id) is JobOutcome.DONE
    result = node.result(job_id)
    (slice_summary,) = result.summary["slices"]
    assert slice_summary["status"] == "not scored"
    assert any("consensus model is not available" in note for note in slice_summary["notes"])
    assert result.summary["outputs"]["sr"] == []
    (sc,) = node.datasets(result, "sc")
    assert str(sc.SOPClassUID).startswith(SC_STORAGE_PREFIX)


def _stand_in_consensus_model(folder: Path) -> Model:
    """A network under the consensus model's contract that returns the reader's own mask (logits +-20)."""
    pair = helper.make_tensor_value_info(CONSENSUS_INPUT, TensorProto.FLOAT, ["batch", 2, 96, 96])
    logits = helper.make_tensor_value_info(CONSENSUS_OUTPUT, TensorProto.FLOAT, ["batch", 1, 96, 96])
    constants = [
        helper.make_tensor("start", TensorProto.INT64, [1], [1]),  # channel 1 of the pair: the reader's mask
        helper.make_tensor("end", TensorProto.INT64, [1], [2]),
        helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5]),
        helper.make_tensor("gain", TensorProto.FLOAT, [1], [40.0]),
    ]
    nodes = [
        helper.make_node("Slice", [CONSENSUS_INPUT, "start", "end", "axis"], ["mask"]),
        helper.make_node("Sub", ["mask", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], [CONSENSUS_OUTPUT]),
    ]
    graph = helper.make_graph(nodes, "reader_mask", [pair], [logits], initializer=constants)
    path = folder / "consensus.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    write_card(path, name="consensus stand-in", version="0", task="test", architecture="slice",
               inputs=[tensor(CONSENSUS_INPUT, [None, 2, 96, 96])],
               outputs=[tensor(CONSENSUS_OUTPUT, [None, 1, 96, 96])], preprocessing="", postprocessing="",
               training={}, metrics={})
    return Model(path, device=Device.CPU)


def test_without_reference_the_consensus_model_gives_one(phantom: PhantomStudy, node: Node,
                                                         tmp_path: Path) -> None:
    model = _stand_in_consensus_model(tmp_path)
    node.store([*phantom.map_files(), *phantom.contour_files("expert1", "seg"),
                *phantom.contour_files("trainee4", "seg")])
    job_id = node.job_for(phantom.contour_series_uid("trainee4", "seg"))
    assert node.run(job_id, models=lambda: SimpleNamespace(consensus=model)) is JobOutcome.DONE
    result = node.result(job_id)
    (slice_summary,) = result.summary["slices"]
    assert slice_summary["status"] == "scored" and slice_summary["reference"] == CONSENSUS_MODEL_REFERENCE
    assert slice_summary["reference_readers"] == []
    # The stand-in hands back the reader's own contour, through the crop grid and back.
    assert slice_summary["dice_myocardium"] == pytest.approx(1.0, abs=0.02)
    assert slice_summary["error_mode"] == "good"
    (sr,) = node.datasets(result, "sr")
    assert _sr_numbers(sr, codes.DICE) == [pytest.approx(slice_summary["dice_myocardium"], abs=1e-3)]


SHIPPED_CONSENSUS_MODEL = shipped_model_path(SHIPPED_FILES["consensus"])


@pytest.mark.skipif(not SHIPPED_CONSENSUS_MODEL.exists(), reason="consensus.onnx is not in inference/models yet")
def test_without_reference_the_shipped_consensus_model_draws_one(phantom: PhantomStudy, node: Node) -> None:
    model = load_model(SHIPPED_CONSENSUS_MODEL, device=Device.CPU)
    node.store([*phantom.map_files(), *phantom.contour_files("expert1", "seg"),
                *phantom.contour_files("trainee4", "seg")])
    job_id = node.job_for(phantom.contour_series_uid("trainee4", "seg"))
    # The node passes its whole model set (node_models); only the consensus model is used here.
    assert node.run(job_id, models=lambda: SimpleNamespace(consensus=model)) is JobOutcome.DONE
    result = node.result(job_id)
    (slice_summary,) = result.summary["slices"]
    assert slice_summary["status"] == "scored" and slice_summary["reference"] == CONSENSUS_MODEL_REFERENCE
    # The model's consensus lies near the phantom's experts: the trainee overlaps it as it overlaps them.
    staple_dice = _analysed(phantom, "trainee4", None, _all_contours(phantom, ("seg",))).dice_myocardium
    assert slice_summary["dice_myocardium"] == pytest.approx(staple_dice, abs=0.1)
    (sr,) = node.datasets(result, "sr")
    assert _sr_numbers(sr, codes.DICE) == [pytest.approx(slice_summary["dice_myocardium"], abs=1e-3)]


def test_without_scanner_maps_the_contours_lie_on_the_node_s_own_map(phantom: PhantomStudy, node: Node) -> None:
    # The scanner sent only its raw images: readers contour the map the node made of them.
    node.store([*phantom.raw_files(), *_all_contours(phantom, ("seg",))])
    map_job = node.job_for(phantom.sidecar["sequences"][0]["series"]["magnitude"]["series_instance_uid"])
    assert run_job(map_job, settings=node.settings, session_factory=node.factory,
                   enqueue_delivery=lambda _id: None) is JobOutcome.DONE
    map_result = node.result(map_job)
    (mr_map_path,) = [path for path in map_result.paths if map_result.summary["mr_map_series_uid"] in path]
    mr_map = pydicom.dcmread(node.settings.storage_root / mr_map_path, stop_before_pixels=True)

    job_id = node.job_for(phantom.contour_series_uid("trainee1", "seg"))
    assert node.run(job_id) is JobOutcome.DONE
    (slice_summary,) = node.result(job_id).summary["slices"]
    assert slice_summary["map_sop_instance_uid"] == mr_map.SOPInstanceUID
    assert slice_summary["reference"] == "staple"
    scanner_map_dice = _analysed(phantom, "trainee1", None, _all_contours(phantom, ("seg",))).dice_myocardium
    assert slice_summary["dice_myocardium"] == pytest.approx(scanner_map_dice, abs=1e-3)  # same masks, same grid


def test_contours_before_their_map_wait_for_it_and_are_scored_when_it_arrives(phantom: PhantomStudy,
                                                                            node: Node) -> None:
    # A PACS forwards the study's series in any order: the readers' contours come before the map.
    node.store(_all_contours(phantom, ("seg",)))
    job_id = node.job_for(phantom.contour_series_uid("trainee1", "seg"))
    _, _, series_state = node.job(job_id)
    assert node.run(job_id) is JobOutcome.WAITING
    state, reason, series_state_after = node.job(job_id)
    assert state is JobState.WAITING
    assert series_state_after is series_state and series_state is not SeriesState.FAILED
    assert "'trainee1'" in reason and "no T1/T2 map images yet" in reason and "waiting for the map" in reason
    with node.factory() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 0
    # Queued again before the map arrived (a restart, a duplicate task), it is not QUEUED: nothing runs.
    assert node.run(job_id) is JobOutcome.SKIPPED

    # The map series arrives and completes: it gets its own analysis job and wakes the waiting job.
    node.store(phantom.map_files())
    queue = _RecordingQueue()
    (map_job_id,) = node.complete(phantom.map_series_uid(), queue)
    assert queue.jobs == [map_job_id, job_id]
    assert node.job(job_id)[:2] == (JobState.QUEUED, "")
    assert node.run(job_id) is JobOutcome.DONE
    assert node.job(job_id)[0] is JobState.DONE
    (slice_summary,) = node.result(job_id).summary["slices"]
    assert slice_summary["status"] == "scored" and slice_summary["reference"] == "staple"
    expected = _analysed(phantom, "trainee1", None, _all_contours(phantom, ("seg",)))
    assert slice_summary["dice_myocardium"] == pytest.approx(expected.dice_myocardium, abs=1e-3)


def _map_elsewhere(phantom: PhantomStudy, path: Path) -> Path:
    """A map image of the study, in a series of its own, 20 mm off the slice the readers drew on."""
    ds = pydicom.dcmread(phantom.map_files()[0])
    row, column = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    ds.ImagePositionPatient = [float(v) for v in np.asarray(ds.ImagePositionPatient, float)
                               + 20.0 * np.cross(row, column)]
    ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.1"
    ds.SeriesInstanceUID = f"{ds.SeriesInstanceUID}.1"
    ds.save_as(path)
    return path


def test_contours_on_none_of_the_stored_maps_keep_waiting(phantom: PhantomStudy, node: Node,
                                                          tmp_path: Path) -> None:
    # A map of the study that the reader did not draw on: the job waits for the one it did.
    node.store([_map_elsewhere(phantom, tmp_path / "map.dcm"), *phantom.contour_files("trainee1", "seg")])
    job_id = node.job_for(phantom.contour_series_uid("trainee1", "seg"))
    assert node.run(job_id) is JobOutcome.WAITING
    state, reason, _ = node.job(job_id)
    assert state is JobState.WAITING
    assert "no myocardium contour lies on a T1/T2 map" in reason and "(1 map images stored)" in reason

    # A restart queues it again: it finds no new map and waits again (not a loop of re-runs).
    queue = _RecordingQueue()
    assert requeue_unfinished(session_factory=node.factory, sink=queue).jobs == 1
    assert queue.jobs == [job_id] and node.job(job_id)[0] is JobState.QUEUED
    assert node.run(job_id) is JobOutcome.WAITING
    assert node.job(job_id)[:2] == (state, reason)
    with node.factory() as session:
        assert session.get(Job, job_id).attempts == 2


def test_a_map_stored_while_the_job_ran_runs_it_again_instead_of_waiting(phantom: PhantomStudy, node: Node,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    node.store(_all_contours(phantom, ("seg",)))
    job_id = node.job_for(phantom.contour_series_uid("trainee2", "seg"))
    compare = reader_job.compare_reader
    mark_waiting = reader_job.mark_waiting
    marked: list[tuple[bool, JobState]] = []

    def map_arrives_meanwhile(claimed: reader_job.ClaimedReaderJob, *args: object) -> object:
        if not claimed.map_paths:  # the job read no maps; the map is committed before it is marked WAITING
            node.store(phantom.map_files())
        return compare(claimed, *args)

    def spy(*args: object, **kwargs: object) -> bool:
        again = mark_waiting(*args, **kwargs)
        marked.append((again, node.job(job_id)[0]))
        return again

    monkeypatch.setattr(reader_job, "compare_reader", map_arrives_meanwhile)
    monkeypatch.setattr(reader_job, "mark_waiting", spy)
    # No wake-up reaches the job (its map series is not even complete yet): mark_waiting sees the map itself.
    assert node.run(job_id) is JobOutcome.DONE
    assert marked == [(True, JobState.QUEUED)]
    with node.factory() as session:
        job = session.get(Job, job_id)
        assert job.state is JobState.DONE and job.attempts == 2
    (slice_summary,) = node.result(job_id).summary["slices"]
    assert slice_summary["status"] == "scored"


def test_a_map_job_done_wakes_the_reader_jobs_waiting_for_the_node_s_map(phantom: PhantomStudy,
                                                                          node: Node) -> None:
    settings = node.settings.model_copy(update={"peers": []})  # nothing to deliver from the immediate queue
    tasks = register_tasks(NodeQueue(huey=MemoryHuey(immediate=True)), settings=settings,
                           session_factory=node.factory)
    # The scanner sends only raw images; the reader's contour (on the node's map) comes before the map job ran.
    node.store([*phantom.raw_files(), *_all_contours(phantom, ("seg",))])
    reader_job_id = node.job_for(phantom.contour_series_uid("trainee3", "seg"))
    tasks.enqueue_job(reader_job_id)
    assert node.job(reader_job_id)[0] is JobState.WAITING
    (map_job,) = node.complete(phantom.sidecar["sequences"][0]["series"]["magnitude"]["series_instance_uid"],
                               tasks)
    with node.factory() as session:
        assert session.get(Job, map_job).state is JobState.DONE
        assert session.get(Job, reader_job_id).state is JobState.DONE
    map_result = node.result(map_job)
    (mr_map_path,) = [path for path in map_result.paths if map_result.summary["mr_map_series_uid"] in path]
    mr_map = pydicom.dcmread(node.settings.storage_root / mr_map_path, stop_before_pixels=True)
    (slice_summary,) = node.result(reader_job_id).summary["slices"]
    assert slice_summary["status"] == "scored" and slice_summary["map_sop_instance_uid"] == mr_map.SOPInstanceUID


def test_queue_task_runs_reader_jobs_with_the_reader_job(phantom: PhantomStudy, node: Node) -> None:
    settings = node.settings.model_copy(update={"peers": []})  # nothing to deliver from the immediate queue
    node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",))])
    job_id = node.job_for(phantom.contour_series_uid("trainee2", "seg"))
    with node.factory() as session:
        assert session.get(Job, job_id).kind == JobKind.READER_SCORE.value
    tasks = register_tasks(NodeQueue(huey=MemoryHuey(immediate=True)), settings=settings,
                           session_factory=node.factory)
    tasks.enqueue_job(job_id)
    assert node.result(job_id).kind == RESULT_KIND
    with node.factory() as session:
        assert session.get(Job, job_id).state is JobState.DONE


def _study_id(node: Node, series_instance_uid: str) -> int:
    with node.factory() as session:
        return session.scalars(select(Series.study_id).where(Series.series_instance_uid == series_instance_uid)).one()


def _rescore(node: Node, series_instance_uid: str) -> list[int]:
    """Take the re-scoring decision for the study of the series, as the queue does after a reader job; the ids of
    the jobs it created (and queued)."""
    queue = _RecordingQueue()
    created = requeue_rescoring(_study_id(node, series_instance_uid),
                                gold_standard=gold_standard_reader(node.settings),
                                storage_root=node.settings.storage_root, session_factory=node.factory, sink=queue)
    assert queue.jobs == created
    return created


def _jobs_of(node: Node, series_instance_uid: str) -> list[int]:
    with node.factory() as session:
        return list(session.scalars(select(Job.id).join(Series)
                                    .where(Series.series_instance_uid == series_instance_uid).order_by(Job.id)))


def test_a_trainee_scored_before_the_gold_standard_arrives_is_scored_again_against_it(
        phantom: PhantomStudy, node: Node, tmp_path: Path) -> None:
    node.settings = _with_gold_standard(node.settings, "truth")
    stand_in = SimpleNamespace(consensus=_stand_in_consensus_model(tmp_path))
    trainee_uid = phantom.contour_series_uid("trainee1", "seg")
    # The trainee sends first: no gold standard yet, the consensus model gives the reference.
    node.store([*phantom.map_files(), *phantom.contour_files("trainee1", "seg")])
    first_job = node.job_for(trainee_uid)
    assert node.run(first_job, models=lambda: stand_in) is JobOutcome.DONE
    first = node.result(first_job)
    assert first.summary["slices"][0]["reference"] == CONSENSUS_MODEL_REFERENCE
    assert first.summary["reference"] == "consensus model"
    assert _rescore(node, trainee_uid) == []  # nothing changed

    # The supervisor's gold standard arrives and is "scored" (it is the reference): the trainee is queued again.
    truth_uid = phantom.contour_series_uid("truth", "seg")
    node.store(phantom.contour_files("truth", "seg"))
    assert node.run(node.job_for(truth_uid)) is JobOutcome.DONE
    (again,) = _rescore(node, truth_uid)
    assert _rescore(node, truth_uid) == []  # the same decision taken twice: one job
    assert _jobs_of(node, trainee_uid) == [first_job, again]
    with node.factory() as session:
        job = session.get(Job, again)
        assert job.kind == JobKind.READER_SCORE.value and job.state is JobState.QUEUED
        assert job.key.startswith(f"{trainee_uid}/0/reader_score/") and len(job.key.rsplit("/", 1)[1]) == 16
        # Even once that job has failed, the same reference does not score the trainee again.
        job.state = JobState.FAILED
        session.commit()
    assert _rescore(node, truth_uid) == []
    with node.factory() as session:
        session.get(Job, again).state = JobState.QUEUED
        session.commit()

    deliveries: list[int] = []
    assert node.run(again, deliveries) is JobOutcome.DONE
    second = node.result(again)
    (slice_summary,) = second.summary["slices"]
    assert slice_summary["reference"] == "gold_standard" and slice_summary["reference_readers"] == ["truth"]
    assert second.summary["reference"] == "gold standard truth"
    expected = _analysed(phantom, "trainee1", "truth", [*phantom.contour_files("trainee1", "seg"),
                                                        *phantom.contour_files("truth", "seg")])
    (sr,) = node.datasets(second, "sr")
    assert _sr_numbers(sr, codes.DICE) == [pytest.approx(expected.dice_myocardium, abs=1e-6)]
    # New outputs in new series, sent like the first; the first result stays as it was.
    (first_sr,) = node.datasets(first, "sr")
    assert sr.SeriesInstanceUID == second.output_series_uid != first.output_series_uid
    assert sr.SOPInstanceUID != first_sr.SOPInstanceUID and sr.SeriesNumber == first_sr.SeriesNumber
    assert node.result(first_job).summary == first.summary
    with node.factory() as session:
        sent = session.scalars(select(Transfer.sop_instance_uid).where(Transfer.result_id == second.id)).all()
    assert len(deliveries) == 2 and sr.SOPInstanceUID in sent
    assert _rescore(node, trainee_uid) == []

    # A second trainee arriving now re-scores nobody.
    trainee2_uid = phantom.contour_series_uid("trainee2", "seg")
    node.store(phantom.contour_files("trainee2", "seg"))
    assert node.run(node.job_for(trainee2_uid)) is JobOutcome.DONE
    assert node.result(_jobs_of(node, trainee2_uid)[0]).summary["slices"][0]["reference"] == "gold_standard"
    assert _rescore(node, trainee2_uid) == []
    with node.factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 4


def test_the_queue_scores_readers_again_when_a_second_expert_makes_a_consensus(phantom: PhantomStudy,
                                                                              node: Node) -> None:
    settings = node.settings.model_copy(update={"peers": []})  # nothing to deliver from the immediate queue
    tasks = register_tasks(NodeQueue(huey=MemoryHuey(immediate=True)), settings=settings,
                           session_factory=node.factory)
    trainee_uid = phantom.contour_series_uid("trainee1", "seg")
    expert1_uid = phantom.contour_series_uid("expert1", "seg")
    expert2_uid = phantom.contour_series_uid("expert2", "rtstruct")
    node.store([*phantom.map_files(), *phantom.contour_files("trainee1", "seg"),
                *phantom.contour_files("expert1", "seg")])
    # The trainee and a first expert: one expert is no consensus; both are scored against the consensus model.
    (trainee_job,) = node.complete(trainee_uid, tasks)
    (expert1_job,) = node.complete(expert1_uid, tasks)
    for job_id in (trainee_job, expert1_job):
        assert node.result(job_id).summary["slices"][0]["reference"] == CONSENSUS_MODEL_REFERENCE

    # The second expert's job finishes: the trainee and the first expert are scored again, against both experts.
    node.store(phantom.contour_files("expert2", "rtstruct"))
    (expert2_job,) = node.complete(expert2_uid, tasks)
    sent = [*phantom.contour_files("trainee1", "seg"), *phantom.contour_files("expert1", "seg"),
            *phantom.contour_files("expert2", "rtstruct")]
    for reader, series_uid, first_job in (("trainee1", trainee_uid, trainee_job),
                                          ("expert1", expert1_uid, expert1_job)):
        jobs = _jobs_of(node, series_uid)
        assert len(jobs) == 2 and jobs[0] == first_job
        assert node.job(jobs[1])[0] is JobState.DONE
        assert node.result(first_job).summary["slices"][0]["reference"] == CONSENSUS_MODEL_REFERENCE
        (slice_summary,) = node.result(jobs[1]).summary["slices"]
        assert slice_summary["reference"] == "staple"
        assert slice_summary["reference_readers"] == ["expert1", "expert2"]
        expected = _analysed(phantom, reader, None, sent)
        assert slice_summary["dice_myocardium"] == pytest.approx(expected.dice_myocardium, abs=1e-3)
    assert _jobs_of(node, expert2_uid) == [expert2_job]
    assert node.result(expert2_job).summary["reference"] == "expert consensus of expert1, expert2"

    # A second trainee changes no one's reference: its own job is the only new one.
    node.store(phantom.contour_files("trainee2", "seg"))
    with node.factory() as session:
        n_jobs = session.scalar(select(func.count()).select_from(Job))
    (trainee2_job,) = node.complete(phantom.contour_series_uid("trainee2", "seg"), tasks)
    with node.factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == n_jobs + 1
        assert {job.state for job in session.scalars(select(Job))} == {JobState.DONE}
    assert node.result(trainee2_job).summary["slices"][0]["reference"] == "staple"


def test_a_failed_rescore_leaves_the_series_as_its_first_score_left_it(
        phantom: PhantomStudy, node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node.settings = _with_gold_standard(node.settings, "truth")
    stand_in = SimpleNamespace(consensus=_stand_in_consensus_model(tmp_path))
    trainee_uid = phantom.contour_series_uid("trainee1", "seg")
    node.store([*phantom.map_files(), *phantom.contour_files("trainee1", "seg")])
    assert node.run(node.job_for(trainee_uid), models=lambda: stand_in) is JobOutcome.DONE
    truth_uid = phantom.contour_series_uid("truth", "seg")
    node.store(phantom.contour_files("truth", "seg"))
    assert node.run(node.job_for(truth_uid)) is JobOutcome.DONE
    (again,) = _rescore(node, truth_uid)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("dicomnode.jobs.reader_job.write_comparison", broken)
    assert node.run(again) is JobOutcome.FAILED
    with node.factory() as session:
        job = session.get(Job, again)
        assert job.state is JobState.FAILED and "disk full" in job.error
        series = session.scalar(select(Series).where(Series.series_instance_uid == trainee_uid))
        assert series.state is SeriesState.DONE
