"""What the reader job records for the training programme: the reader registered through the aliases, and the
figures the dashboards and the accreditation read (segment differences, T1 mean, Dice against the other readers,
the overlay)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from sqlalchemy import select

from db.models import Reader, ReaderAlias
from dicomnode.analysis.study import analyze_paths
from dicomnode.jobs.map_job import JobOutcome
from reports.programme.queries import trainee_progress
from tests.unit.dicomnode.jobs import test_reader_job as reader_job_tests
from tests.unit.dicomnode.jobs.test_reader_job import Node, PhantomStudy, _all_contours

# The reader job's tests' phantom study and node, shared.
phantom = reader_job_tests.phantom
node = reader_job_tests.node


def test_summary_holds_the_programme_figures_and_the_reader_is_registered(phantom: PhantomStudy,
                                                                          node: Node) -> None:
    node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",))])
    job_id = node.job_for(phantom.contour_series_uid("trainee3", "seg"))
    assert node.run(job_id) is JobOutcome.DONE
    summary = node.result(job_id).summary
    (figures,) = summary["slices"]

    report = analyze_paths([*phantom.map_files(), *_all_contours(phantom, ("seg",))], gold_standard=None,
                           models=None)
    (slice_result,) = report.slices
    own = next(r for r in slice_result.readers if r.reader == "trainee3")
    experts = [r for r in slice_result.readers if r.reader in slice_result.reference_readers]
    assert figures["map_mean_ms"] == pytest.approx(own.myocardium.mean_ms, abs=0.05)
    assert set(figures["segment_map_differences_ms"]) == {str(n) for n in own.segments}
    for number, difference in figures["segment_map_differences_ms"].items():
        expected = own.segments[int(number)].mean_ms - sum(
            e.segments[int(number)].mean_ms for e in experts) / len(experts)
        assert difference == pytest.approx(expected, abs=0.05)
    others = {r.reader for r in slice_result.readers} - {"trainee3"}
    assert set(figures["peer_dice"]) == others
    assert all(0.0 < value <= 1.0 for value in figures["peer_dice"].values())
    # The overlay as PNG beside its Secondary Capture, with the same pixels.
    assert figures["overlay"] == summary["outputs"]["sc"][0].removesuffix(".dcm") + ".png"
    capture = pydicom.dcmread(node.settings.storage_root / summary["outputs"]["sc"][0])
    with Image.open(node.settings.storage_root / figures["overlay"]) as png:
        assert np.array_equal(np.asarray(png.convert("RGB")), capture.pixel_array)

    with node.factory() as session:
        reader = session.scalars(select(Reader).where(Reader.name == "trainee3")).one()
        assert reader.role == "trainee"
        # The programme's queries read the same record back as the trainee's attempt.
        (attempt,) = trainee_progress(session, "trainee3").attempts
    assert attempt.study_instance_uid == pydicom.dcmread(phantom.map_files()[0]).StudyInstanceUID
    assert (attempt.attempt_number, attempt.reference_policy) == (1, "expert_staple")
    assert attempt.dice == figures["dice_myocardium"] and attempt.error_mode == figures["error_mode"]
    assert attempt.segment_t1_differences_ms == {
        int(n): v for n, v in figures["segment_map_differences_ms"].items()}
    assert attempt.overlay_png == figures["overlay"]


def test_reader_job_matches_the_reader_through_an_alias(phantom: PhantomStudy, node: Node) -> None:
    with node.factory.begin() as session:
        person = Reader(name="Jane Roe", role="trainee", team="north")
        session.add(person)
        session.flush()
        session.add(ReaderAlias(pattern="TRAINEE*", reader_id=person.id))
    node.store([*phantom.map_files(), *_all_contours(phantom, ("seg",))])
    job_id = node.job_for(phantom.contour_series_uid("trainee3", "seg"))
    assert node.run(job_id) is JobOutcome.DONE
    with node.factory() as session:
        # No reader row is made for the DICOM name: the alias says who it is.
        assert session.scalars(select(Reader.name)).all() == ["Jane Roe"]
