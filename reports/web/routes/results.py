"""Results: GET /api/results/{id}, a result's Secondary Captures as PNG, downloads of its output objects, and the
retry of its transfers from the series page.

Files are served only from the result's own list (``Result.paths``, relative to the storage root), addressed by
their position in it; a path never comes from the request.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from PIL import Image
from pydantic import ValidationError
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from starlette.responses import Response

from config.settings import Settings
from db.models import Job, Result, Series, Transfer
from reports.result_summary import MapResultSummary, ResultOutputs, ResultSummary, read_summary
from reports.web.deps import SessionDep, SettingsDep, TemplatesDep, render_error
from reports.web.routes.transfers import RetrierDep, retry_for_page
from reports.web.schemas import ResultDetail, ResultFile, ResultImage, TransferPublic

LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["results"])

#: Keys of a result's summary that are not its figures (read when a summary does not fit the contract).
ANALYSIS_KEY = "analysis"
OUTPUTS_KEY = "outputs"
DICOM_MEDIA_TYPE = "application/dicom"
#: Names of the AHA 17-segment model (Cerqueira et al. 2002), for the measurement tables.
AHA_SEGMENT_NAMES: dict[int, str] = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral", 7: "mid anterior", 8: "mid anteroseptal",
    9: "mid inferoseptal", 10: "mid inferior", 11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral", 17: "apex",
}

ResultId = Annotated[int, PathParam(ge=1, description="result id")]
Position = Annotated[int, PathParam(ge=0, description="position in the result's list, from 0")]


class ResultFileError(LookupError):
    """A result file that is not listed, not under the storage root, or not on disk."""


def get_result(session: Session, *, result_id: int) -> Result | None:
    """A result with its transfers, job, series and study loaded."""
    return session.scalar(
        select(Result)
        .options(
            selectinload(Result.transfers),
            selectinload(Result.job).selectinload(Job.series).selectinload(Series.study),
        )
        .where(Result.id == result_id)
    )


def read_result_summary(result: Result) -> ResultSummary | None:
    """The result's typed summary; None when it has none or it does not fit the contract (logged: the page then
    shows its raw figures and its files)."""
    try:
        return read_summary(result.kind, result.summary)
    except ValidationError as error:
        LOGGER.warning("result %d: summary not readable (%d errors): %s", result.id, error.error_count(),
                       error.errors()[0]["msg"])
        return None


def read_outputs(result: Result, summary: ResultSummary | None) -> ResultOutputs:
    """The output lists of a result (``summary``: its typed summary, when readable); empty lists when absent or
    unreadable."""
    if summary is not None:
        return summary.outputs
    try:
        return ResultOutputs.model_validate((result.summary or {}).get(OUTPUTS_KEY) or {})
    except ValidationError:
        return ResultOutputs()


def file_kind(path: str, outputs: ResultOutputs) -> str:
    """Which output list names ``path`` (maps, sr, seg, sc), or "other"."""
    for kind in ("maps", "sr", "seg", "sc"):
        if path in getattr(outputs, kind):
            return kind
    return "other"


def result_detail(result: Result, request: Request) -> ResultDetail:
    """What the page and GET /api/results/{id} show of one result (its job, series and study loaded)."""
    typed = read_result_summary(result)
    outputs = read_outputs(result, typed)
    paths = list(result.paths or [])
    listed = set(paths)
    files = [
        ResultFile(
            index=index,
            kind=file_kind(path, outputs),
            name=Path(path).name,
            url=request.app.url_path_for("result_file", result_id=result.id, n=index),
        )
        for index, path in enumerate(paths)
    ]
    images = [
        ResultImage(
            index=index,
            name=Path(path).name,
            url=request.app.url_path_for("result_image", result_id=result.id, n=index),
        )
        for index, path in enumerate(outputs.sc)
        if path in listed  # an image the result does not list as its file is never served
    ]
    series = result.job.series
    summary = result.summary or {}
    analysis = typed.analysis if isinstance(typed, MapResultSummary) else None
    figures = typed.figures() if typed is not None else \
        {key: value for key, value in summary.items() if key not in (ANALYSIS_KEY, OUTPUTS_KEY)}
    return ResultDetail(
        id=result.id,
        job_id=result.job_id,
        kind=result.kind,
        output_series_uid=result.output_series_uid,
        n_files=len(paths),
        summary=summary,
        created_at=result.created_at,
        transfers=[TransferPublic.model_validate(t) for t in sorted(result.transfers, key=lambda t: t.id)],
        series_instance_uid=series.series_instance_uid,
        study_instance_uid=series.study.study_instance_uid,
        figures=figures,
        analysis=analysis,
        attention=analysis is not None and analysis.needs_attention,
        outputs=outputs,
        files=files,
        images=images,
    )


def stored_file(settings: Settings, result: Result, relative_path: str) -> Path:
    """The absolute path of one of the result's files.

    Raises
    ------
    ResultFileError
        If the result does not list ``relative_path``, it points outside the storage root, or the file is gone.
    """
    if relative_path not in (result.paths or []):
        raise ResultFileError(f"result {result.id} has no file {relative_path}")
    root = settings.storage_root.resolve()
    path = (root / relative_path).resolve()
    if not path.is_relative_to(root):
        raise ResultFileError(f"file {relative_path} of result {result.id} lies outside the storage folder")
    if not path.is_file():
        raise ResultFileError(f"file {relative_path} of result {result.id} is no longer on disk")
    return path


def dicom_image_png(path: Path) -> bytes:
    """The first frame of a DICOM image as 8-bit PNG: RGB as stored (YBR decoded to RGB by pydicom), palette
    colour through its lookup table, greyscale stretched over its own range (MONOCHROME1 inverted).

    Raises
    ------
    ValueError
        If the file is not a DICOM image pydicom can decode.
    """
    try:
        dataset = dcmread(path)
        pixels = dataset.pixel_array
    # pydicom raises NotImplementedError or RuntimeError for pixel data it has no decoder for.
    except (InvalidDicomError, AttributeError, NotImplementedError, RuntimeError) as error:
        raise ValueError(f"{path.name} is not a decodable DICOM image: {error}") from error
    samples = int(dataset.get("SamplesPerPixel", 1))
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        pixels, samples = apply_color_lut(pixels, dataset), 3
    if samples == 3:
        if pixels.dtype != np.uint8:  # 16-bit colour (rare in SC): keep the high byte
            pixels = (pixels.astype(np.float64) * 255.0 / float(np.iinfo(pixels.dtype).max)).round()
        image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="RGB")
    else:
        values = pixels.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        if photometric == "MONOCHROME1":
            scaled = 255.0 - scaled
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _not_found(result_id: int) -> str:
    return f"no result with id {result_id}"


def _result_or_404(session: Session, result_id: int) -> Result:
    result = get_result(session, result_id=result_id)
    if result is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_not_found(result_id))
    return result


def _stored_or_404(settings: Settings, result: Result, relative_path: str) -> Path:
    try:
        return stored_file(settings, result, relative_path)
    except ResultFileError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(error)) from error


@router.get(
    "/api/results/{result_id}", response_model=ResultDetail, responses={404: {"description": "unknown result"}}
)
def api_get_result(result_id: ResultId, request: Request, session: SessionDep) -> ResultDetail:
    """One result: map figures, the analysis of each slice, its files and images, and its transfers."""
    return result_detail(_result_or_404(session, result_id), request)


@router.get(
    "/results/{result_id}/images/{n}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown result or image"}},
)
def result_image(result_id: ResultId, n: Position, session: SessionDep, settings: SettingsDep) -> Response:
    """Secondary Capture ``n`` of the result (its position in ``outputs.sc``) as PNG."""
    result = _result_or_404(session, result_id)
    images = read_outputs(result, read_result_summary(result)).sc
    if n >= len(images):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"result {result_id} has {len(images)} images, no image {n}"
        )
    path = _stored_or_404(settings, result, images[n])
    try:
        png = dicom_image_png(path)
    except ValueError as error:
        LOGGER.error("result %d image %d: %s", result_id, n, error)
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, detail=str(error)) from error
    return Response(png, media_type="image/png")


@router.get(
    "/results/{result_id}/files/{n}",
    response_class=FileResponse,
    responses={200: {"content": {DICOM_MEDIA_TYPE: {}}}, 404: {"description": "unknown result or file"}},
)
def result_file(result_id: ResultId, n: Position, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """Output object ``n`` of the result (its position in the result's file list) as a DICOM file download."""
    result = _result_or_404(session, result_id)
    paths = list(result.paths or [])
    if n >= len(paths):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"result {result_id} has {len(paths)} files, no file {n}"
        )
    path = _stored_or_404(settings, result, paths[n])
    return FileResponse(path, media_type=DICOM_MEDIA_TYPE, filename=path.name)


@router.post(
    "/results/{result_id}/transfers/{transfer_id}/retry", response_class=HTMLResponse, include_in_schema=False
)
def result_transfer_retry(
    result_id: ResultId,
    transfer_id: int,
    request: Request,
    session: SessionDep,
    retry: RetrierDep,
    templates: TemplatesDep,
) -> Response:
    """The retry button of the series page: queue the transfer again (as the transfers page does), then show the
    series page again at the result."""
    transfer = session.get(Transfer, transfer_id)
    if transfer is None or transfer.result_id != result_id:
        return render_error(
            templates, request, status.HTTP_404_NOT_FOUND, f"result {result_id} has no transfer with id {transfer_id}"
        )
    series_uid = transfer.result.job.series.series_instance_uid
    target = request.app.url_path_for("series_page", series_uid=series_uid)
    return retry_for_page(retry, transfer_id, f"{target}#result-{result_id}", request, templates)
