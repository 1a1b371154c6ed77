"""``DELETE /webhooks``: take a URL out of the lifecycle-webhook registry.

Registered URLs expire by themselves (``WEBHOOK_REGISTRY_TTL_SECS``); this is
the way to stop ``model_ready``/``model_unloaded`` deliveries at once.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from whisperop.api.deps import ServicesDep
from whisperop.api.errors import ApiError
from whisperop.core.models import ErrorResponse

router = APIRouter(tags=["model"])


@router.delete(
    "/webhooks",
    summary="Unregister a lifecycle webhook URL",
    responses={404: {"model": ErrorResponse, "description": "the URL is not registered"}},
)
async def unregister_webhook(url: str, svc: ServicesDep) -> Response:
    if not await asyncio.to_thread(svc.jobs.unregister_webhook, url.strip()):
        raise ApiError(404, "webhook URL not registered")
    return JSONResponse({"status": "unregistered"})
