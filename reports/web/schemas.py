"""What the JSON API returns: public models, separate from the database tables they are read from."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlalchemy import inspect

from db.models import Base, JobState, Result, Series, SeriesRole, SeriesState, Study, Transfer, TransferState
from reports.result_summary import AnalysisFigures, ResultOutputs


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time the node stores is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SeriesSummary(_FromRow):
    series_instance_uid: str
    series_number: int | None
    modality: str
    description: str
    role: SeriesRole
    state: SeriesState
    n_instances: int
    expected_instances: int | None
    last_received_at: UtcDatetime


class StudySummary(_FromRow):
    study_instance_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    accession_number: str
    n_series: int
    created_at: UtcDatetime


class StudyDetail(StudySummary):
    series: list[SeriesSummary]


class TransferPublic(_FromRow):
    id: int
    result_id: int
    sop_instance_uid: str
    ae_title: str
    host: str
    port: int
    state: TransferState
    attempts: int
    next_attempt_at: UtcDatetime
    last_error: str
    sent_at: UtcDatetime | None


class TransferListed(TransferPublic):
    """A transfer with the source series it was produced from (for links on the transfers page)."""

    result_kind: str
    source_series_instance_uid: str


class ResultPublic(_FromRow):
    id: int
    kind: str
    output_series_uid: str
    n_files: int
    summary: dict
    created_at: UtcDatetime
    transfers: list[TransferPublic]


class ResultFile(BaseModel):
    """One downloadable output object of a result."""

    index: int  # position in the result's file list: GET /results/{id}/files/{index}
    kind: str  # maps, sr, seg, sc, or "other" for a file no output list names
    name: str
    url: str


class ResultImage(BaseModel):
    """One Secondary Capture of a result, shown as PNG."""

    index: int  # position in ``outputs.sc``: GET /results/{id}/images/{index}.png
    name: str
    url: str


class ResultDetail(ResultPublic):
    """A result with its analysis read from the summary, its files and its images (GET /api/results/{id})."""

    job_id: int
    series_instance_uid: str
    study_instance_uid: str
    figures: dict[str, Any]  # the summary's map figures: everything but ``analysis`` and ``outputs``
    analysis: AnalysisFigures | None  # None for results without analysis, or whose summary could not be read
    attention: bool  # a slice failed, shows motion or has doubtful contours
    outputs: ResultOutputs
    files: list[ResultFile]
    images: list[ResultImage]


class JobPublic(_FromRow):
    id: int
    kind: str
    series_revision: int
    state: JobState
    attempts: int
    error: str
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    results: list[ResultPublic]


class SeriesDetail(SeriesSummary):
    study_instance_uid: str
    manufacturer: str
    revision: int
    calling_ae: str
    calling_host: str
    first_received_at: UtcDatetime
    completed_at: UtcDatetime | None
    jobs: list[JobPublic]


class Health(BaseModel):
    status: str  # "ok", or "failing" with the reasons in ``problems``
    problems: list[str]
    database_reachable: bool
    storage_free_mb: float | None
    storage_min_free_mb: int
    jobs_waiting: int | None
    transfers_pending: int | None
    transfers_given_up: int | None


def series_summary(series: Series) -> SeriesSummary:
    return SeriesSummary.model_validate(series)


def study_summary(study: Study) -> StudySummary:
    return StudySummary.model_validate(
        {**_columns(study), "n_series": len(study.series)},
    )


def study_detail(study: Study) -> StudyDetail:
    return StudyDetail.model_validate(
        {
            **_columns(study),
            "n_series": len(study.series),
            "series": [series_summary(s) for s in study.series],
        }
    )


def result_public(result: Result) -> ResultPublic:
    return ResultPublic.model_validate(
        {
            **_columns(result),
            "n_files": len(result.paths or []),
            "transfers": [TransferPublic.model_validate(t) for t in result.transfers],
        }
    )


def series_detail(series: Series) -> SeriesDetail:
    jobs = [
        JobPublic.model_validate({**_columns(job), "results": [result_public(r) for r in job.results]})
        for job in sorted(series.jobs, key=lambda job: job.id)
    ]
    return SeriesDetail.model_validate(
        {**_columns(series), "study_instance_uid": series.study.study_instance_uid, "jobs": jobs}
    )


def transfer_listed(transfer: Transfer) -> TransferListed:
    return TransferListed.model_validate(
        {
            **_columns(transfer),
            "result_kind": transfer.result.kind,
            "source_series_instance_uid": transfer.result.job.series.series_instance_uid,
        }
    )


def _columns(row: Base) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in inspect(row).mapper.column_attrs}
