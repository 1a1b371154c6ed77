"""OpenAI-compatible audio API: ``/v1/audio/transcriptions``, ``/v1/audio/translations``, ``/v1/models``.

An app written for OpenAI's SDK works by changing only its base URL. The
request is synchronous for the caller but is an ordinary job underneath:
the upload streams to storage like ``POST /jobs``, the job is queued in the
same JobQueue (visible in ``GET /jobs``, subject to retention), runs under
the same model lifecycle, and the answer is rendered from the finished job.

- Model not ready: the request asks for a load (when unloaded) and waits up
  to ``SYNC_LOAD_WAIT_SECS`` (120 s) for ``ready``; past that it answers 503
  with ``Retry-After`` and OpenAI's error shape, keeping nothing.
- The client hangs up while its job is queued or running: the job is
  cancelled (a queued one never starts; a running one is aborted), checked
  every 0.5 s.
- ``prompt`` becomes whisper.cpp's initial prompt and ``temperature`` the
  first decode's temperature, for this job only (``DecodeHints``: a SQLite
  column locally, the ``whisperop.io/decode-hints`` annotation in a cluster).
- ``model``: ``whisper-1`` (what OpenAI apps send) or the served model's name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from whisperop.api.deps import Services, ServicesDep
from whisperop.api.openai_shapes import (
    GRANULARITIES,
    RESPONSE_FORMATS,
    OpenAIError,
    full_text,
    verbose_json,
)
from whisperop.api.routers.jobs import cancel, retry_after
from whisperop.api.upload import RETRY_BUSY_SECS, Upload, UploadRefused, receive_job_upload
from whisperop.core.errors import JobAlreadyTerminal, JobNotFound
from whisperop.core.languages import UnknownLanguageError, normalize_language
from whisperop.core.models import Job, JobStatus, ModelState, Task, TranscriptionResult
from whisperop.core.ports import DecodeHints, JobChange
from whisperop.inference.writers import render

log = logging.getLogger("whisperop.api.openai")

router = APIRouter(prefix="/v1", tags=["openai"])

OPENAI_ALIAS = "whisper-1"
FIELDS = frozenset({"model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
                    "timestamp_granularities", "stream"})
DISCONNECT_POLL_SECS = 0.5
MAX_PROMPT_CHARS = 2000  # whisper reads at most 224 prompt tokens (~900 characters of English); the rest is cut
_STARTED = int(time.time())


def _body(task: str) -> dict[str, Any]:
    props: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "the audio; any format ffmpeg decodes"},
        "model": {"type": "string", "description": f"'{OPENAI_ALIAS}' or the served model's name (GET /v1/models)"},
        "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS,
                   "description": "whisper's initial prompt: style, spelling, names (given to every ~60 s chunk)"},
        "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1,
                        "description": "sampling temperature of the first decode (fallback steps: TEMPERATURE_INC); "
                                       "omitted = the server's TEMPERATURE"},
    }
    if task == "transcribe":
        props["language"] = {"type": "string", "description": "ISO 639-1; omit to detect"}
        props["timestamp_granularities[]"] = {"type": "array", "items": {"type": "string", "enum": list(GRANULARITIES)},
                                              "description": "verbose_json only: word and/or segment (default)"}
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "model"], "properties": props}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid request (OpenAI error shape)"},
    404: {"description": "unknown model"},
    408: {"description": "the upload stalled (no data for UPLOAD_IDLE_TIMEOUT_SECS)"},
    429: {"description": "MAX_CONCURRENT_UPLOADS / MAX_UPLOADS_PER_TOKEN uploads in progress, or MAX_QUEUED_JOBS_PER_TOKEN "
                         "queued jobs (Retry-After)"},
    503: {"description": "the model did not become ready within SYNC_LOAD_WAIT_SECS", "headers": {"Retry-After": {
        "schema": {"type": "integer"}}}},
}


def served_models(svc: Services) -> list[str]:
    return [svc.settings.model_name, OPENAI_ALIAS]


def _model_created(svc: Services) -> int:
    path = getattr(svc.runtime, "model_path", None)
    try:
        return int(Path(path).stat().st_mtime) if path else _STARTED
    except OSError:
        return _STARTED


def model_doc(svc: Services, model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _model_created(svc), "owned_by": "whisper-operator"}


@router.get("/models", summary="Models (OpenAI-compatible)", description="The served model and its alias whisper-1.")
def list_models(svc: ServicesDep) -> Response:
    return JSONResponse({"object": "list", "data": [model_doc(svc, m) for m in served_models(svc)]})


@router.get("/models/{model_id}", summary="One model (OpenAI-compatible)", responses={404: _ERRORS[404]})
def get_model(model_id: str, svc: ServicesDep) -> Response:
    if model_id not in served_models(svc):
        raise OpenAIError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    return JSONResponse(model_doc(svc, model_id))


# ── request parsing ──────────────────────────────────────────────────────────


class Params:
    """The validated form fields of one request."""

    def __init__(self, upload: Upload, task: Task, svc: Services) -> None:
        f = upload.fields
        if not upload.audio_seen:
            raise OpenAIError(400, "missing required parameter 'file'", param="file", code="missing_required_parameter")
        if upload.audio_bytes == 0:
            raise OpenAIError(400, "the uploaded file is empty", param="file", code="empty_file")
        model = (f.get("model") or "").strip()
        if not model:
            raise OpenAIError(400, "missing required parameter 'model'", param="model", code="missing_required_parameter")
        if model not in served_models(svc):
            raise OpenAIError(404, f"The model '{model}' does not exist; this server serves "
                              f"{', '.join(served_models(svc))}", param="model", code="model_not_found")
        self.response_format = (f.get("response_format") or "json").strip()
        if self.response_format not in RESPONSE_FORMATS:
            raise OpenAIError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                              param="response_format", code="invalid_value")
        self.temperature = _temperature(f.get("temperature"))
        prompt = (f.get("prompt") or "").strip()
        if len(prompt) > MAX_PROMPT_CHARS:
            raise OpenAIError(400, f"prompt is longer than {MAX_PROMPT_CHARS} characters", param="prompt",
                              code="invalid_value")
        temp_given = f.get("temperature") is not None and f.get("temperature", "").strip() != ""
        self.hints = DecodeHints(prompt=prompt or None, temperature=self.temperature if temp_given else None)
        if (f.get("stream") or "").strip().lower() == "true":
            raise OpenAIError(400, "stream=true is not supported; the answer comes whole", param="stream",
                              code="unsupported_value")
        self.granularities = _granularities(upload.multi)
        self.language: str | None = None
        if task == Task.transcribe:
            try:
                self.language = normalize_language(f.get("language"))
            except UnknownLanguageError as exc:
                raise OpenAIError(400, str(exc), param="language", code="invalid_value") from None
        self.task = task


def _temperature(value: str | None) -> float:
    if value is None or not value.strip():
        return 0.0
    try:
        t = float(value)
    except ValueError:
        t = -1.0
    if not 0.0 <= t <= 1.0:
        raise OpenAIError(400, "temperature must be a number between 0 and 1", param="temperature", code="invalid_value")
    return t


def _granularities(multi: dict[str, list[str]]) -> list[str]:
    values = [v.strip() for k in ("timestamp_granularities[]", "timestamp_granularities") for v in multi.get(k, [])]
    for v in values:
        if v not in GRANULARITIES:
            raise OpenAIError(400, "timestamp_granularities[] must be 'word' or 'segment'",
                              param="timestamp_granularities", code="invalid_value")
    return values


# ── the request ──────────────────────────────────────────────────────────────


async def _wait_ready(request: Request, svc: Services) -> ModelState:
    """Ask for a load when unloaded and wait up to SYNC_LOAD_WAIT_SECS; the last state seen."""
    deadline = time.monotonic() + svc.settings.sync_load_wait_secs
    while True:
        state = svc.runtime.state
        if state == ModelState.ready or time.monotonic() >= deadline:
            return state
        if state == ModelState.unloaded:
            svc.runtime.request_load()
        if await request.is_disconnected():
            raise ClientDisconnect()
        await asyncio.sleep(0.2)


async def _await_job(request: Request, svc: Services, job_id: str, finished: asyncio.Event) -> Job | None:
    """The finished job, or None when the client went away (its job is then cancelled)."""
    while True:
        try:
            await asyncio.wait_for(finished.wait(), DISCONNECT_POLL_SECS)
        except asyncio.TimeoutError:
            pass
        job = await asyncio.to_thread(svc.jobs.get, job_id) if finished.is_set() else None
        if job is not None and job.status.terminal:
            return job
        if finished.is_set():
            finished.clear()
        if await request.is_disconnected():
            try:
                await asyncio.to_thread(cancel, job_id, svc)
            except (JobAlreadyTerminal, JobNotFound):
                pass
            log.info("client went away; its job was cancelled", extra={"job_id": job_id})
            return None


def _answer(job: Job, p: Params) -> Response:
    if job.status == JobStatus.failed:
        msg = job.error or "transcription failed"
        if "audio" in msg.lower():
            raise OpenAIError(400, msg, param="file", code="invalid_audio")
        raise OpenAIError(500, msg, type_="server_error", code="transcription_failed")
    if job.status != JobStatus.done:
        raise OpenAIError(500, f"job {job.id} ended {job.status.value}", type_="server_error", code=job.status.value)
    fmt = p.response_format
    if fmt == "json":
        return JSONResponse({"text": full_text(job)})
    if fmt == "verbose_json":
        return JSONResponse(verbose_json(job, p.task.value, p.granularities, p.hints.temperature))
    if fmt == "text":
        return Response(full_text(job) + "\n", media_type="text/plain; charset=utf-8")
    result = TranscriptionResult(language=job.language, duration_secs=job.duration_secs or 0.0, segments=job.segments)
    return Response(render(result, fmt), media_type="text/plain; charset=utf-8")


async def run_sync(request: Request, svc: Services, task: Task) -> Response:
    try:
        received = await receive_job_upload(request, svc, audio_field="file", text_fields=FIELDS)
    except UploadRefused as exc:
        if exc.kind == "busy":
            raise OpenAIError(429, exc.message, type_="rate_limit_error", code="rate_limit_exceeded",
                              headers={"Retry-After": str(RETRY_BUSY_SECS), "Connection": "close"}) from None
        if exc.kind == "stalled":
            raise OpenAIError(408, exc.message, code="upload_stalled", headers={"Connection": "close"}) from None
        if exc.kind == "multipart":
            raise OpenAIError(400, exc.message, code="invalid_multipart") from None
        return Response(status_code=400)  # the client is gone
    job_id, key, who, upload = received.job_id, received.key, received.who, received.upload
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()

    def on_change(change: JobChange) -> None:  # the store's thread, under its lock: only hand over
        if change.kind == "finished" and change.job.id == job_id:
            loop.call_soon_threadsafe(finished.set)

    unsubscribe = svc.jobs.watch(on_change)
    try:
        job, params = await _submit(request, svc, upload, key, job_id, task, who)
        svc.runtime.notify_job_queued()
        done = await _await_job(request, svc, job.id, finished)
    except ClientDisconnect:  # gone while waiting for the model: nothing was queued
        log.info("client went away before its job was queued; nothing kept", extra={"job_id": job_id})
        return Response(status_code=499)
    finally:
        unsubscribe()
    if done is None:
        return Response(status_code=499)
    return _answer(done, params)


async def _submit(request: Request, svc: Services, upload: Upload, key: list[str], job_id: str,
                  task: Task, who: str | None) -> tuple[Job, Params]:
    """Validate, wait for the model, commit the audio and queue the job; nothing is kept on failure."""
    committed = False
    try:
        p = Params(upload, task, svc)
        state = await _wait_ready(request, svc)
        if state != ModelState.ready:
            n = retry_after(state, svc)
            svc.metrics.uploads.labels("not_ready").inc()
            raise OpenAIError(503, f"the model is {state.value} and did not become ready within "
                              f"{svc.settings.sync_load_wait_secs} s; retry in {n} s",
                              type_="server_error", code="model_not_ready", headers={"Retry-After": str(n)})
        assert upload.writer is not None
        await asyncio.to_thread(upload.writer.commit)
        committed = True
        job = Job(id=job_id, task=task, language=p.language, filename=upload.filename)
        await asyncio.to_thread(svc.jobs.create, job, key[0], 0, p.hints, who)
    except BaseException as exc:
        if committed:
            await asyncio.to_thread(svc.blobs.delete, key[0])
        else:
            upload.abort()
            if not (isinstance(exc, OpenAIError) and exc.status_code == 503):
                svc.metrics.uploads.labels("rejected").inc()
        raise
    svc.metrics.uploads.labels("accepted").inc()
    log.info("openai request queued", extra={"job_id": job_id, "task": task.value, "bytes": upload.audio_bytes,
                                             "response_format": p.response_format})
    return job, p


@router.post("/audio/transcriptions", summary="Transcribe audio (OpenAI-compatible)", responses=_ERRORS,
             openapi_extra={"requestBody": _body("transcribe")}, response_class=Response)
async def transcriptions(request: Request, svc: ServicesDep) -> Response:
    return await run_sync(request, svc, Task.transcribe)


@router.post("/audio/translations", summary="Translate audio into English text (OpenAI-compatible)", responses=_ERRORS,
             openapi_extra={"requestBody": _body("translate")}, response_class=Response)
async def translations(request: Request, svc: ServicesDep) -> Response:
    return await run_sync(request, svc, Task.translate)
