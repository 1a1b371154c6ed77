"""Shared state of the facade, handed to routers as a FastAPI dependency.

Everything a route needs (settings, the three ports, the SSE hub, webhooks,
metrics) hangs off one :class:`Services` object on ``app.state``; routes
declare ``svc: ServicesDep`` instead of reaching for globals, so tests can
build apps side by side with different backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from whisperop.api.sse import EventHub
from whisperop.api.telemetry import Metrics
from whisperop.api.upload import UploadSlots
from whisperop.api.webhooks import WebhookNotifier
from whisperop.core.ports import BlobStore, JobQueue, ModelRuntime
from whisperop.core.settings import ServerSettings


@dataclass
class Services:
    settings: ServerSettings
    runtime: ModelRuntime
    jobs: JobQueue
    blobs: BlobStore
    hub: EventHub
    webhooks: WebhookNotifier
    metrics: Metrics
    uploads: UploadSlots


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
