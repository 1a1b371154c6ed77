"""``/model``: status, load, unload and the lifecycle event stream (SSE)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse

from whisperop.api.deps import ServicesDep
from whisperop.core.models import ModelActionResponse, ModelStatus

router = APIRouter(prefix="/model", tags=["model"])


@router.get(
    "/status",
    summary="Model state (fields that do not apply to the state are omitted)",
    response_model=ModelStatus,
    response_model_exclude_none=True,
)
def model_status(svc: ServicesDep) -> Response:
    return JSONResponse(svc.runtime.status().model_dump(mode="json", exclude_none=True))


@router.post(
    "/load",
    summary="Load the model (idempotent)",
    status_code=202,
    response_model=ModelActionResponse,
    responses={200: {"model": ModelActionResponse, "description": "already ready"}},
)
def model_load(svc: ServicesDep) -> Response:
    if svc.runtime.request_load():
        return JSONResponse(ModelActionResponse(status="load_initiated").model_dump(), status_code=202)
    return JSONResponse(ModelActionResponse(status="already_ready").model_dump(), status_code=200)


@router.post(
    "/unload",
    summary="Unload the model after the in-flight job (200 in every state)",
    response_model=ModelActionResponse,
)
def model_unload(svc: ServicesDep) -> Response:
    svc.runtime.request_unload()
    return JSONResponse(ModelActionResponse(status="unload_requested").model_dump(), status_code=200)


@router.get(
    "/events",
    summary="Model lifecycle events as Server-Sent Events (keep-alive comment every 15 s)",
    description="Events `model_loading`, `model_ready`, `model_unloaded`, `model_waiting_for_gpu`.",
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
    response_class=StreamingResponse,
)
async def model_events(svc: ServicesDep) -> Response:
    return StreamingResponse(
        svc.hub.model_stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
