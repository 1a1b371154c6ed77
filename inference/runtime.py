"""The local ModelRuntime: the in-process whisper.cpp engine on one worker thread.

One thread owns the model and every transition of it, so there is no lock
around the engine and the model events come out in the order the states
were entered. The facade only *asks* (``request_load``, ``request_unload``,
``notify_job_queued``) and reads ``status()``; the thread decides:

    unloaded ─(load wanted)→ loading ─→ ready ─(unload wanted / idle)→ unloaded
                               └─(GpuMemoryError)→ waiting_for_gpu ─(poll interval)→ loading
    waiting_for_gpu / loading ─(unload wanted)→ unloaded
    ready ─(engine process died, no job running)→ loading (→ waiting_for_gpu first when it died out of GPU memory)

While ready, an isolated engine (:class:`whisperop.inference.isolated.IsolatedEngine`)
is supervised (issue 14): its death wakes this thread at once (not at the
next job), and when it started fewer decode streams than wanted (GPU memory
was short) it adds them as memory frees up, checked every
``GPU_POLL_INTERVAL_SECS``; ``/model/status`` shows ``streams`` /
``streams_wanted`` and ``/model/events`` a ``model_streams`` event.

Loading is :class:`whisperop.inference.lifecycle.ModelLoader` (the same loop,
GPU wait and test hooks as the worker pod's); this module maps its steps to
model states and events. While ready the thread runs the serving loop of
:meth:`whisperop.inference.executor.Executor.serve` (the worker pod's too) on
the local WorkQueue (:class:`whisperop.stores.local_queue.LocalWorkQueue`:
FIFO, the store decides the order): a job a free slot, each on a thread of its
own; ``POST /model/unload`` waits for the running jobs, and the idle timeout
counts only while none runs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import datetime
from pathlib import Path

from whisperop.core.errors import GpuMemoryError, WhisperOpError
from whisperop.core.gpu import GpuInfo, gpu_memory, local_gpu
from whisperop.core import models
from whisperop.core.models import ModelState, ModelStatus, utcnow
from whisperop.core.ports import BlobStore, RuntimeEvent, RuntimeListener, Unsubscribe
from whisperop.core.settings import EngineSettings
from whisperop.core.subscribers import Subscribers
from whisperop.inference.executor import Executor, job_concurrency
from whisperop.inference.isolated import Engine, IsolatedEngine, stream_counts
from whisperop.inference.lifecycle import EngineFactory, FaultHooks, ModelLoader, default_engine
from whisperop.stores.local_queue import LocalWorkQueue
from whisperop.stores.sqlite_jobs import SqliteJobStore

__all__ = ["FaultHooks", "LocalModelRuntime"]

log = logging.getLogger("whisperop.runtime")

class LocalModelRuntime:
    """ModelRuntime of ``whisperop serve`` (see the module docstring)."""

    def __init__(
        self,
        model_path: str | Path,
        jobstore: SqliteJobStore,
        blobstore: BlobStore,
        engine_settings: EngineSettings | None = None,
        idle_timeout_secs: float = 300,
        gpu_poll_interval_secs: float = 30,
        faults: FaultHooks | None = None,
        engine_factory: EngineFactory = default_engine,
        delete_audio: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        self.jobs = jobstore
        self.blobs = blobstore
        self.engine_settings = engine_settings or EngineSettings()
        self.idle_timeout_secs = idle_timeout_secs
        self.gpu_poll_interval_secs = gpu_poll_interval_secs
        self.faults = faults or FaultHooks()
        self.work = LocalWorkQueue(jobstore, blobstore, delete_audio=delete_audio)
        self._loader = ModelLoader(self.engine_settings, self.faults, engine_factory)

        self._cond = threading.Condition()
        self._state = ModelState.unloaded
        self._loaded_at: datetime | None = None
        self._waiting: tuple[int, int, float] | None = None  # needed MB, free MB, retry at (monotonic)
        self._want_loaded = False
        self._wake = False
        self._stop = False
        self._last_activity = time.monotonic()
        self._engine: Engine | None = None
        self._listeners: Subscribers[RuntimeEvent] = Subscribers("runtime listener")
        self._executor = Executor(on_timing=self._emit, on_job_end=self._job_ended)
        self._thread: threading.Thread | None = None

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
            doc.streams, doc.streams_wanted = stream_counts(self._engine)
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
            self._want_loaded = True  # when ready: also cancels a pending unload
            if self._state == ModelState.ready:
                return False
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
            self._cond.notify_all()
        self._executor.interrupt()  # abort the in-flight call; the next start queues the job again (checkpointed)

    def stop(self, timeout: float = 10.0) -> None:
        self.begin_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close_engine()

    # ── events ───────────────────────────────────────────────────────────

    def _emit(self, event: RuntimeEvent) -> None:
        self._listeners.publish(event)

    def _set_state(self, state: ModelState, loaded_at: datetime | None = None,
                   waiting: tuple[int, int, float] | None = None) -> None:
        with self._cond:
            self._state, self._loaded_at, self._waiting = state, loaded_at, waiting
        log.info("model state", extra={"state": state.value, "model": str(self.model_path)})

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
                    self._serve()
        except Exception:  # pragma: no cover - a bug; keep the process honest about it
            log.exception("model worker thread died")
            raise

    def _serve(self) -> None:
        """Claim and run queued jobs while the model is wanted (:meth:`Executor.serve`, the worker
        pod's loop too). An engine whose process died is dropped (once the jobs still on it have
        ended) and the main loop loads it again — after ``waiting_for_gpu`` and a poll interval
        when it died out of GPU memory, at once otherwise."""
        engine = self._engine
        assert engine is not None
        died = self._executor.serve(self.work, engine, job_concurrency(engine, self.engine_settings.job_concurrency), self)
        if died is None:
            return
        self._close_engine()
        if not self._loader.after_death(died, self.model_path, self.gpu_poll_interval_secs, self):
            self._unloaded()  # an unload (or stop) came meanwhile: the main loop does not load again

    def wait_for_work(self) -> None:
        """Wait for a wake-up (work queued, a job ended, stop, unload, the engine's death) or the
        idle timeout, which counts only while no job runs; once it has run out the model is unloaded."""
        with self._cond:
            if self._wake or self._stop or not self._want_loaded:
                self._wake = False
                return
            timeout: float | None = None
            if self.idle_timeout_secs > 0 and self._executor.running == 0:
                timeout = self._last_activity + self.idle_timeout_secs - time.monotonic()
                if timeout <= 0:
                    log.info("idle timeout: unloading the model", extra={"idle_timeout_secs": self.idle_timeout_secs})
                    self._want_loaded = False
                    return
            self._cond.wait(timeout)

    def _job_ended(self) -> None:
        """A job ended (from its thread): the idle timeout counts from now, and a slot is free."""
        with self._cond:
            self._last_activity = time.monotonic()
            self._wake = True
            self._cond.notify_all()

    # loading ------------------------------------------------------------

    def _load_cycle(self) -> None:
        """loading → ready (waiting_for_gpu and retrying meanwhile), or → unloaded if unwanted."""
        try:
            engine = self._loader.load(lambda: (self.model_path, self.gpu_poll_interval_secs), self)
        except WhisperOpError as exc:
            log.error("model load failed", extra={"model": str(self.model_path), "error": str(exc)})
            with self._cond:
                self._want_loaded = False
            engine = None
        if engine is None or not self._keep(engine):
            self._unloaded()

    def _keep(self, engine: Engine) -> bool:
        """ready, unless an unload or stop came in while the engine was loading."""
        with self._cond:
            keep = self._want_loaded and not self._stop
            if keep:
                self._engine = engine
        if not keep:
            engine.close()
            return False
        if isinstance(engine, IsolatedEngine):
            engine.supervise(self.gpu_poll_interval_secs, on_streams=self._streams_added, on_death=self._wake_up)
        self._last_activity = time.monotonic()
        loaded_at = utcnow()
        self._set_state(ModelState.ready, loaded_at)
        self._emit(models.ModelReadyEvent(loaded_at=loaded_at))
        return True

    # supervision of a loaded engine (issue 14)

    def _wake_up(self) -> None:
        """The engine's process died (called from its reader thread): the serving loop handles it now."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def _streams_added(self, streams: int, wanted: int) -> None:
        log.info("decode streams added", extra={"model": str(self.model_path), "streams": streams, "streams_wanted": wanted})
        self._emit(models.ModelStreamsEvent(streams=streams, streams_wanted=wanted))

    # the loader's observer (whisperop.inference.lifecycle.LoadObserver)

    def wanted(self) -> bool:
        with self._cond:
            return self._want_loaded and not self._stop

    def sleep(self, secs: float) -> bool:
        """Sleep up to ``secs``; False when an unload/stop came in meanwhile."""
        with self._cond:
            return not self._cond.wait_for(lambda: not self._want_loaded or self._stop, secs)

    def loading(self) -> None:
        self._set_state(ModelState.loading)
        self._emit(models.ModelLoadingEvent())

    def waiting_for_gpu(self, needed_mb: int, free_mb: int, retry_secs: float, exc: GpuMemoryError) -> None:
        self._set_state(ModelState.waiting_for_gpu, waiting=(needed_mb, free_mb, time.monotonic() + retry_secs))
        self._emit(models.ModelWaitingForGpuEvent(vram_needed_mb=needed_mb, vram_free_mb=free_mb, retry_in_secs=int(retry_secs)))

    # unloading ----------------------------------------------------------

    def _close_engine(self) -> None:
        self._executor.wait_idle(None if not self._stop else 30.0)  # an unload lets running jobs finish
        with self._cond:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def _unload(self) -> None:
        self._close_engine()
        log.info("model unloaded", extra={"model": str(self.model_path)})
        self._unloaded()

    def _unloaded(self) -> None:
        self._set_state(ModelState.unloaded)
        self._emit(models.ModelUnloadedEvent())

