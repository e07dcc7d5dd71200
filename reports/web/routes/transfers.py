"""Transfers: GET /api/transfers?state=, POST /api/transfers/{id}/retry, and the transfers page with a retry
button."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload
from starlette.responses import Response

from db.models import Job, Result, Transfer, TransferState
from db.refused import latest_refusals
from db.repository import TransferNotFoundError, TransferStateError, retry_transfer
from reports.web.deps import (
    EnqueueDeliveryDep,
    SessionDep,
    TemplatesDep,
    render,
    render_error,
)
from reports.web.schemas import TransferListed, TransferPublic, object_kind, transfer_listed

LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["transfers"])

PAGE_SIZE = 100
REFUSALS_SHOWN = 20
#: Transfers read at a time while looking for those of one object kind.
KIND_SCAN_BATCH = 500
#: How the pages name the object kinds of the output lists; other kinds are shown as they are named.
KIND_LABELS = {"sr": "SR", "seg": "SEG", "sc": "SC", "maps": "map", "pdf": "PDF", "reader_sc": "reader SC",
               "other": "other"}

StateFilter = Annotated[TransferState | None, Query(description="only transfers in this state")]
DestinationFilter = Annotated[str | None, Query(max_length=16, description="only transfers to this AE title")]
KindFilter = Annotated[
    str | None, Query(max_length=32, pattern=r"^[a-z0-9_]+$", description="only this object kind (sr, seg, sc, ...)")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many transfers")]
Offset = Annotated[int, Query(ge=0, description="skip this many transfers (newest first)")]


def _transfers_query(state: TransferState | None, destination: str | None) -> Select[Transfer]:
    query = select(Transfer).options(
        selectinload(Transfer.result).selectinload(Result.job).selectinload(Job.series)
    )
    if state is not None:
        query = query.where(Transfer.state == state)
    if destination:
        query = query.where(Transfer.ae_title == destination)
    return query


def list_transfers(
    session: Session, *, state: TransferState | None, limit: int, offset: int = 0, destination: str | None = None,
    kind: str | None = None, before_id: int | None = None,
) -> list[Transfer]:
    """Transfers newest first, optionally of one state, destination (AE title) and object kind
    (:func:`reports.web.schemas.object_kind`), with their result and source series loaded.

    State and destination are filtered in SQL (indexed); the kind is read from the result's output lists, so
    with a kind the transfers are read in batches until ``limit`` of that kind are found.
    """
    query = _transfers_query(state, destination).order_by(Transfer.id.desc())
    if before_id is not None:
        query = query.where(Transfer.id < before_id)
    if not kind:
        return list(session.scalars(query.limit(limit).offset(offset)))
    found: list[Transfer] = []
    skipped = 0
    cursor = before_id
    while len(found) < limit:
        batch_query = query if cursor is None else query.where(Transfer.id < cursor)
        batch = list(session.scalars(batch_query.limit(KIND_SCAN_BATCH)))
        for transfer in batch:
            if object_kind(transfer.result, transfer.path) != kind:
                continue
            if skipped < offset:
                skipped += 1
                continue
            found.append(transfer)
            if len(found) == limit:
                break
        if len(batch) < KIND_SCAN_BATCH:
            break
        cursor = batch[-1].id
    return found


def transfer_destinations(session: Session) -> list[str]:
    """The AE titles the node has transfers to (the index on ae_title answers it)."""
    return list(session.scalars(select(Transfer.ae_title).distinct().order_by(Transfer.ae_title)))


def recent_kinds(session: Session, *, n_transfers: int = 1000) -> list[str]:
    """The object kinds among the newest transfers, for the kind filter: what the node sends, not a fixed list
    (a newer node's output kinds appear as they come)."""
    recent = session.scalars(
        select(Transfer).options(selectinload(Transfer.result)).order_by(Transfer.id.desc()).limit(n_transfers)
    )
    return sorted({object_kind(transfer.result, transfer.path) for transfer in recent})


class _Retrier:
    """The retry action shared by the API and the page: reset the transfer to be due now, then queue it.

    The node gives the app its delivery queue (``create_app(enqueue_delivery=...)``); the web app never sends
    itself. Without a queue the reset transfer is due, and the node's periodic sweep of overdue transfers
    queues it.
    """

    def __init__(self, session: SessionDep, enqueue_delivery: EnqueueDeliveryDep) -> None:
        self.session = session
        self.enqueue_delivery = enqueue_delivery

    def __call__(self, transfer_id: int) -> Transfer:
        """Raises :class:`TransferNotFoundError` or :class:`TransferStateError`."""
        transfer = retry_transfer(self.session, transfer_id=transfer_id)
        self.session.commit()
        LOGGER.info("transfer %d of %s to %s queued again from the web page", transfer.id,
                    transfer.sop_instance_uid, transfer.ae_title)
        if self.enqueue_delivery is not None:
            self.enqueue_delivery(transfer.id)
        return transfer


RetrierDep = Annotated[_Retrier, Depends(_Retrier)]


def retry_for_page(retry: _Retrier, transfer_id: int, target: str, request: Request,
                   templates: Jinja2Templates) -> Response:
    """A page's retry button: queue the transfer again, then send the browser to ``target`` (POST-redirect-GET);
    or the error page saying why it cannot be retried."""
    try:
        retry(transfer_id)
    except TransferNotFoundError as error:
        return render_error(templates, request, status.HTTP_404_NOT_FOUND, str(error))
    except TransferStateError as error:
        return render_error(templates, request, status.HTTP_409_CONFLICT, str(error))
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


@router.get("/api/transfers", response_model=list[TransferListed])
def api_list_transfers(
    session: SessionDep, state: StateFilter = None, destination: DestinationFilter = None, kind: KindFilter = None,
    limit: Limit = 100, offset: Offset = 0,
) -> list[TransferListed]:
    """Outgoing files and their delivery state, newest first; ``object_kind`` says what each file is."""
    return [
        transfer_listed(t)
        for t in list_transfers(session, state=state, destination=destination, kind=kind, limit=limit, offset=offset)
    ]


@router.post(
    "/api/transfers/{transfer_id}/retry",
    response_model=TransferPublic,
    responses={404: {"description": "unknown transfer"}, 409: {"description": "already sent"}},
)
def api_retry_transfer(transfer_id: int, retry: RetrierDep) -> TransferPublic:
    """Queue a pending or given-up transfer again now, with a fresh attempt count."""
    try:
        transfer = retry(transfer_id)
    except TransferNotFoundError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(error)) from error
    except TransferStateError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error
    return TransferPublic.model_validate(transfer)


@router.get("/transfers", response_class=HTMLResponse, include_in_schema=False)
def transfers_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    state: StateFilter = None,
    destination: DestinationFilter = None,
    kind: KindFilter = None,
    before: Annotated[int | None, Query(ge=1, description="transfers older than this transfer id")] = None,
) -> Response:
    """Outgoing files, newest first, with what each is and where it goes, filters by state, destination and
    kind, and a retry button for those not delivered."""
    transfers = list_transfers(
        session, state=state, destination=destination or None, kind=kind or None, limit=PAGE_SIZE + 1,
        before_id=before,
    )
    shown = transfers[:PAGE_SIZE]
    filters = {"state": state.value if state is not None else "", "destination": destination or "",
               "kind": kind or ""}
    kinds = recent_kinds(session)
    if kind and kind not in kinds:
        kinds.append(kind)
    return render(
        templates,
        request,
        "transfers.html",
        {
            "transfers": shown,
            "kinds_of": {t.id: object_kind(t.result, t.path) for t in shown},
            "kind_labels": KIND_LABELS,
            "filters": filters,
            "older_query": urlencode({**{k: v for k, v in filters.items() if v}, "before": shown[-1].id})
            if len(transfers) > PAGE_SIZE else None,
            "first_query": urlencode({k: v for k, v in filters.items() if v}) if before else None,
            "states": list(TransferState),
            "destinations": transfer_destinations(session),
            "kinds": kinds,
            # Re-sends of known instances under another patient or study, refused by the SCP (db.refused).
            "refusals": latest_refusals(session, limit=REFUSALS_SHOWN),
        },
    )


@router.post("/transfers/{transfer_id}/retry", response_class=HTMLResponse, include_in_schema=False)
def transfers_page_retry(
    transfer_id: int, request: Request, retry: RetrierDep, templates: TemplatesDep
) -> Response:
    """The retry button: queue the transfer again, then show the transfers page (POST-redirect-GET)."""
    return retry_for_page(retry, transfer_id, request.app.url_path_for("transfers_page"), request, templates)
