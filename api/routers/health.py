"""``GET /health``: liveness plus the figures operators glance at."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from whisperop.api.deps import ServicesDep
from whisperop.core.models import Health

router = APIRouter(tags=["system"])


@router.get("/health", summary="Service health", response_model=Health)
def health(svc: ServicesDep) -> Response:
    gpu = svc.runtime.gpu()
    body = Health(
        gpu_name=gpu.name if gpu else None,
        vram_total_mb=gpu.total_mb if gpu else None,
        model=svc.settings.model_name,
        queue_depth=svc.jobs.queue_depth(),
        model_state=svc.runtime.state,
    )
    return JSONResponse(body.model_dump(mode="json"))
