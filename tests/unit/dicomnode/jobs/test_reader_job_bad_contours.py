"""One bad contour object in a study (a real RT Structure Set with an empty Contour Data) is one problem noted
for that object: every other reader of the study is still scored against the experts' consensus, and the bad
object's own job fails saying why instead of waiting for a map."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from dicomnode.analysis.study import analyze_paths
from dicomnode.jobs.map_job import JobOutcome
from tests.shared_data import SHARED_DATA
from tests.unit.dicomnode.jobs import test_reader_job as reader_job_tests
from tests.unit.dicomnode.jobs.test_reader_job import Node, PhantomStudy, _all_contours

phantom = reader_job_tests.phantom
node = reader_job_tests.node

BAD_READER = "expert9"


def bad_rtstruct(phantom: PhantomStudy, folder: Path) -> tuple[Path, str]:
    """The shared rt-utils RT Structure Set moved into the phantom's study as a further expert's, with the Contour
    Data of its first contour emptied; its path and series UID."""
    ds = pydicom.dcmread(SHARED_DATA / "rtstruct" / "rt.dcm")
    study = pydicom.dcmread(phantom.map_files()[0], stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber"):
        setattr(ds, keyword, study.get(keyword))
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ContentCreatorName = BAD_READER
    ds.ROIContourSequence[0].ContourSequence[0].ContourData = None
    path = folder / "bad_rtstruct.dcm"
    ds.save_as(path)
    return path, str(ds.SeriesInstanceUID)


def test_offline_analysis_notes_the_bad_object_and_scores_everyone_else(phantom: PhantomStudy,
                                                                          tmp_path: Path) -> None:
    bad, _ = bad_rtstruct(phantom, tmp_path)
    report = analyze_paths([*phantom.map_files(), *_all_contours(phantom, ("seg",)), bad], gold_standard=None,
                           models=None)
    (problem,) = report.problems
    assert problem.where.endswith(pydicom.dcmread(bad).SOPInstanceUID)
    assert "ContourData" in problem.message
    (slice_result,) = report.slices
    assert slice_result.reference_readers == ("expert1", "expert2", "expert3")
    scored = {r.reader for r in slice_result.readers if r.score is not None}
    assert {"trainee1", "trainee2", "trainee3", "trainee4", "truth"} <= scored


def test_reader_jobs_of_the_study_are_scored_and_the_bad_object_s_job_fails_saying_why(
    phantom: PhantomStudy, node: Node, tmp_path: Path
) -> None:
    bad, bad_series = bad_rtstruct(phantom, tmp_path)
    node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",)), bad])
    for reader in ("trainee3", "truth", "expert1"):
        job_id = node.job_for(phantom.contour_series_uid(reader, "seg"))
        assert node.run(job_id) is JobOutcome.DONE, node.job(job_id)
        summary = node.result(job_id).summary
        (figures,) = summary["slices"]
        assert figures["status"] == "scored", figures
        assert figures["reference_readers"] == ["expert1", "expert2", "expert3"]
        assert any("ContourData" in problem for problem in summary["problems"])

    bad_job = node.job_for(bad_series)
    assert node.run(bad_job) is JobOutcome.FAILED
    state, error, _ = node.job(bad_job)
    assert "ContourData" in error and "TypeError" not in error
