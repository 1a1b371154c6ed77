"""``/jobs``: submit (streaming multipart), get, stream progress (SSE), cancel.

Order of checks in ``POST /jobs`` follows the original server: the whole
body is read first (the audio streams into an uncommitted blob), then the
fields are validated (400), then the model state is checked (503, which
also triggers a load and registers the webhook URL). Only an accepted job
commits its blob — every other outcome aborts it, so rejected and aborted
uploads leave nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from whisperop.api.deps import Services, ServicesDep
from whisperop.api import audio_url
from whisperop.api.auth import principal
from whisperop.api.errors import ApiError
from whisperop.api.retention import purge_job
from whisperop.api.upload import (
    RETRY_BUSY_SECS,
    Upload,
    UploadRefused,
    audio_key,
    receive_job_upload,
)
from whisperop.core.errors import JobAlreadyTerminal, JobNotFound
from whisperop.core.languages import UnknownLanguageError, normalize_language
from whisperop.core.urlguard import aresolve_url, check_url
from whisperop.core.models import ErrorResponse, Job, JobStatus, ModelNotReady, ModelState, SubmitResponse, Task

log = logging.getLogger("whisperop.api.jobs")

router = APIRouter(tags=["jobs"])

RETRY_UNLOADED_SECS = 30
RETRY_LOADING_SECS = 10

MAX_PRIORITY = 1_000_000  # as TranscriptionJob spec.priority

SUBMIT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "description": "exactly one of audio and audio_url",
                "properties": {
                    "audio": {"type": "string", "format": "binary", "description": "any format ffmpeg decodes; no size limit"},
                    "language": {"type": "string", "description": "ISO 639-1 code; omit (or 'auto') to detect"},
                    "task": {"type": "string", "enum": ["transcribe", "translate"], "default": "transcribe"},
                    "webhook_url": {"type": "string", "format": "uri",
                                    "description": "http(s) URL for the completion webhook; also registers model webhooks"},
                    "audio_url": {"type": "string", "format": "uri",
                                  "description": "instead of audio: an http(s) URL (fetched through the outbound URL "
                                                 "guard, AUDIO_URL_MAX_BYTES) or, in cluster mode, an s3:// URI of a "
                                                 "bucket in AUDIO_URL_S3_BUCKETS"},
                    "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY, "default": 0,
                                 "description": "higher runs first; equal priorities run in submission order"},
                    "time_limit_secs": {"type": "number", "exclusiveMinimum": 0,
                                        "description": "wall-time limit of one run of this job; default JOB_TIME_LIMIT_SECS"},
                    "chunk_time_limit_factor": {"type": "number", "exclusiveMinimum": 0,
                                                "description": "per-chunk limit: CHUNK_TIME_LIMIT_MIN_SECS + this x the chunk's "
                                                               "duration; default CHUNK_TIME_LIMIT_FACTOR"},
                },
            }
        }
    },
}


def retry_after(state: ModelState, svc: Services) -> int:
    if state == ModelState.unloaded:
        return RETRY_UNLOADED_SECS
    if state == ModelState.loading:
        return RETRY_LOADING_SECS
    # the runtime's own poll interval: cluster mode's comes from the WhisperModel (gpuPollIntervalSeconds)
    return int(getattr(svc.runtime, "gpu_poll_interval_secs", None) or svc.settings.gpu_poll_interval_secs)


def _webhook_url(value: str | None, allow: str) -> str | None:
    """The syntactic half of the outbound URL guard (the DNS half runs in :func:`submit_job`)."""
    if value is None or not value.strip():
        return None
    return check_url(value, allow=allow, what="webhook_url")


def parse_priority(value: str | None) -> int:
    if value is None or not value.strip():
        return 0
    v = value.strip()
    if not v.isdigit() or int(v) > MAX_PRIORITY:
        raise ApiError(400, f"priority must be an integer between 0 and {MAX_PRIORITY}")
    return int(v)


def validate(upload: Upload, job_id: str, allow: str = "", by_url: bool = False) -> Job:
    """The contract's 400s, in the original's order (the audio checks wait for the fetch with ``audio_url``)."""
    if by_url and upload.audio_seen:
        raise ApiError(400, "give either 'audio' or 'audio_url', not both")
    if not upload.audio_seen and not by_url:
        raise ApiError(400, "missing 'audio' field")
    if upload.audio_bytes == 0 and not by_url:
        raise ApiError(400, "audio field is empty")
    task = upload.fields.get("task", Task.transcribe.value)
    if task not in (Task.transcribe.value, Task.translate.value):
        raise ApiError(400, "task must be 'transcribe' or 'translate'")
    try:
        language = normalize_language(upload.fields.get("language"))
    except UnknownLanguageError as exc:
        raise ApiError(400, str(exc)) from None
    webhook = _webhook_url(upload.fields.get("webhook_url"), allow)
    limit = _positive(upload.fields.get("time_limit_secs"), "time_limit_secs")
    factor = _positive(upload.fields.get("chunk_time_limit_factor"), "chunk_time_limit_factor")
    return Job(id=job_id, task=Task(task), language=language, webhook_url=webhook, filename=upload.filename,
               time_limit_secs=limit, chunk_time_limit_factor=factor)


def _positive(value: str | None, name: str) -> float | None:
    """An optional positive number field (the per-job time limits); absent or blank = the server default."""
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a number, got {value!r}") from None
    if not (0 < number < float("inf")):
        raise ApiError(400, f"{name} must be greater than 0, got {value!r}")
    return number


@router.post(
    "/jobs",
    status_code=202,
    summary="Submit an audio file for transcription",
    response_model=SubmitResponse,
    responses={
        408: {"model": ErrorResponse, "description": "the upload stalled (no data for UPLOAD_IDLE_TIMEOUT_SECS)"},
        429: {"model": ErrorResponse, "description": "MAX_CONCURRENT_UPLOADS / MAX_UPLOADS_PER_TOKEN uploads in progress, or "
                                                     "MAX_QUEUED_JOBS_PER_TOKEN queued jobs (Retry-After)"},
        400: {"model": ErrorResponse, "description": "missing/empty audio, bad task or language, multipart error, bad priority, "
                                                     "time limit not a positive number, "
                                                     "webhook_url not http(s), with credentials, or reaching an internal address, "
                                                     "audio_url refused/unreachable/oversized/not audio"},
        503: {"model": ModelNotReady, "description": "model not ready (a load is triggered when unloaded)",
              "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
    },
    openapi_extra={"requestBody": SUBMIT_BODY},
)
async def submit_job(request: Request, svc: ServicesDep) -> Response:
    try:
        received = await receive_job_upload(request, svc)
    except UploadRefused as exc:
        if exc.kind == "busy":
            raise ApiError(429, exc.message, headers={"Retry-After": str(RETRY_BUSY_SECS), "Connection": "close"}) from None
        if exc.kind == "stalled":
            raise ApiError(408, exc.message, headers={"Connection": "close"}) from None
        if exc.kind == "multipart":
            raise ApiError(400, exc.message) from None
        return Response(status_code=400)  # the client is gone
    job_id, key, who, upload = received.job_id, received.key, received.who, received.upload

    committed = False
    url = (upload.fields.get("audio_url") or "").strip()
    try:
        job = validate(upload, job_id, svc.settings.outbound_allow, by_url=bool(url))
        priority = parse_priority(upload.fields.get("priority"))
        if job.webhook_url:
            await aresolve_url(job.webhook_url, allow=svc.settings.outbound_allow, what="webhook_url")
        state = svc.runtime.state
        if state != ModelState.ready and not svc.settings.queue_while_loading:
            if state == ModelState.unloaded:
                svc.runtime.request_load()
            if job.webhook_url:  # the contract registers it anyway, so the client hears model_ready: briefly
                await asyncio.to_thread(svc.jobs.register_webhook, job.webhook_url, True)
            upload.abort()
            svc.metrics.uploads.labels("not_ready").inc()
            n = retry_after(state, svc)
            body = ModelNotReady(state=state, retry_after_secs=n)
            return JSONResponse(body.model_dump(mode="json"), status_code=503, headers={"Retry-After": str(n)})
        if url:
            fetched = await audio_url.fetch(url, svc, lambda name: audio_key(job_id, name))
            committed = not fetched.external  # a user's s3:// object is never ours to delete
            key[:] = [fetched.key]
            job = job.model_copy(update={"filename": fetched.filename})
        else:
            assert upload.writer is not None
            await asyncio.to_thread(upload.writer.commit)
            committed = True
        await asyncio.to_thread(svc.jobs.create, job, key[0], priority, None, who)
    except BaseException:
        if committed:
            await asyncio.to_thread(svc.blobs.delete, key[0])
        else:
            upload.abort()
        if not committed:
            svc.metrics.uploads.labels("rejected").inc()
        raise
    svc.metrics.uploads.labels("accepted").inc()
    svc.runtime.notify_job_queued()
    if job.webhook_url:
        try:  # the job is accepted whatever happens here; its completion webhook does not need the registry
            await asyncio.to_thread(svc.jobs.register_webhook, job.webhook_url)
        except Exception:
            log.warning("could not register the webhook URL", extra={"job_id": job_id}, exc_info=True)
    log.info("job queued", extra={"job_id": job_id, "bytes": upload.audio_bytes, "task": job.task.value,
                                  "priority": priority,
                                  "language": job.language, "audio_filename": job.filename})
    return JSONResponse(SubmitResponse(job_id=job_id).model_dump(), status_code=202)


def check_owner(svc: Services, job_id: str, who: str | None) -> None:
    """Another token's job does not exist for this token (404, the same answer as an unknown id)."""
    if who is None:
        return
    owner = svc.jobs.owner(job_id)
    if owner is not None and owner != who:
        raise JobNotFound(job_id)


def _job_response(job: Job, status_code: int = 200, verbose: bool = False) -> JSONResponse:
    body = job if verbose else job.model_copy(update={"removed": None})
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code)


@router.get(
    "/jobs/{job_id}",
    summary="Get a job",
    response_model=Job,
    responses={404: {"model": ErrorResponse}},
)
def get_job(job_id: str, request: Request, svc: ServicesDep, verbose: bool = False) -> Response:
    """``?verbose=true`` adds ``removed``: the text repetition handling took out, with times and reason."""
    check_owner(svc, job_id, principal(request))
    return _job_response(svc.jobs.get(job_id), verbose=verbose)


@router.get(
    "/jobs/{job_id}/stream",
    summary="Job progress as Server-Sent Events",
    description="Events `progress`, `done` (with the full Job) and `error`; a finished job gets one `done` at once; "
    "a running job's stream starts with its current `progress` (chunks done so far).",
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}, 404: {"model": ErrorResponse}},
    response_class=StreamingResponse,
)
async def stream_job(job_id: str, request: Request, svc: ServicesDep) -> Response:
    await asyncio.to_thread(check_owner, svc, job_id, principal(request))
    await asyncio.to_thread(svc.jobs.get, job_id)  # 404 before any streaming starts
    return StreamingResponse(
        svc.hub.job_stream(job_id, svc.jobs.get, svc.jobs.progress),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.delete(
    "/jobs/{job_id}",
    summary="Cancel a job (or, with purge=true, delete it and its files)",
    description="A queued job never starts; a running one is aborted and its partial result discarded. "
                "`purge=true` deletes the job for good — its record, transcript and any file it still owns — "
                "cancelling it first when it is still queued or running; the answer is then 204.",
    response_model=Job,
    responses={204: {"description": "purged"}, 404: {"model": ErrorResponse},
               409: {"model": ErrorResponse, "description": "already in a terminal state (without purge)"}},
)
def cancel_job(job_id: str, request: Request, svc: ServicesDep, purge: bool = False) -> Response:
    check_owner(svc, job_id, principal(request))
    if purge:
        return _purge(job_id, svc)
    return cancel(job_id, svc)


def cancel(job_id: str, svc: Services) -> Response:
    before = svc.jobs.get(job_id)
    job = svc.jobs.cancel(job_id)
    if before.status == JobStatus.queued:
        # the worker will never claim it, so its audio is ours to remove
        key = svc.jobs.audio_key(job_id)
        if key:
            svc.blobs.delete(key)
    log.info("job cancelled", extra={"job_id": job_id, "was": before.status.value})
    return _job_response(job)


def _purge(job_id: str, svc: Services) -> Response:
    if not svc.jobs.get(job_id).status.terminal:
        try:
            cancel(job_id, svc)
        except JobAlreadyTerminal:
            pass  # it finished meanwhile
    purge_job(svc.jobs, svc.blobs, job_id)
    log.info("job purged", extra={"job_id": job_id})
    return Response(status_code=204)
