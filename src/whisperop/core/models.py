"""The shared contract: pydantic models of jobs, transcripts and model state.

These are the single source of the JSON shapes that the REST facade serves
(``../shared/contract``), that the worker stores as results, and that the
cluster resources carry in their status. Field names and nullability follow
the original server exactly: optional fields are present as ``null`` rather
than omitted, except in model-status payloads where the original omits
fields that do not apply to the state.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_timestamp(dt: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z`` suffix, as the original emits."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.done, JobStatus.failed, JobStatus.cancelled)


class Task(str, Enum):
    transcribe = "transcribe"
    translate = "translate"  # type: ignore[assignment]  # the wire value; shadows str.translate on members only


class Word(BaseModel):
    text: str
    start: float = Field(description="seconds from the start of the audio")
    end: float
    probability: float = Field(ge=0.0, le=1.0)


class Segment(BaseModel):
    index: int
    start: float = Field(description="seconds from the start of the audio")
    end: float
    text: str
    words: list[Word] = Field(default_factory=list)
    suspect: list[str] | None = Field(
        default=None,
        description="null, or the evidence that this segment is a likely hallucination: "
        "no_speech (no speech energy under its span), low_probability (mean word probability < 0.4), "
        "high_compression (zlib compression ratio of its text > 2.4). Flagged, never removed.",
    )


class RemovedText(BaseModel):
    """Text that repetition handling removed from the transcript (kept here so nothing vanishes silently)."""

    start: float = Field(description="seconds from the start of the audio")
    end: float
    text: str
    reason: Literal["repeat_over_silence", "repeat_overlapping", "loop_in_span", "partial"] = Field(
        description="repeat_over_silence: the same text again with no speech of its own under it; "
        "repeat_overlapping: the same text again over the previous segment's time span; "
        "loop_in_span: a unit repeated inside one segment without speech for each repetition; "
        "partial: a rolling partial hypothesis merged into the longer segment that follows it",
    )


class DegradedChunk(BaseModel):
    """A chunk that ran over its time limit (see docs/serve.md, "Time limits")."""

    index: int
    start: float = Field(description="seconds from the start of the audio")
    end: float
    failed: bool = Field(description="true: no text for this span (both attempts ran over); false: the retry finished in time")
    reason: str


class Job(BaseModel):
    """A transcription job as ``GET /jobs/{id}`` returns it."""

    id: str
    status: JobStatus = JobStatus.queued
    task: Task = Task.transcribe
    language: str | None = None
    progress: int = Field(default=0, ge=0, le=100)
    duration_secs: float | None = None
    segments: list[Segment] = Field(default_factory=list)
    error: str | None = None
    webhook_url: str | None = None
    filename: str | None = None
    created_at: Timestamp = Field(default_factory=utcnow)
    completed_at: Timestamp | None = None
    segments_removed: int = Field(
        default=0, ge=0,
        description="segments or repetitions that repetition handling removed (docs/serve.md, \"Repetition\")",
    )
    removed: list[RemovedText] | None = Field(
        default=None, description="the removed text with its times; only with GET /jobs/{id}?verbose=true, else null",
    )
    degraded_chunks: list[DegradedChunk] = Field(
        default_factory=list, description="chunks that ran over the per-chunk time limit (retried, or failed)",
    )
    time_limit_secs: float | None = Field(
        default=None, gt=0, description="this job's wall-time limit per run (submit field); null = the server's JOB_TIME_LIMIT_SECS",
    )
    chunk_time_limit_factor: float | None = Field(
        default=None, gt=0,
        description="this job's per-chunk limit factor (submit field); null = the server's CHUNK_TIME_LIMIT_FACTOR",
    )


class JobSummary(BaseModel):
    """A job in ``GET /jobs``: the Job without its segments (fetch ``/jobs/{id}`` or a transcript file)."""

    id: str
    status: JobStatus
    task: Task
    language: str | None
    progress: int
    duration_secs: float | None
    error: str | None
    webhook_url: str | None
    filename: str | None
    created_at: Timestamp
    completed_at: Timestamp | None
    segments_removed: int = Field(default=0, ge=0, description="as in GET /jobs/{id}")
    degraded_chunks: list[DegradedChunk] = Field(default_factory=list, description="as in GET /jobs/{id}")


class JobList(BaseModel):
    """``GET /jobs``: newest first; pass ``next_cursor`` as ``cursor`` for the next page (null on the last)."""

    jobs: list[JobSummary]
    next_cursor: str | None


class SubmitResponse(BaseModel):
    job_id: str


class ErrorResponse(BaseModel):
    error: str


class ModelState(str, Enum):
    unloaded = "unloaded"
    loading = "loading"
    waiting_for_gpu = "waiting_for_gpu"
    ready = "ready"


class ModelStatus(BaseModel):
    """``GET /model/status``. Fields that do not apply to ``state`` are omitted
    (serialise with ``exclude_none=True``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"state": "ready", "loaded_at": "2026-05-10T14:00:00.000Z"}]})

    state: ModelState
    loaded_at: Timestamp | None = None
    vram_needed_mb: int | None = None
    vram_free_mb: int | None = None
    retry_in_secs: int | None = None
    vram_used_mb: int | None = None
    vram_total_mb: int | None = None
    streams: int | None = Field(None, description="ready: decode streams loaded now (fewer than wanted while "
                                "GPU memory was short; more are added as it frees up)")
    streams_wanted: int | None = Field(None, description="ready: decode streams the settings ask for")


class ModelNotReady(BaseModel):
    """Body of the 503 answer to ``POST /jobs`` while the model is not ready."""

    error: Literal["model_not_ready"] = "model_not_ready"
    state: ModelState
    retry_after_secs: int


class ModelActionResponse(BaseModel):
    """Answer of ``POST /model/load`` (202 ``load_initiated`` / 200 ``already_ready``)
    and ``POST /model/unload`` (200 ``unload_requested``)."""

    status: Literal["load_initiated", "already_ready", "unload_requested"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    gpu_name: str | None = None
    vram_total_mb: int | None = None
    model: str
    queue_depth: int
    model_state: ModelState


# ── SSE / webhook event payloads ────────────────────────────────────────────


class ProgressEvent(BaseModel):
    type: Literal["progress"] = "progress"
    percent: int
    chunk: int
    chunks_total: int


class DoneEvent(BaseModel):
    type: Literal["done"] = "done"
    job: Job


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    message: str


JobEvent = Annotated[Union[ProgressEvent, DoneEvent, ErrorEvent], Field(discriminator="type")]


class ModelLoadingEvent(BaseModel):
    type: Literal["model_loading"] = "model_loading"


class ModelReadyEvent(BaseModel):
    type: Literal["model_ready"] = "model_ready"
    loaded_at: Timestamp


class ModelUnloadedEvent(BaseModel):
    type: Literal["model_unloaded"] = "model_unloaded"


class ModelWaitingForGpuEvent(BaseModel):
    type: Literal["model_waiting_for_gpu"] = "model_waiting_for_gpu"
    vram_needed_mb: int
    vram_free_mb: int
    retry_in_secs: int


class ModelStreamsEvent(BaseModel):
    """Decode streams were added to a ready model (GPU memory freed up after a load that started
    fewer than wanted; issue 14). An addition to the contract's model events."""

    type: Literal["model_streams"] = "model_streams"
    streams: int
    streams_wanted: int


ModelEvent = Annotated[
    Union[ModelLoadingEvent, ModelReadyEvent, ModelUnloadedEvent, ModelWaitingForGpuEvent, ModelStreamsEvent],
    Field(discriminator="type"),
]


class TranscriptionResult(BaseModel):
    """What the engine produces for one audio file (stored before a job is marked done)."""

    language: str | None
    duration_secs: float
    segments: list[Segment]
    chunks: int = 0
    removed: list[RemovedText] = Field(default_factory=list)
    degraded_chunks: list[DegradedChunk] = Field(default_factory=list)


def to_json_dict(model: BaseModel, **kwargs: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", **kwargs)
