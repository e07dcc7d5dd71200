"""What the JSON API returns: public models, separate from the database tables they are read from."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlalchemy import inspect

from db.models import Base, JobState, Result, Series, SeriesRole, SeriesState, Study, Transfer, TransferState
from reports.result_summary import AnalysisFigures, ResultOutputs
from reports.web.verdicts import StudyVerdicts, Verdict, VerdictKind, study_verdicts


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time the node stores is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class VerdictPublic(BaseModel):
    """What a series or study needs (:mod:`reports.web.verdicts`): its kind, a short label and the detail."""

    kind: VerdictKind
    label: str
    detail: str

    @classmethod
    def of(cls, verdict: Verdict) -> VerdictPublic:
        return cls(kind=verdict.kind, label=verdict.label, detail=verdict.detail)


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
    verdict: VerdictPublic | None = None  # None where the series' jobs were not read


class StudySummary(_FromRow):
    id: int  # the keyset of the studies list: GET /api/studies?before=<id> gives the next page
    study_instance_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    accession_number: str
    n_series: int
    created_at: UtcDatetime
    verdict: VerdictPublic | None = None  # None where the series' jobs were not read


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
    object_kind: str  # what the file is: sr, seg, sc, maps, reader_sc, ... (the result's output list naming it)
    file_name: str


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


class ModelRuntimePublic(BaseModel):
    """Where one host's models run, as the process that loaded them found it (inference/runtime_status.py)."""

    host: str
    pid: int
    loaded_at: datetime
    device_asked: str  # [models] device: auto, cpu or cuda
    providers: dict[str, str]  # model name -> the execution provider its session really runs on
    summary: str  # e.g. "CPUExecutionProvider"


class Health(BaseModel):
    status: str  # "ok"; "degraded" (works, needs a look) or "failing" (cannot take work), reasons in ``problems``
    problems: list[str]
    database_reachable: bool
    storage_free_mb: float | None
    storage_min_free_mb: int
    jobs_waiting: int | None
    transfers_pending: int | None
    transfers_given_up: int | None
    #: The newest record of each host whose processes loaded the models; empty until one has (they load at start).
    models: list[ModelRuntimePublic] = []


def series_summary(series: Series, verdict: Verdict | None = None) -> SeriesSummary:
    return SeriesSummary.model_validate(
        {**_columns(series), "verdict": None if verdict is None else VerdictPublic.of(verdict)})


def study_summary(study: Study, verdicts: StudyVerdicts | None = None) -> StudySummary:
    """A study's row; ``verdicts`` computed when not given (its series, jobs and results are then read)."""
    verdicts = verdicts or study_verdicts(study)
    return StudySummary.model_validate(
        {**_columns(study), "n_series": len(study.series), "verdict": VerdictPublic.of(verdicts.study)},
    )


def study_detail(study: Study) -> StudyDetail:
    verdicts = study_verdicts(study)
    return StudyDetail.model_validate(
        {
            **_columns(study),
            "n_series": len(study.series),
            "verdict": VerdictPublic.of(verdicts.study),
            "series": [series_summary(s, verdicts.series[s.series_instance_uid]) for s in study.series],
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


def series_detail(series: Series, verdict: Verdict | None = None) -> SeriesDetail:
    jobs = [
        JobPublic.model_validate({**_columns(job), "results": [result_public(r) for r in job.results]})
        for job in sorted(series.jobs, key=lambda job: job.id)
    ]
    return SeriesDetail.model_validate(
        {**_columns(series), "study_instance_uid": series.study.study_instance_uid, "jobs": jobs,
         "verdict": None if verdict is None else VerdictPublic.of(verdict)}
    )


def transfer_listed(transfer: Transfer) -> TransferListed:
    return TransferListed.model_validate(
        {
            **_columns(transfer),
            "result_kind": transfer.result.kind,
            "source_series_instance_uid": transfer.result.job.series.series_instance_uid,
            "object_kind": object_kind(transfer.result, transfer.path),
            "file_name": PurePosixPath(transfer.path).name,
        }
    )


#: The result kind whose Secondary Captures are routed as ``reader_sc`` (overlays of a reader's contours), though
#: its summary lists them as ``sc`` like a map analysis' console images.
READER_RESULT_KIND = "reader_score"


def object_kind(result: Result, path: str) -> str:
    """What the file ``path`` of ``result`` is: the name of the output list that names it in the result's summary
    (``maps``, ``sr``, ``seg``, ``sc``, or any list a newer node writes, e.g. ``pdf``); ``reader_sc`` for a reader
    score's images; "other" when no list names it."""
    outputs = (result.summary or {}).get("outputs")
    if isinstance(outputs, dict):
        for name, paths in outputs.items():
            if isinstance(paths, list) and path in paths:
                return "reader_sc" if name == "sc" and result.kind == READER_RESULT_KIND else str(name)
    return "other"


def _columns(row: Base) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in inspect(row).mapper.column_attrs}
