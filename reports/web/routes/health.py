"""GET /healthz: the node's health (:mod:`reports.web.health`): 200 when "ok" or "degraded", 503 when
"failing", the reasons in ``problems``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from reports.web.deps import SettingsDep
from reports.web.health import FAILING, node_health
from reports.web.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(request: Request, response: Response, settings: SettingsDep) -> Health:
    """Whether the node can take work: 200 when "ok" or "degraded", 503 when "failing"; the reasons in
    ``problems``."""
    health = node_health(settings, request.app.state.session_factory)
    if health.status == FAILING:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return health
