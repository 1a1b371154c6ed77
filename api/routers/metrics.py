"""``GET /metrics``: Prometheus text exposition (kept out of the OpenAPI document)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from whisperop.api.deps import ServicesDep

router = APIRouter(tags=["system"])


@router.get("/metrics", include_in_schema=False)
def metrics(svc: ServicesDep) -> Response:
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)
