"""The FastAPI app factory: the REST contract over three ports.

``create_app`` wires whatever backends it is given (SQLite + files + the
in-process runtime for ``whisperop serve``; custom resources + S3 + worker
Deployments in the cluster) to the routers. Its lifespan starts, in order:
the SSE hub and the webhook notifier (they watch the JobQueue), restart
recovery (so jobs failed by it still notify their webhooks), metrics, and
finally the runtime — and stops them in reverse.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from whisperop.api.deps import Services
from whisperop.api.errors import install_error_handlers
from whisperop.api.retention import Retention
from whisperop.api.routers import health, joblist, jobs, metrics, model, openai_compat, transcripts, web
from whisperop.api.routers import webhooks as webhook_routes
from whisperop.api.sse import EventHub
from whisperop.api.telemetry import Metrics
from whisperop.api.upload import UploadSlots
from whisperop.api.webhooks import WebhookNotifier
from whisperop.core.ports import BlobStore, JobQueue, ModelRuntime
from whisperop.core.settings import ServerSettings, WebhookSettings
from whisperop.core.webhooks import WebhookSender

log = logging.getLogger("whisperop.api")

DESCRIPTION = """\
Transcription with whisper.cpp behind the original whisper-server REST contract.

Submit audio with `POST /jobs` (multipart), follow it with `GET /jobs/{id}` or the SSE stream
`GET /jobs/{id}/stream`, manage the model with `/model/*`. While the model is not ready,
`POST /jobs` answers 503 `model_not_ready` with `Retry-After` (and starts a load when unloaded).
"""


def _recover(jobstore: JobQueue, blobstore: BlobStore) -> None:
    for job in jobstore.recover_interrupted():
        key = jobstore.audio_key(job.id)
        if key:
            try:
                blobstore.delete(key)
            except Exception:
                log.warning("could not delete audio of a recovered job", extra={"job_id": job.id}, exc_info=True)


def create_app(
    settings: ServerSettings,
    runtime: ModelRuntime,
    jobstore: JobQueue,
    blobstore: BlobStore,
    webhook_sender: WebhookSender | None = None,
    send_webhooks: bool = True,
    auth_tokens_file: str | None = None,
    run_retention: bool = True,
) -> FastAPI:
    """The facade app; ``webhook_sender``: the CLI's, built from its settings (tests shorten the
    retry backoff with theirs); without one, :class:`WebhookSettings`' defaults and environment.

    ``send_webhooks=False`` in cluster mode: the operator delivers completion and
    lifecycle webhooks there (once, whatever the number of facade replicas).
    ``auth_tokens_file``: require ``Authorization: Bearer <token>`` on every endpoint
    except ``/health`` (see :mod:`whisperop.api.auth`). ``run_retention=False`` in cluster mode:
    the operator deletes expired jobs there (``ttlSecondsAfterFinished``)."""
    services = Services(
        settings=settings,
        runtime=runtime,
        jobs=jobstore,
        blobs=blobstore,
        hub=EventHub(jobstore, runtime),
        webhooks=WebhookNotifier(webhook_sender or WebhookSettings().sender(settings.outbound_allow), jobstore, runtime),
        metrics=Metrics(jobstore, runtime),
        uploads=UploadSlots(settings.max_concurrent_uploads, settings.max_uploads_per_token),
    )
    retention = Retention(jobstore, blobstore, settings.job_ttl_secs if run_retention else 0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.hub.start()
        if send_webhooks:
            services.webhooks.start()
        services.metrics.start()
        _recover(jobstore, blobstore)
        runtime.start()
        retention.start()
        gpu = runtime.gpu()
        log.info("facade started", extra={"model": settings.model_name, "gpu": (gpu.name if gpu else None) or "none",
                                          "queue_while_loading": settings.queue_while_loading})
        try:
            yield
        finally:
            retention.stop()
            runtime.stop()
            services.metrics.stop()
            services.webhooks.stop()
            services.hub.stop()

    app = FastAPI(
        title="whisper-operator",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from routers.web, with their assets served here
        redoc_url=None,
        openapi_tags=[
            {"name": "jobs", "description": "Transcription jobs"},
            {"name": "model", "description": "Model lifecycle"},
            {"name": "openai", "description": "OpenAI-compatible audio API (point an OpenAI SDK's base_url at /v1)"},
            {"name": "system", "description": "Health and metrics"},
        ],
    )
    app.state.services = services
    install_error_handlers(app)
    for r in (joblist.router, jobs.router, transcripts.router, openai_compat.router, model.router,
              webhook_routes.router, health.router, metrics.router):
        app.include_router(r)
    web.install(app)
    install_guards(app, settings, auth_tokens_file)
    return app


def install_guards(app: FastAPI, settings: ServerSettings, auth_tokens_file: str | None) -> None:
    """Outermost first: CORS (only when origins are configured, so a preflight is answered
    before auth), the browser guard (Host allow-list, cross-origin writes), bearer auth."""
    from whisperop.api.browser import BrowserGuard, default_allowed_hosts, split_list

    if auth_tokens_file:
        from whisperop.api.auth import BearerAuth, TokenSource

        app.add_middleware(BearerAuth, source=TokenSource(auth_tokens_file))
    origins = split_list(settings.cors_origins)
    app.add_middleware(BrowserGuard, allowed_hosts=split_list(settings.allowed_hosts) or default_allowed_hosts(settings.host),
                       cors_origins=origins)
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])
