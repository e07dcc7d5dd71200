"""Transfers: GET /api/transfers?state=, POST /api/transfers/{id}/retry, and the transfers page with a retry
button."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from starlette.responses import Response

from db.models import Job, Result, Transfer, TransferState
from db.repository import TransferNotFoundError, TransferStateError, retry_transfer
from reports.web.deps import (
    EnqueueDeliveryDep,
    SessionDep,
    TemplatesDep,
    render,
    render_error,
)
from reports.web.schemas import TransferListed, TransferPublic, transfer_listed

LOGGER = logging.getLogger(__name__)

router = APIRouter(tags=["transfers"])

PAGE_SIZE = 100

StateFilter = Annotated[TransferState | None, Query(description="only transfers in this state")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many transfers")]
Offset = Annotated[int, Query(ge=0, description="skip this many transfers (newest first)")]


def list_transfers(
    session: Session, *, state: TransferState | None, limit: int, offset: int
) -> list[Transfer]:
    """Transfers newest first, optionally of one state, with their result and source series loaded."""
    query = select(Transfer).options(
        selectinload(Transfer.result).selectinload(Result.job).selectinload(Job.series)
    )
    if state is not None:
        query = query.where(Transfer.state == state)
    return list(session.scalars(query.order_by(Transfer.id.desc()).limit(limit).offset(offset)))


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
    session: SessionDep, state: StateFilter = None, limit: Limit = 100, offset: Offset = 0
) -> list[TransferListed]:
    """Outgoing files and their delivery state, newest first."""
    return [transfer_listed(t) for t in list_transfers(session, state=state, limit=limit, offset=offset)]


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
    page: Annotated[int, Query(ge=1, description="page number, from 1")] = 1,
) -> Response:
    """Outgoing files, newest first, with a retry button for those not delivered."""
    transfers = list_transfers(session, state=state, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    return render(
        templates,
        request,
        "transfers.html",
        {
            "transfers": transfers[:PAGE_SIZE],
            "has_next": len(transfers) > PAGE_SIZE,
            "page": page,
            "state": state,
            "states": list(TransferState),
        },
    )


@router.post("/transfers/{transfer_id}/retry", response_class=HTMLResponse, include_in_schema=False)
def transfers_page_retry(
    transfer_id: int, request: Request, retry: RetrierDep, templates: TemplatesDep
) -> Response:
    """The retry button: queue the transfer again, then show the transfers page (POST-redirect-GET)."""
    return retry_for_page(retry, transfer_id, request.app.url_path_for("transfers_page"), request, templates)
