"""The result contract: what the jobs store is what the page and the API read back, and a row that breaks the
contract is refused with the reason."""

from __future__ import annotations

import pydantic
import pytest

from reports.result_summary import (
    READER_SCORE_KIND,
    AnalysisFigures,
    MapResultSummary,
    ReaderResultSummary,
    ReaderSliceFigures,
    RegionFigures,
    ResultOutputs,
    SliceFigures,
    read_summary,
    rounded,
    summary_json,
)


def _map_summary() -> MapResultSummary:
    analysed = SliceFigures(index=0, status="analysed", banner="No motion artefact detected", map_kind="T1",
                            level="mid", myocardium=RegionFigures(mean_ms=1201.5),
                            segments={7: RegionFigures(mean_ms=1190.0, motion_probability=0.12)})
    return MapResultSummary(
        kind="T1", method="MOLLI", scheme="molli", slices=2, valid_pixels=900, valid_fraction_of_fitted=0.9,
        median_ms=1190.0, mr_map_series_uid="2.25.1", source_revision=2,
        analysis=AnalysisFigures(banner="No motion artefact detected",
                                 slices=[analysed, SliceFigures.failed(1, "no myocardium", "Analysis not possible")]),
        outputs=ResultOutputs(maps=["outputs/a.dcm"], sc=["outputs/b.dcm"]),
    )


def test_a_map_summary_reads_back_as_stored() -> None:
    stored = summary_json(_map_summary())
    # JSON keys are strings; only what the job set is recorded (no nulls for parts that do not apply).
    assert stored["analysis"]["slices"][0]["segments"] == {"7": {"mean_ms": 1190.0, "motion_probability": 0.12}}
    assert stored["analysis"]["slices"][1] == {"index": 1, "status": "failed", "reason": "no myocardium",
                                               "banner": "Analysis not possible"}
    assert "reports_error" not in stored
    read = read_summary("t1_map", stored)
    assert read == _map_summary()
    assert isinstance(read, MapResultSummary) and read.analysis is not None and read.analysis.needs_attention
    assert read.figures()["median_ms"] == 1190.0 and "analysis" not in read.figures()


def test_a_reader_summary_reads_back_by_its_kind() -> None:
    summary = ReaderResultSummary(reader="trainee1", reference="expert consensus", reference_digest="ab12",
                                  slices=[ReaderSliceFigures(map_sop_instance_uid="1.2", map_kind="t1", level="mid",
                                                             status="scored", dice_myocardium=0.81)])
    read = read_summary(READER_SCORE_KIND, summary_json(summary))
    assert isinstance(read, ReaderResultSummary) and read.reference_digest == "ab12"
    assert read.slices[0].dice_myocardium == 0.81


def test_a_summary_that_breaks_the_contract_is_refused_with_the_reason() -> None:
    stored = summary_json(_map_summary())
    stored["analysis"]["slices"][0]["status"] = "lost"
    with pytest.raises(pydantic.ValidationError, match="analysed"):
        read_summary("t1_map", stored)
    assert read_summary("t1_map", {}) is None
    # Rows of older nodes: unknown keys are ignored, missing optional parts take their defaults.
    older = {key: value for key, value in summary_json(_map_summary()).items() if key != "outputs"}
    read = read_summary("t1_map", {**older, "retired_figure": 3})
    assert isinstance(read, MapResultSummary) and read.outputs == ResultOutputs()


def test_rounding_leaves_no_nan_for_json() -> None:
    assert rounded(float("nan")) is None and rounded(None) is None and rounded(1.26, 1) == 1.3
