"""The local ModelRuntime: the in-process whisper.cpp engine on one worker thread.

One thread owns the model and every transition of it, so there is no lock
around the engine and the model events come out in the order the states
were entered. The facade only *asks* (``request_load``, ``request_unload``,
``notify_job_queued``) and reads ``status()``; the thread decides:

    unloaded ─(load wanted)→ loading ─→ ready ─(unload wanted / idle)→ unloaded
                               └─(GpuMemoryError)→ waiting_for_gpu ─(poll interval)→ loading
    waiting_for_gpu / loading ─(unload wanted)→ unloaded

While ready it claims queued jobs from the JobStore one at a time (FIFO,
the store decides the order) and runs them; ``POST /model/unload`` therefore
naturally waits for the in-flight job. A job cancelled through the API is
already ``cancelled`` in the store; the JobStore watch sets this job's cancel
event, which the engine's abort callback polls, so whisper.cpp stops inside
the current chunk and the store drops the late result.

Test hooks (environment, documented here and in the README; nothing else
about the engine is simulated):

- ``WHISPEROP_FAULT_LOAD_OOM_COUNT=N``: the next N load attempts raise
  :class:`GpuMemoryError` as if VRAM were full (exercises ``waiting_for_gpu``).
- ``WHISPEROP_FAULT_LOAD_DELAY_SECS=S``: every load takes S seconds longer
  (makes ``loading`` observable; an unload request interrupts the delay).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from whisperop.core.checkpoints import CheckpointStore
from whisperop.core.errors import GpuMemoryError, JobCancelled, WhisperOpError
from whisperop.core.gpu import GpuInfo, gpu_memory, local_gpu
from whisperop.core.models import (
    JobStatus,
    ModelLoadingEvent,
    ModelReadyEvent,
    ModelState,
    ModelStatus,
    ModelUnloadedEvent,
    ModelWaitingForGpuEvent,
    utcnow,
)
from whisperop.core.ports import (
    BlobStore,
    ClaimedJob,
    JobChange,
    JobStore,
    JobTiming,
    RuntimeEvent,
    RuntimeListener,
    Unsubscribe,
)
from whisperop.core.settings import EngineSettings
from whisperop.core.subscribers import Subscribers
from whisperop.inference.engine import ChunkPipeline, Progress, TranscribeRequest, create_engine

log = logging.getLogger("whisperop.runtime")

EngineFactory = Callable[[Path, EngineSettings], ChunkPipeline]


class FaultHooks(BaseSettings):
    """Test hooks (see the module docstring); both default to off."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    load_oom_count: int = Field(0, ge=0, alias="WHISPEROP_FAULT_LOAD_OOM_COUNT")
    load_delay_secs: float = Field(0.0, ge=0.0, alias="WHISPEROP_FAULT_LOAD_DELAY_SECS")


class _Interrupted(Exception):
    """A load was abandoned because an unload (or stop) was requested meanwhile."""


def _default_engine(path: Path, settings: EngineSettings) -> ChunkPipeline:
    return create_engine(path, settings)


class LocalModelRuntime:
    """ModelRuntime of ``whisperop serve`` (see the module docstring)."""

    def __init__(
        self,
        model_path: str | Path,
        jobstore: JobStore,
        blobstore: BlobStore,
        engine_settings: EngineSettings | None = None,
        idle_timeout_secs: float = 300,
        gpu_poll_interval_secs: float = 30,
        faults: FaultHooks | None = None,
        engine_factory: EngineFactory = _default_engine,
        delete_audio: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        self.jobs = jobstore
        self.blobs = blobstore
        self.engine_settings = engine_settings or EngineSettings()
        self.idle_timeout_secs = idle_timeout_secs
        self.gpu_poll_interval_secs = gpu_poll_interval_secs
        self.faults = faults or FaultHooks()
        self._oom_left = self.faults.load_oom_count
        self._engine_factory = engine_factory
        self._delete_audio = delete_audio

        self._cond = threading.Condition()
        self._state = ModelState.unloaded
        self._loaded_at: datetime | None = None
        self._waiting: tuple[int, int, float] | None = None  # needed MB, free MB, retry at (monotonic)
        self._want_loaded = False
        self._wake = False
        self._stop = False
        self._last_activity = time.monotonic()
        self._engine: ChunkPipeline | None = None
        self._current: tuple[str, threading.Event] | None = None
        self._listeners: Subscribers[RuntimeEvent] = Subscribers("runtime listener")
        self._thread: threading.Thread | None = None
        self._unwatch: Unsubscribe | None = None

    # ── the port: what the facade calls ──────────────────────────────────

    @property
    def state(self) -> ModelState:
        return self._state

    def gpu(self) -> GpuInfo | None:
        return local_gpu(self.engine_settings.cuda_device)

    def status(self) -> ModelStatus:
        with self._cond:
            state, loaded_at, waiting = self._state, self._loaded_at, self._waiting
        doc = ModelStatus(state=state)
        if state == ModelState.ready:
            doc.loaded_at = loaded_at
        elif state == ModelState.waiting_for_gpu and waiting is not None:
            needed, free, retry_at = waiting
            doc.vram_needed_mb, doc.vram_free_mb = needed, free
            doc.retry_in_secs = max(0, math.ceil(retry_at - time.monotonic()))
        mem = gpu_memory(self.engine_settings.cuda_device)
        if mem is not None:
            doc.vram_used_mb, doc.vram_total_mb = mem.used_mb, mem.total_mb
        return doc

    def request_load(self) -> bool:
        with self._cond:
            if self._state == ModelState.ready:
                self._want_loaded = True  # also cancels a pending unload
                return False
            self._want_loaded = True
            self._cond.notify_all()
            return True

    def request_unload(self) -> None:
        with self._cond:
            self._want_loaded = False
            self._cond.notify_all()

    def notify_job_queued(self) -> None:
        """The newest intent wins: an accepted job is served, so it also (re)wants the model."""
        with self._cond:
            self._want_loaded = True
            self._wake = True
            self._cond.notify_all()

    def subscribe(self, listener: RuntimeListener) -> Unsubscribe:
        return self._listeners.add(listener)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._unwatch = self.jobs.watch(self._on_job_change)
        if self.jobs.queue_depth() > 0:
            # jobs accepted before a restart still run: they want the model
            log.info("queued jobs found at start: loading the model for them")
            self._want_loaded = True
        self._thread = threading.Thread(target=self._main, name="whisperop-worker", daemon=True)
        self._thread.start()

    def begin_stop(self) -> None:
        """Stop taking work and abort the chunk in flight, without waiting.

        Called from the stop signal itself, before the HTTP server drains its
        connections (up to 3 s): the job keeps its audio and checkpoint and the
        next start resumes it, so there is nothing to gain by decoding on."""
        with self._cond:
            self._stop = True
            current = self._current
            self._cond.notify_all()
        if current is not None:
            current[1].set()  # abort the in-flight call; the next start queues the job again (checkpointed)

    def stop(self, timeout: float = 10.0) -> None:
        self.begin_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self._close_engine()

    # ── events ───────────────────────────────────────────────────────────

    def _emit(self, event: RuntimeEvent) -> None:
        self._listeners.publish(event)

    def _set_state(self, state: ModelState) -> None:
        with self._cond:
            self._state = state
            if state != ModelState.waiting_for_gpu:
                self._waiting = None
            if state != ModelState.ready:
                self._loaded_at = None
        log.info("model state", extra={"state": state.value, "model": str(self.model_path)})

    def _on_job_change(self, change: JobChange) -> None:
        current = self._current
        if current is not None and change.job.id == current[0] and change.job.status == JobStatus.cancelled:
            current[1].set()

    # ── the worker thread ────────────────────────────────────────────────

    def _main(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stop:
                        return
                    want = self._want_loaded
                    loaded = self._engine is not None
                    if not want and not loaded:
                        self._cond.wait()
                        continue
                if want and not loaded:
                    self._load_cycle()
                elif not want and loaded:
                    self._unload()
                else:
                    self._serve_one()
        except Exception:  # pragma: no cover - a bug; keep the process honest about it
            log.exception("model worker thread died")
            raise

    def _serve_one(self) -> None:
        """Run the next queued job, or wait for work / the idle timeout."""
        claimed = self.jobs.claim_next()
        if claimed is not None:
            self._run(claimed)
            self._last_activity = time.monotonic()
            return
        with self._cond:
            if self._wake or self._stop or not self._want_loaded:
                self._wake = False
                return
            timeout: float | None = None
            if self.idle_timeout_secs > 0:
                timeout = self._last_activity + self.idle_timeout_secs - time.monotonic()
                if timeout <= 0:
                    log.info("idle timeout: unloading the model", extra={"idle_timeout_secs": self.idle_timeout_secs})
                    self._want_loaded = False
                    return
            self._cond.wait(timeout)

    # loading ------------------------------------------------------------

    def _load_cycle(self) -> None:
        """loading → ready, or → waiting_for_gpu and retry, or → unloaded if unwanted."""
        while True:
            with self._cond:
                if not self._want_loaded or self._stop:
                    break
            self._set_state(ModelState.loading)
            self._emit(ModelLoadingEvent())
            try:
                engine = self._load_engine()
            except _Interrupted:
                break
            except GpuMemoryError as exc:
                if not self._wait_for_gpu(exc):
                    break
                continue
            except WhisperOpError as exc:
                log.error("model load failed", extra={"model": str(self.model_path), "error": str(exc)})
                with self._cond:
                    self._want_loaded = False
                break
            with self._cond:
                keep = self._want_loaded and not self._stop
                if keep:
                    self._engine = engine
            if not keep:
                engine.close()
                break
            self._last_activity = time.monotonic()
            loaded_at = utcnow()
            with self._cond:
                self._state = ModelState.ready
                self._loaded_at = loaded_at
                self._waiting = None
            log.info("model ready", extra={"model": str(self.model_path), "state": "ready"})
            self._emit(ModelReadyEvent(loaded_at=loaded_at))
            return
        self._set_state(ModelState.unloaded)
        self._emit(ModelUnloadedEvent())

    def _sleep_unless_unwanted(self, secs: float) -> bool:
        """Sleep up to ``secs``; False when an unload/stop came in meanwhile."""
        deadline = time.monotonic() + secs
        with self._cond:
            while self._want_loaded and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self._cond.wait(left)
            return False

    def _load_engine(self) -> ChunkPipeline:
        if self.faults.load_delay_secs > 0 and not self._sleep_unless_unwanted(self.faults.load_delay_secs):
            raise _Interrupted()
        if self._oom_left > 0:
            self._oom_left -= 1
            needed = max(1, self.model_path.stat().st_size // (1024 * 1024)) if self.model_path.exists() else 1
            mem = gpu_memory(self.engine_settings.cuda_device)
            raise GpuMemoryError(
                "simulated out of GPU memory (WHISPEROP_FAULT_LOAD_OOM_COUNT test hook)",
                vram_needed_mb=int(needed),
                vram_free_mb=mem.free_mb if mem else 0,
            )
        return self._engine_factory(self.model_path, self.engine_settings)

    def _wait_for_gpu(self, exc: GpuMemoryError) -> bool:
        """waiting_for_gpu for one poll interval; False when unloaded meanwhile."""
        mem = gpu_memory(self.engine_settings.cuda_device)
        needed = exc.vram_needed_mb if exc.vram_needed_mb is not None else max(1, self.model_path.stat().st_size // (1024 * 1024))
        free = exc.vram_free_mb if exc.vram_free_mb is not None else (mem.free_mb if mem else 0)
        poll = self.gpu_poll_interval_secs
        with self._cond:
            self._state = ModelState.waiting_for_gpu
            self._loaded_at = None
            self._waiting = (int(needed), int(free), time.monotonic() + poll)
        log.warning("not enough GPU memory to load the model; retrying", extra={"error": str(exc), "retry_in_secs": poll})
        self._emit(ModelWaitingForGpuEvent(vram_needed_mb=int(needed), vram_free_mb=int(free), retry_in_secs=int(poll)))
        return self._sleep_unless_unwanted(poll)

    # unloading ----------------------------------------------------------

    def _close_engine(self) -> None:
        with self._cond:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def _unload(self) -> None:
        self._close_engine()
        self._set_state(ModelState.unloaded)
        log.info("model unloaded", extra={"model": str(self.model_path)})
        self._emit(ModelUnloadedEvent())

    # running a job ------------------------------------------------------

    def _run(self, claimed: ClaimedJob) -> None:
        job = claimed.job
        engine = self._engine
        assert engine is not None
        cancel = threading.Event()
        with self._cond:
            self._current = (job.id, cancel)
        if self.jobs.get(job.id).status == JobStatus.cancelled:  # cancelled between claim and here
            cancel.set()
        log.info("job started", extra={"job_id": job.id, "task": job.task.value, "language": job.language})
        t0 = time.monotonic()

        def on_decoded(duration: float, chunks: int) -> None:
            self.jobs.record_progress(job.id, 0, chunks, round(duration, 3))

        def on_progress(p: Progress) -> None:
            self.jobs.record_progress(job.id, p.chunk, p.chunks_total)

        result = None
        error: str | None = None
        interrupted = False
        checkpoint = self.jobs.checkpoint(job.id) if isinstance(self.jobs, CheckpointStore) else None
        request = TranscribeRequest(language=job.language, task=job.task, prompt=claimed.hints.prompt,
                                    temperature=claimed.hints.temperature, time_limit_secs=job.time_limit_secs,
                                    chunk_time_limit_factor=job.chunk_time_limit_factor)
        try:
            with self.blobs.local_path(claimed.audio_key) as path:
                result = engine.transcribe_file(
                    path,
                    request,
                    on_progress=on_progress,
                    should_cancel=cancel.is_set,
                    on_decoded=on_decoded,
                    checkpoint=checkpoint,
                )
        except JobCancelled:
            # a user's cancel (the job is already cancelled in the store), or the server stopping:
            # then the job stays running in the store, keeps its audio and checkpoint, and the next
            # start queues it again (resuming at its first unfinished chunk)
            interrupted = self._stop and self.jobs.get(job.id).status == JobStatus.running
            log.info("job interrupted by shutdown; resumes at next start" if interrupted else "job cancelled while running; aborted",
                     extra={"job_id": job.id})
        except WhisperOpError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("job failed unexpectedly", extra={"job_id": job.id})
            error = f"transcription failed: {exc}"
        finally:
            with self._cond:
                self._current = None
            # the audio goes before the job is marked terminal: a finished job never leaves a blob behind;
            # an interrupted one keeps it until it is terminal
            if not interrupted:
                self._drop_audio(job.id, claimed.audio_key)
        wall = time.monotonic() - t0
        if result is not None:
            if self.jobs.complete(job.id, result) is not None:
                log.info("job done", extra={"job_id": job.id, "audio_secs": result.duration_secs, "wall_secs": round(wall, 3),
                                            "segments": len(result.segments), "segments_removed": len(result.removed),
                                            "degraded_chunks": [d.index for d in result.degraded_chunks]})
                self._emit(JobTiming(job_id=job.id, audio_secs=result.duration_secs, wall_secs=wall))
            else:
                log.info("job cancelled while running; result discarded", extra={"job_id": job.id})
        elif error is not None:
            log.info("job failed", extra={"job_id": job.id, "error": error})
            self.jobs.fail(job.id, error)

    def _drop_audio(self, job_id: str, key: str) -> None:
        if not self._delete_audio:
            return
        try:
            self.blobs.delete(key)
        except Exception:
            log.warning("could not delete job audio", extra={"job_id": job_id}, exc_info=True)
