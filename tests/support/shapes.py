"""Shape checks: pydantic validation with whisperop.core.models AND exact key sets."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx

from whisperop.core import models as m

JOB_KEYS = frozenset(m.Job.model_fields)
SEGMENT_KEYS = frozenset(m.Segment.model_fields)
WORD_KEYS = frozenset(m.Word.model_fields)
HEALTH_KEYS = frozenset(m.Health.model_fields)
NOT_READY_KEYS = frozenset(m.ModelNotReady.model_fields)
VRAM_KEYS = frozenset({"vram_used_mb", "vram_total_mb"})  # omitted when unknown, in any state
STREAM_KEYS = frozenset({"streams", "streams_wanted"})  # ready only: decode streams loaded / wanted (issue 14)
MODEL_STATUS_REQUIRED = {
    "unloaded": frozenset({"state"}),
    "loading": frozenset({"state"}),
    "waiting_for_gpu": frozenset({"state", "vram_needed_mb", "vram_free_mb", "retry_in_secs"}),
    "ready": frozenset({"state", "loaded_at"}),
}
JOB_EVENT_KEYS = {
    "progress": frozenset(m.ProgressEvent.model_fields),
    "done": frozenset(m.DoneEvent.model_fields),
    "error": frozenset(m.ErrorEvent.model_fields),
}
MODEL_EVENT_KEYS = {
    "model_loading": frozenset(m.ModelLoadingEvent.model_fields),
    "model_ready": frozenset(m.ModelReadyEvent.model_fields),
    "model_unloaded": frozenset(m.ModelUnloadedEvent.model_fields),
    "model_waiting_for_gpu": frozenset(m.ModelWaitingForGpuEvent.model_fields),
    "model_streams": frozenset(m.ModelStreamsEvent.model_fields),
}
RESTART_MESSAGE = "server restarted while job was running"


def parse_utc(value: Any, what: str = "timestamp") -> datetime:
    assert isinstance(value, str), f"{what}: expected an ISO 8601 string, got {value!r}"
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AssertionError(f"{what}: not ISO 8601: {value!r}") from exc
    assert dt.utcoffset() == timedelta(0), f"{what}: not UTC: {value!r}"
    return dt


def exact_keys(body: Any, expected: frozenset[str] | set[str], what: str) -> None:
    assert isinstance(body, dict), f"{what}: expected a JSON object, got {body!r}"
    got = set(body)
    assert got == set(expected), f"{what}: keys {sorted(got)} != expected {sorted(expected)} (extra {sorted(got - set(expected))}, missing {sorted(set(expected) - got)})"


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


def assert_job(body: Any, job_id: str | None = None, status: str | None = None) -> m.Job:
    """Validate a Job body (model + exact keys + per-status invariants)."""
    exact_keys(body, JOB_KEYS, "Job")
    job = m.Job.model_validate(body)
    if job_id is not None:
        assert body["id"] == job_id, f"Job id {body['id']!r} != {job_id!r}"
    if status is not None:
        assert body["status"] == status, f"job {body['id']}: status {body['status']!r} != {status!r} (error={body.get('error')!r})"
    parse_utc(body["created_at"], "created_at")
    for i, seg in enumerate(body["segments"]):
        exact_keys(seg, SEGMENT_KEYS, f"segments[{i}]")
        assert seg["start"] <= seg["end"], f"segments[{i}]: start {seg['start']} > end {seg['end']}"
        for j, w in enumerate(seg["words"]):
            exact_keys(w, WORD_KEYS, f"segments[{i}].words[{j}]")
    idx = [s["index"] for s in body["segments"]]
    assert idx == sorted(set(idx)), f"segment indexes not strictly increasing: {idx}"
    st = body["status"]
    if st in ("done", "failed", "cancelled"):
        assert body["completed_at"] is not None, f"{st} job without completed_at"
        assert parse_utc(body["completed_at"], "completed_at") >= parse_utc(body["created_at"]) - timedelta(seconds=1)
    else:
        assert body["completed_at"] is None, f"{st} job with completed_at {body['completed_at']!r}"
    if st == "done":
        assert body["progress"] == 100, f"done job with progress {body['progress']}"
        assert body["error"] is None, f"done job with error {body['error']!r}"
        assert body["duration_secs"] is not None and body["duration_secs"] > 0, f"done job duration_secs {body['duration_secs']!r}"
    if st == "failed":
        assert isinstance(body["error"], str) and body["error"].strip(), f"failed job without error message: {body['error']!r}"
    if st == "queued":
        assert body["segments"] == [], "queued job with segments"
    return job


def assert_model_status(body: Any, state: str | None = None) -> m.ModelStatus:
    assert isinstance(body, dict) and "state" in body, f"model status without state: {body!r}"
    st = body["state"]
    if state is not None:
        assert st == state, f"model state {st!r} != {state!r} (body {body})"
    assert st in MODEL_STATUS_REQUIRED, f"unknown model state {st!r}"
    required = MODEL_STATUS_REQUIRED[st]
    got = set(body)
    assert required <= got, f"model status {st}: missing {sorted(required - got)} in {body}"
    optional = VRAM_KEYS | (STREAM_KEYS if st == "ready" else frozenset())
    assert got <= required | optional, f"model status {st}: unexpected keys {sorted(got - required - optional)} in {body}"
    if STREAM_KEYS & got:
        assert STREAM_KEYS <= got and 1 <= body["streams"] <= body["streams_wanted"], f"model status streams: {body}"
    nulls = [k for k, v in body.items() if v is None]
    assert not nulls, f"model status {st}: fields that do not apply must be omitted, not null: {nulls}"
    if st == "ready":
        parse_utc(body["loaded_at"], "loaded_at")
    return m.ModelStatus.model_validate(body)


def assert_health(body: Any, model_state: str | None = None) -> m.Health:
    exact_keys(body, HEALTH_KEYS, "/health")
    h = m.Health.model_validate(body)
    assert body["status"] == "ok"
    assert isinstance(body["queue_depth"], int) and body["queue_depth"] >= 0
    if model_state is not None:
        assert body["model_state"] == model_state, f"/health model_state {body['model_state']!r} != {model_state!r}"
    return h


def assert_json_response(r: httpx.Response) -> Any:
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"{r.request.method} {r.request.url.path}: content-type {ctype!r}, body {r.text[:300]!r}"
    return r.json()


def assert_error(r: httpx.Response, status: int, message: str | None = None, prefix: str | None = None, contains: str | None = None) -> str:
    """An error answer: ``status`` and a body of exactly ``{"error": "<message>"}``."""
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: expected {status}, got {r.status_code}: {r.text[:500]}"
    body = assert_json_response(r)
    exact_keys(body, {"error"}, f"{status} error body")
    m.ErrorResponse.model_validate(body)
    msg = body["error"]
    if message is not None:
        assert msg == message, f"error message {msg!r} != {message!r}"
    if prefix is not None:
        assert msg.startswith(prefix), f"error message {msg!r} does not start with {prefix!r}"
    if contains is not None:
        assert contains.lower() in msg.lower(), f"error message {msg!r} does not mention {contains!r}"
    return msg


def assert_not_ready(r: httpx.Response, state: str, retry_after: int) -> dict[str, Any]:
    """503 model_not_ready: exact body and the Retry-After header."""
    assert r.status_code == 503, f"POST /jobs: expected 503 ({state}), got {r.status_code}: {r.text[:500]}"
    body = assert_json_response(r)
    exact_keys(body, NOT_READY_KEYS, "503 body")
    m.ModelNotReady.model_validate(body)
    assert body == {"error": "model_not_ready", "state": state, "retry_after_secs": retry_after}, f"503 body {body}"
    assert r.headers.get("retry-after") == str(retry_after), f"Retry-After header {r.headers.get('retry-after')!r} != {retry_after!r}"
    return body


def assert_job_event(name: str, payload: Any) -> Any:
    assert name in JOB_EVENT_KEYS, f"unexpected job SSE event name {name!r}"
    exact_keys(payload, JOB_EVENT_KEYS[name], f"job SSE {name} payload")
    assert payload["type"] == name, f"SSE event name {name!r} but payload type {payload['type']!r}"
    if name == "progress":
        ev = m.ProgressEvent.model_validate(payload)
        assert 0 <= ev.percent <= 100 and 1 <= ev.chunk <= ev.chunks_total, f"progress payload out of range: {payload}"
        # percent = chunks done / total, rounded down (the contract's example: chunk 3 of 7 -> 42)
        assert ev.percent == (100 * ev.chunk) // ev.chunks_total, f"progress percent inconsistent with chunk/chunks_total: {payload}"
        return ev
    if name == "done":
        assert_job(payload["job"])
        return m.DoneEvent.model_validate(payload)
    ev = m.ErrorEvent.model_validate(payload)
    assert ev.message.strip(), "error event with an empty message"
    return ev


def assert_model_event(name: str, payload: Any) -> Any:
    assert name in MODEL_EVENT_KEYS, f"unexpected model SSE event name {name!r}"
    exact_keys(payload, MODEL_EVENT_KEYS[name], f"model SSE {name} payload")
    assert payload["type"] == name, f"SSE event name {name!r} but payload type {payload['type']!r}"
    if name == "model_ready":
        parse_utc(payload["loaded_at"], "model_ready.loaded_at")
    from pydantic import TypeAdapter

    return TypeAdapter(m.ModelEvent).validate_python(payload)
