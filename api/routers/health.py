"""``GET /health``: liveness plus the figures operators glance at."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from whisperop.api.deps import ServicesDep
from whisperop.core.models import Health

router = APIRouter(tags=["system"])


@router.get("/health", summary="Service health", response_model=Health)
def health(svc: ServicesDep) -> Response:
    body = Health(
        gpu_name=svc.gpu_name,
        vram_total_mb=svc.vram_total_mb,
        model=svc.settings.model_name,
        queue_depth=svc.jobs.queue_depth(),
        model_state=svc.runtime.state,
    )
    return JSONResponse(body.model_dump(mode="json"))
