"""Server-Sent Events: one in-process broadcaster, one topic per job (and one for the model).

Every job's changes reach the facade once, through ``JobQueue.watch``
(local: the SQLite writer; cluster: the one watch on TranscriptionJobs).
:class:`EventHub` turns each change into SSE messages and publishes them on
the job's topic; every ``GET /jobs/{id}/stream`` connection is a queue on
that topic. Model lifecycle events come from the ModelRuntime the same way.
A stream reads the job once when it starts (and, for a running job, its
progress), then only its queue: 500 subscribers cost 500 reads at connect
and 500 queue puts per event, never a read per event.

Publishing is thread-safe (the publisher is the local worker thread or the
cluster watch thread; subscribers live on the event loop): each subscriber
remembers its loop and gets items through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from whisperop.core.models import (
    DoneEvent,
    ErrorEvent,
    JobStatus,
    ModelLoadingEvent,
    ModelReadyEvent,
    ModelUnloadedEvent,
    ModelStreamsEvent,
    ModelWaitingForGpuEvent,
    ProgressEvent,
)
from whisperop.core.ports import JobChange, JobQueue, ModelRuntime, RuntimeEvent, Unsubscribe

KEEPALIVE_SECS = 15.0
MODEL_TOPIC = "__model__"


@dataclass(frozen=True)
class SseMessage:
    """One SSE event: ``event: <name>`` and a JSON ``data:`` line."""

    event: str
    data: str
    final: bool = False  # the stream ends after this one (a job's done event)

    def encode(self) -> bytes:
        return f"event: {self.event}\ndata: {self.data}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


def message(event: str, payload: Any, final: bool = False) -> SseMessage:
    data = payload.model_dump_json() if hasattr(payload, "model_dump_json") else json.dumps(payload)
    return SseMessage(event, data, final)


class Subscription:
    """A subscriber's queue on one topic; iterate it on the loop that created it."""

    def __init__(self, broadcaster: "Broadcaster", topic: str) -> None:
        self._broadcaster = broadcaster
        self.topic = topic
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[SseMessage] = asyncio.Queue()

    def push(self, item: SseMessage) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def get(self, timeout: float) -> SseMessage | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self._broadcaster.unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Broadcaster:
    """Topic → subscribers. ``publish`` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, topic: str) -> Subscription:
        sub = Subscription(self, topic)
        with self._lock:
            self._subs.setdefault(topic, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.topic]

    def publish(self, topic: str, item: SseMessage) -> int:
        with self._lock:
            subs = list(self._subs.get(topic, ()))
        for sub in subs:
            try:
                sub.push(item)
            except RuntimeError:  # its loop is closed: the connection is gone
                self.unsubscribe(sub)
        return len(subs)

    def subscriber_count(self, topic: str | None = None) -> int:
        with self._lock:
            if topic is not None:
                return len(self._subs.get(topic, ()))
            return sum(len(s) for s in self._subs.values())


def job_messages(change: JobChange) -> list[SseMessage]:
    """The SSE messages one job change produces (none for most changes)."""
    job = change.job
    if change.kind == "progress" and change.chunk >= 1 and change.chunks_total >= 1:
        return [message("progress", ProgressEvent(percent=(100 * change.chunk) // change.chunks_total, chunk=change.chunk,
                                                  chunks_total=change.chunks_total))]
    if change.kind == "finished" and job.status.terminal:
        out = []
        if job.status == JobStatus.failed:
            out.append(message("error", ErrorEvent(message=job.error or "transcription failed")))
        out.append(message("done", DoneEvent(job=job.model_copy(update={"removed": None})), final=True))
        return out
    return []


_MODEL_EVENTS = (ModelLoadingEvent, ModelReadyEvent, ModelUnloadedEvent, ModelWaitingForGpuEvent, ModelStreamsEvent)


class EventHub:
    """Feeds the broadcaster from the JobQueue watch and the runtime's events."""

    def __init__(self, jobstore: JobQueue, runtime: ModelRuntime) -> None:
        self.jobstore = jobstore
        self.runtime = runtime
        self.broadcaster = Broadcaster()
        self._unsubs: list[Unsubscribe] = []

    def start(self) -> None:
        self._unsubs = [self.jobstore.watch(self._on_job), self.runtime.subscribe(self._on_runtime)]

    def stop(self) -> None:
        for u in self._unsubs:
            u()
        self._unsubs = []

    def _on_job(self, change: JobChange) -> None:
        if self.broadcaster.subscriber_count(change.job.id) == 0:
            return
        for msg in job_messages(change):
            self.broadcaster.publish(change.job.id, msg)

    def _on_runtime(self, event: RuntimeEvent) -> None:
        if isinstance(event, _MODEL_EVENTS):
            self.broadcaster.publish(MODEL_TOPIC, message(event.type, event))

    # ── streams for the routers ──────────────────────────────────────────

    async def job_stream(self, job_id: str, load_job: Callable[[str], Any],
                         load_progress: Callable[[str], tuple[int, int] | None] | None = None) -> AsyncIterator[bytes]:
        """Subscribe *then* read the job, so no change falls between the two;
        a job that is already finished gets its single ``done`` and the end.

        A running job's stream starts with its current state (``progress``
        with the chunks done so far, 0 included, once the audio is planned):
        a subscriber that joins mid-job would otherwise hear nothing until the
        next chunk ends (up to a minute of audio's decode time). Queued
        progress events that are not newer than that state are skipped."""
        sub = self.broadcaster.subscribe(job_id)
        try:
            job = await asyncio.to_thread(load_job, job_id)
            if job.status.terminal:
                yield message("done", DoneEvent(job=job.model_copy(update={"removed": None}))).encode()
                return
            sent = -1
            if job.status == JobStatus.running and load_progress is not None:
                state = await asyncio.to_thread(load_progress, job_id)
                if state is not None and state[1] >= 1:
                    chunk, total = state
                    sent = chunk
                    yield message("progress", ProgressEvent(percent=(100 * chunk) // total, chunk=chunk, chunks_total=total)).encode()
            while True:
                item = await sub.get(KEEPALIVE_SECS)
                if item is None:
                    yield KEEPALIVE
                    continue
                if item.event == "progress" and int(json.loads(item.data)["chunk"]) <= sent:
                    continue
                yield item.encode()
                if item.final:
                    return
        finally:
            sub.close()

    async def model_stream(self) -> AsyncIterator[bytes]:
        sub = self.broadcaster.subscribe(MODEL_TOPIC)
        try:
            while True:
                item = await sub.get(KEEPALIVE_SECS)
                yield KEEPALIVE if item is None else item.encode()
        finally:
            sub.close()
