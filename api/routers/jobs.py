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
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from whisperop.api.deps import Services, ServicesDep
from whisperop.api.errors import ApiError
from whisperop.api.upload import MultipartError, Upload, receive_upload
from whisperop.core.languages import UnknownLanguageError, normalize_language
from whisperop.core.models import ErrorResponse, Job, JobStatus, ModelNotReady, ModelState, SubmitResponse, Task

log = logging.getLogger("whisperop.api.jobs")

router = APIRouter(tags=["jobs"])

RETRY_UNLOADED_SECS = 30
RETRY_LOADING_SECS = 10

_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")

SUBMIT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["audio"],
                "properties": {
                    "audio": {"type": "string", "format": "binary", "description": "any format ffmpeg decodes; no size limit"},
                    "language": {"type": "string", "description": "ISO 639-1 code; omit (or 'auto') to detect"},
                    "task": {"type": "string", "enum": ["transcribe", "translate"], "default": "transcribe"},
                    "webhook_url": {"type": "string", "format": "uri",
                                    "description": "http(s) URL for the completion webhook; also registers model webhooks"},
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


def audio_key(job_id: str, filename: str | None) -> str:
    """Blob key of a job's audio; keeps a plain extension as a hint for humans and decoders."""
    m = _SUFFIX.search(filename or "")
    return f"audio/{job_id}/source{m.group(0).lower() if m else ''}"


def retry_after(state: ModelState, svc: Services) -> int:
    if state == ModelState.unloaded:
        return RETRY_UNLOADED_SECS
    if state == ModelState.loading:
        return RETRY_LOADING_SECS
    return int(svc.settings.gpu_poll_interval_secs)


def _webhook_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ApiError(400, f"webhook_url must be an http(s) URL, got {value!r}")
    return url


def validate(upload: Upload, job_id: str) -> Job:
    """The contract's 400s, in the original's order."""
    if not upload.audio_seen:
        raise ApiError(400, "missing 'audio' field")
    if upload.audio_bytes == 0:
        raise ApiError(400, "audio field is empty")
    task = upload.fields.get("task", Task.transcribe.value)
    if task not in (Task.transcribe.value, Task.translate.value):
        raise ApiError(400, "task must be 'transcribe' or 'translate'")
    try:
        language = normalize_language(upload.fields.get("language"))
    except UnknownLanguageError as exc:
        raise ApiError(400, str(exc)) from None
    webhook = _webhook_url(upload.fields.get("webhook_url"))
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
        400: {"model": ErrorResponse, "description": "missing/empty audio, bad task or language, bad webhook_url, "
                                                    "time limit not a positive number, multipart error"},
        503: {"model": ModelNotReady, "description": "model not ready (a load is triggered when unloaded)",
              "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
    },
    openapi_extra={"requestBody": SUBMIT_BODY},
)
async def submit_job(request: Request, svc: ServicesDep) -> Response:
    job_id = str(uuid.uuid4())
    key: list[str] = []

    def open_writer(filename: str | None):  # type: ignore[no-untyped-def]
        key.append(audio_key(job_id, filename))
        return svc.blobs.writer(key[0])

    try:
        upload = await receive_upload(request, open_writer, svc.metrics.upload_bytes.inc)
    except MultipartError as exc:
        svc.metrics.uploads.labels("rejected").inc()
        raise ApiError(400, f"multipart error: {exc}") from None
    except ClientDisconnect:
        svc.metrics.uploads.labels("aborted").inc()
        log.info("client disconnected mid-upload; nothing kept", extra={"job_id": job_id})
        return Response(status_code=400)

    committed = False
    try:
        job = validate(upload, job_id)
        if job.webhook_url:
            await asyncio.to_thread(svc.jobs.register_webhook, job.webhook_url)
        state = svc.runtime.state
        if state != ModelState.ready and not svc.settings.queue_while_loading:
            if state == ModelState.unloaded:
                svc.runtime.request_load()
            upload.abort()
            svc.metrics.uploads.labels("not_ready").inc()
            n = retry_after(state, svc)
            body = ModelNotReady(state=state, retry_after_secs=n)
            return JSONResponse(body.model_dump(mode="json"), status_code=503, headers={"Retry-After": str(n)})
        assert upload.writer is not None
        await asyncio.to_thread(upload.writer.commit)
        committed = True
        await asyncio.to_thread(svc.jobs.create, job, key[0])
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
    log.info("job queued", extra={"job_id": job_id, "bytes": upload.audio_bytes, "task": job.task.value,
                                  "language": job.language, "audio_filename": job.filename})
    return JSONResponse(SubmitResponse(job_id=job_id).model_dump(), status_code=202)


def _job_response(job: Job, status_code: int = 200, verbose: bool = False) -> JSONResponse:
    body = job if verbose else job.model_copy(update={"removed": None})
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code)


@router.get(
    "/jobs/{job_id}",
    summary="Get a job",
    response_model=Job,
    responses={404: {"model": ErrorResponse}},
)
def get_job(job_id: str, svc: ServicesDep, verbose: bool = False) -> Response:
    """``?verbose=true`` adds ``removed``: the text repetition handling took out, with times and reason."""
    return _job_response(svc.jobs.get(job_id), verbose=verbose)


@router.get(
    "/jobs/{job_id}/stream",
    summary="Job progress as Server-Sent Events",
    description="Events `progress`, `done` (with the full Job) and `error`; a finished job gets one `done` at once; "
    "a running job's stream starts with its current `progress` (chunks done so far).",
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}, 404: {"model": ErrorResponse}},
    response_class=StreamingResponse,
)
async def stream_job(job_id: str, svc: ServicesDep) -> Response:
    await asyncio.to_thread(svc.jobs.get, job_id)  # 404 before any streaming starts
    return StreamingResponse(
        svc.hub.job_stream(job_id, svc.jobs.get, svc.jobs.progress),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.delete(
    "/jobs/{job_id}",
    summary="Cancel a job",
    description="A queued job never starts; a running one is aborted and its partial result discarded.",
    response_model=Job,
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse, "description": "already in a terminal state"}},
)
def cancel_job(job_id: str, svc: ServicesDep) -> Response:
    before = svc.jobs.get(job_id)
    job = svc.jobs.cancel(job_id)
    if before.status == JobStatus.queued:
        # the worker will never claim it, so its audio is ours to remove
        key = svc.jobs.audio_key(job_id)
        if key:
            svc.blobs.delete(key)
    log.info("job cancelled", extra={"job_id": job_id, "was": before.status.value})
    return _job_response(job)
