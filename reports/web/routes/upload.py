"""GET and POST /training/upload: contours and maps of readers without PACS access, handed to the node.

The page checks the form (kind, size, the files a kind needs, who the reader is) and passes a
:class:`reports.web.uploads.ContourUpload` to the node's sink (``app.state.accept_upload``); the node stores it
through the Storage SCP's own path and scores it like a received contour. A trainee uploads only their own
contours: the reader of an IDL SAVE file or point list is the reader their user is linked to.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from db.models import Instance, Reader, Series, SeriesRole, Study, TrainingCase, WebRole
from reports.web.access import ViewerDep
from reports.web.deps import SessionDep, TemplatesDep, render
from reports.web.uploads import (
    KIND_LABELS,
    MAX_UPLOAD_BYTES,
    NEEDS_IMAGE,
    ContourUpload,
    UploadedFile,
    UploadKind,
    UploadReceipt,
    UploadRejectedError,
    UploadSink,
)

LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["training"], include_in_schema=False)

#: The form's fields besides its files are short; a multipart body is at most the files plus this.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 2 * MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES
MAP_ROLES = (SeriesRole.T1_MAP, SeriesRole.T2_MAP)
#: At most this many map images are offered in the image list (the newest first).
MAX_IMAGE_CHOICES = 200


def _image_choices(session: SessionDep) -> list[tuple[str, str]]:
    """(SOP Instance UID, words) of the stored map images, training cases first and named by their label."""
    labels = {case.study_instance_uid: case.label for case in session.scalars(select(TrainingCase))}
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.instance_number, Series.description, Series.series_number,
               Study.study_instance_uid)
        .join(Series, Instance.series_id == Series.id).join(Study, Series.study_id == Study.id)
        .where(Series.role.in_(MAP_ROLES)).order_by(Series.id.desc(), Instance.instance_number)
        .limit(MAX_IMAGE_CHOICES)
    ).all()
    choices = [
        (uid, f"{labels.get(study_uid) or 'study ' + study_uid[-12:]} · series {number or '?'} "
              f"{description or ''} · image {instance or '?'}")
        for uid, instance, description, number, study_uid in rows
    ]
    return sorted(choices, key=lambda choice: not choice[1].startswith(tuple(v for v in labels.values() if v)))


def _page(request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep, *,
          receipt: UploadReceipt | None = None, error: str | None = None, status_code: int = 200,
          chosen: UploadKind | None = None) -> Response:
    readers = ([] if viewer.role is WebRole.TRAINEE else
               [name for name in session.scalars(select(Reader.name).order_by(Reader.name))
                if viewer.may_see_reader(name)])
    return render(templates, request, "training_upload.html", {
        "viewer": viewer, "kinds": KIND_LABELS, "chosen": chosen or UploadKind.SEG, "needs_image": NEEDS_IMAGE,
        "images": _image_choices(session), "readers": readers, "receipt": receipt, "error": error,
        "enabled": request.app.state.accept_upload is not None, "max_mb": MAX_UPLOAD_BYTES // (1024 * 1024),
    }, status_code)


@router.get("/training/upload", response_class=HTMLResponse, name="upload_page")
def upload_page(request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep) -> Response:
    """The upload form."""
    return _page(request, session, templates, viewer)


async def _file(field: object, name: str, border: str = "") -> UploadedFile | None:
    if not isinstance(field, UploadFile) or not field.filename:
        return None
    data = await field.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRejectedError(f"{field.filename} is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB",
                                  status_code=status.HTTP_413_CONTENT_TOO_LARGE)
    if not data:
        raise UploadRejectedError(f"{field.filename} is empty", status_code=status.HTTP_400_BAD_REQUEST)
    return UploadedFile(field.filename[:255], data, border)


def refuse_oversized(request: Request) -> None:
    """Dependency run before the login and the form token are checked (the token check parses the whole body):
    an upload must say its length, and at most two files of :data:`MAX_UPLOAD_BYTES` and the form's fields.

    Raises
    ------
    HTTPException
        411 without a Content-Length, 413 above the limit.
    """
    if request.method != "POST":
        return
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, detail="an upload must send its Content-Length")
    if int(length) > MAX_BODY_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            detail=f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB a file")


async def _read_upload(request: Request, viewer: ViewerDep) -> ContourUpload:
    """The form as an upload; UploadRejectedError (4xx) for anything missing, too large or not allowed."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadRejectedError("send the form as multipart/form-data", status_code=415)
    async with request.form(max_files=3, max_fields=10) as form:
        try:
            kind = UploadKind(str(form.get("kind", "")))
        except ValueError:
            raise UploadRejectedError(f"unknown kind {str(form.get('kind', ''))[:32]!r}; expected one of "
                                      f"{', '.join(k.value for k in UploadKind)}",
                                      status_code=status.HTTP_400_BAD_REQUEST) from None
        if kind is UploadKind.POINT_LIST:
            files = [await _file(form.get("endocardium"), "endocardium", "endocardium"),
                     await _file(form.get("epicardium"), "epicardium", "epicardium")]
            if None in files:
                raise UploadRejectedError("point lists need an endocardium and an epicardium file",
                                          status_code=status.HTTP_400_BAD_REQUEST)
        else:
            files = [await _file(form.get("file"), "file")]
            if files[0] is None:
                raise UploadRejectedError("choose a file to upload", status_code=status.HTTP_400_BAD_REQUEST)
        reader = " ".join(str(form.get("reader", "")).split())[:64]
        image_uid = str(form.get("image_sop_instance_uid", "")).strip()[:64]
    if viewer.role is WebRole.TRAINEE and kind is not UploadKind.DICOM_MAP:
        if viewer.reader is None:
            raise UploadRejectedError(f"{viewer.username} is not linked to a reader; ask a supervisor",
                                      status_code=status.HTTP_403_FORBIDDEN)
        reader = viewer.reader  # a trainee uploads their own contours only
    elif kind in NEEDS_IMAGE and reader and not viewer.may_see_reader(reader):
        raise UploadRejectedError(f"{reader} is not in a team that {viewer.username} supervises",
                                  status_code=status.HTTP_403_FORBIDDEN)
    return ContourUpload(kind=kind, files=tuple(f for f in files if f is not None),
                         uploaded_by=viewer.username or "", reader=reader, image_sop_instance_uid=image_uid,
                         allowed_readers=viewer.readers)


@router.post("/training/upload", response_class=HTMLResponse, name="upload")
async def upload(request: Request, session: SessionDep, templates: TemplatesDep, viewer: ViewerDep) -> Response:
    """Hand an upload to the node: the page again with what was stored, or 4xx with the reason."""
    sink: UploadSink | None = request.app.state.accept_upload
    if sink is None:
        return _page(request, session, templates, viewer, status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                     error="This page is not connected to a running node: uploads are off.")
    kind: UploadKind | None = None
    try:
        contour_upload = await _read_upload(request, viewer)
        kind = contour_upload.kind
        # The node parses and stores synchronously; run it off the event loop.
        receipt = await run_in_threadpool(sink, contour_upload)
    except UploadRejectedError as error:
        # The reason can name the uploader's file; the log keeps only the status.
        LOGGER.info("web upload by %r refused with %d", viewer.username, error.status_code)
        return _page(request, session, templates, viewer, error=str(error), status_code=error.status_code,
                     chosen=kind)
    return _page(request, session, templates, viewer, receipt=receipt, status_code=status.HTTP_201_CREATED,
                 chosen=kind)
