"""The one reference rule everywhere: for the same study, training case and readers, the offline analysis, the
re-scoring decision and the reader job score a reader against the same reference; and the reader job reads each
contour file once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from sqlalchemy import select

from db.models import Reader, ReaderRole, ReferencePolicy, TrainingCase, TrainingSet
from dicomnode.analysis.reference import ReferenceSource
from dicomnode.analysis.study import analyze_datasets, files_under, read_files
from dicomnode.jobs import reader_job as reader_job_module
from dicomnode.jobs.map_job import JobOutcome
from dicomnode.jobs.reference_inputs import reference_inputs
from dicomnode.jobs.rescoring import labelled, study_contours, study_reference
from tests.unit.dicomnode.jobs import test_reader_job as reader_job_tests
from tests.unit.dicomnode.jobs.test_reader_job import Node, PhantomStudy, _all_contours, _stand_in_consensus_model

phantom = reader_job_tests.phantom
node = reader_job_tests.node

SCORED = "trainee4"  # a closed ring: the stand-in consensus model hands it back with a cavity

# (case policy or None for no training case, its gold standard reader, auto consensus, site gold standard)
SETUPS = {
    "automatic, experts": (None, None, True, None),
    "automatic, the site's gold standard": ("automatic", None, True, "truth"),
    "case gold standard": (ReferencePolicy.GOLD_STANDARD, "truth", True, None),
    "case experts' STAPLE": (ReferencePolicy.EXPERT_STAPLE, None, True, "truth"),
    "case team average": (ReferencePolicy.TEAM_AVERAGE, None, True, None),
    "case consensus model": (ReferencePolicy.CONSENSUS_MODEL, None, True, None),
}


def _configure(node: Node, study_uid: str, setup: tuple) -> None:
    policy, gold, auto, site_gold = setup
    node.settings = reader_job_tests._with_gold_standard(node.settings, site_gold or "")
    with node.factory() as session:
        for name in ("trainee1", "trainee2", "trainee3", "trainee4"):
            session.add(Reader(name=name, role=ReaderRole.TRAINEE.value, team="A"))
        if policy is not None:
            training_set = TrainingSet(name="set", auto_consensus=auto)
            session.add(training_set)
            session.flush()
            session.add(TrainingCase(training_set_id=training_set.id, study_instance_uid=study_uid, label="case 1",
                                     reference_policy=None if policy == "automatic" else policy.value,
                                     gold_standard_reader=gold))
        session.commit()


@pytest.mark.parametrize("setup", list(SETUPS), ids=list(SETUPS))
def test_analysis_rescoring_and_the_reader_job_choose_the_same_reference(
    setup: str, phantom: PhantomStudy, node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [*phantom.map_files(), *_all_contours(phantom, ("seg",))]
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    _configure(node, study_uid, SETUPS[setup])
    node.store(files)
    with node.factory() as session:
        inputs = reference_inputs(session, study_uid)
        (series_id,) = [s.id for s in session.scalars(select(reader_job_tests.Series)) if
                        s.series_instance_uid == phantom.contour_series_uid(SCORED, "seg")]
        study_id = reader_job_tests._study_id(node, phantom.map_series_uid())
        contours = {sid: labelled(items)
                    for sid, items in study_contours(session, study_id, node.settings.storage_root).items()}
    rule = inputs.rule(reader_job_module.gold_standard_reader(node.settings))

    # The offline analysis, given the same rule.
    datasets, _ = read_files(files_under(files))
    (slice_result,) = analyze_datasets(datasets, rule=rule).report.slices
    analysed = next(r for r in slice_result.readers if r.reader == SCORED)
    # The re-scoring decision, at study level.
    others = [item for sid, items in contours.items() if sid != series_id for item in items]
    decided = study_reference(SCORED, others, rule=rule)
    assert (decided.source, decided.readers) == (analysed.reference.value, analysed.reference_readers)

    # The reader job, reading the training case and the readers' teams from the database; each file read once.
    reads: Counter[str] = Counter()
    real_read = pydicom.dcmread

    def counting_read(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        reads[str(path)] += 1
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(reader_job_module.pydicom, "dcmread", counting_read)
    model = _stand_in_consensus_model(tmp_path)
    job_id = node.job_for(phantom.contour_series_uid(SCORED, "seg"))
    assert node.run(job_id, models=lambda: SimpleNamespace(consensus=model)) is JobOutcome.DONE
    (figures,) = node.result(job_id).summary["slices"]
    assert figures["status"] == "scored", figures["notes"]
    assert (figures["reference"], tuple(figures["reference_readers"])) == \
        (analysed.reference.value, analysed.reference_readers)
    if analysed.score is not None:  # readers' contours: the job's figure is the analysis'
        assert figures["dice_myocardium"] == pytest.approx(analysed.score.dice_myocardium, abs=1e-3)
    assert reads and max(reads.values()) == 1, reads

    expected = {
        "automatic, experts": ReferenceSource.STAPLE,
        "automatic, the site's gold standard": ReferenceSource.GOLD_STANDARD,
        "case gold standard": ReferenceSource.GOLD_STANDARD,
        "case experts' STAPLE": ReferenceSource.STAPLE,
        "case team average": ReferenceSource.TEAM_AVERAGE,
        "case consensus model": ReferenceSource.CONSENSUS_MODEL,
    }[setup]
    assert analysed.reference is expected
    if expected is ReferenceSource.TEAM_AVERAGE:
        assert analysed.reference_readers == ("trainee1", "trainee2", "trainee3")
