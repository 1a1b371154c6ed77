"""The job executor: one leased job through the engine, in both modes.

``whisperop serve`` (:mod:`whisperop.inference.runtime`) and the worker pod
(:mod:`whisperop.inference.worker`) serve through :meth:`Executor.serve`: claim
while a job slot is free, run each job on a thread of its own, hand back an
engine whose process died; what differs between them is only the
:class:`~whisperop.core.ports.Lease` (SQLite + files, or a TranscriptionJob +
S3) and what they do while waiting (model states and the idle timeout, or the
pod's readiness and SIGTERM drain). A run:

    lease → audio → engine.transcribe_file → complete | fail | cancelled | release

How a run ends:

- the engine returns a result and no cancel was requested → ``complete``
  (False: the job was cancelled or taken meanwhile, the result is dropped);
- the engine stops for ``should_cancel`` (it raises :class:`JobCancelled`):
  a cancel requested through the API → ``cancelled``; the executor's own
  :meth:`Executor.interrupt` (the server or pod is shutting down) →
  ``release``: the job runs again later from its checkpoint;
- the engine's child process dies (:class:`EngineCrashed`, ``ENGINE_ISOLATION``) →
  ``requeue`` and the error goes up: :meth:`Executor.serve` returns it and its
  caller replaces the dead engine;
- the engine runs out of GPU memory mid-job with a Python exception
  (:class:`GpuMemoryError`: CTranslate2's CUDA errors) → the same, as an
  out-of-memory :class:`EngineCrashed` (the attempt is not counted): the caller
  drops the engine and loads it again, through ``waiting_for_gpu`` while the
  memory stays taken;
- a :class:`WhisperOpError` fails the job with its message; any other
  exception (S3, HTTP, a bug) fails it with ``<type>: <message>`` and is
  logged with its traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from whisperop.core.checkpoints import Checkpoint
from whisperop.core.errors import EngineCrashed, GpuMemoryError, JobCancelled, WhisperOpError
from whisperop.core.models import TranscriptionResult
from whisperop.core.ports import JobTiming, Lease, WorkQueue
from whisperop.inference.engine import Progress, TranscribeRequest
from whisperop.inference.isolated import Engine, IsolatedEngine

log = logging.getLogger("whisperop.executor")


def request_of(lease: Lease) -> TranscribeRequest:
    """The engine request of a leased job: the contract's fields plus the decode hints."""
    job = lease.job
    return TranscribeRequest(language=job.language, task=job.task, prompt=lease.hints.prompt,
                             temperature=lease.hints.temperature, time_limit_secs=job.time_limit_secs,
                             chunk_time_limit_factor=job.chunk_time_limit_factor)


def job_concurrency(engine: object, wanted: int) -> int:
    """Jobs to run at once on ``engine``: ``JOB_CONCURRENCY`` where the engine takes concurrent
    ``transcribe_file`` calls (the in-process engines: CTranslate2 batches their windows together,
    whisper.cpp shares its contexts), else 1 (the isolated engine's child runs one job)."""
    return max(1, wanted) if getattr(engine, "concurrent_jobs", False) else 1


class Host(Protocol):
    """What a mode gives the serving loop: ``whisperop serve``'s model thread, or the worker pod."""

    def wanted(self) -> bool:
        """Keep serving (no unload, idle timeout or shutdown came in)."""
        ...

    def wait_for_work(self) -> None:
        """Nothing was claimable: wait until something may be (a job queued, a job ended), or
        :meth:`wanted` may have changed — at most a second or so (an idle engine's death is seen then)."""
        ...


class Executor:
    """Runs leased jobs (see the module docstring), each on a thread of its own, in the one
    serving loop of both modes (:meth:`serve`)."""

    def __init__(self, on_timing: Callable[[JobTiming], None] | None = None,
                 on_job_end: Callable[[], None] | None = None) -> None:
        self._on_timing = on_timing
        self._on_job_end = on_job_end
        self._interrupted = threading.Event()
        self._cond = threading.Condition()
        self._running: list[Lease] = []
        self._crash: EngineCrashed | None = None  # an engine died under a job; serve() hands it to its caller

    @property
    def running(self) -> int:
        """How many jobs run now."""
        with self._cond:
            return len(self._running)

    def interrupt(self) -> None:
        """Shutting down: abort the running jobs (released, not failed) and every later one."""
        self._interrupted.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until no job runs (True), or ``timeout`` has passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout)

    def serve(self, queue: WorkQueue, engine: Engine, slots: int, host: Host) -> WhisperOpError | None:
        """The serving loop of both modes: while ``host.wanted()``, claim from ``queue`` whenever one
        of ``slots`` (:func:`job_concurrency`) is free and run the job on a thread of its own — one
        slot is the same path — else ``host.wait_for_work()``. Returns why ``engine`` must be
        replaced: its process died under a job (the :class:`EngineCrashed`; the job was handed
        back) or while idle (:meth:`IsolatedEngine.death_error`: a :class:`GpuMemoryError` means
        wait for the GPU before loading again); None once the host no longer wants it. Jobs still
        running on it are the caller's to await (:meth:`wait_idle`) before closing it."""
        with self._cond:
            self._crash = None  # the death of an engine replaced since is no news
        while host.wanted():
            with self._cond:
                crash, self._crash, busy = self._crash, None, len(self._running)
                if crash is None and busy >= slots:
                    self._cond.wait(1.0)  # a job's end; wanted() is asked again at least every second
                    continue
            died = crash or (engine.death_error() if busy == 0 and isinstance(engine, IsolatedEngine) else None)
            if died is not None:
                if crash is None:
                    log.error("engine process died while idle; loading it again", extra={"error": str(died)})
                return died
            lease = queue.claim_next()
            if lease is None:
                host.wait_for_work()
                continue
            with self._cond:
                self._running.append(lease)
            threading.Thread(target=self._run, args=(lease, engine), name="whisperop-job", daemon=True).start()
        return None

    def _should_stop(self, lease: Lease) -> bool:
        return lease.cancel_requested() or self._interrupted.is_set()

    def _run(self, lease: Lease, engine: Engine) -> None:
        job = lease.job
        log.info("job started", extra={"job_id": job.id, "task": job.task.value, "language": job.language})
        try:
            self._execute(lease, engine)
        except EngineCrashed as exc:
            with self._cond:
                self._crash = exc
        finally:
            lease.close()
            if self._on_job_end is not None:  # before the slot frees: the idle timeout counts from this end
                self._on_job_end()
            with self._cond:
                self._running.remove(lease)
                self._cond.notify_all()

    def _execute(self, lease: Lease, engine: Engine) -> None:
        t0 = time.monotonic()

        def on_progress(p: Progress) -> None:
            lease.progress(p.chunk, p.chunks_total)

        try:
            with lease.audio() as path:
                result = engine.transcribe_file(path, request_of(lease), on_progress=on_progress,
                                                should_cancel=lambda: self._should_stop(lease),
                                                on_decoded=lease.decoded, checkpoint=lease.checkpoint())
            if lease.cancel_requested():
                raise JobCancelled()
            self._record(lease, result, time.monotonic() - t0)
        except (EngineCrashed, GpuMemoryError) as exc:
            # the engine's child process died under the job, or ran out of GPU memory with an
            # exception (CTranslate2: it may hold half-made buffers): the job runs again from its
            # checkpoint, and the caller drops the engine and loads a new one
            died = isinstance(exc, EngineCrashed)
            crash = exc if isinstance(exc, EngineCrashed) else EngineCrashed(str(exc), oom=True)
            log.error(f"engine {'process died' if died else 'out of GPU memory'} during a job; reloading the engine",
                      extra={"job_id": lease.job.id, "error": str(exc), "oom": crash.oom})
            lease.requeue(str(exc), count_attempt=not crash.oom)
            if died:
                raise
            raise crash from exc
        except JobCancelled:
            self._stopped(lease)
        except WhisperOpError as exc:
            self._fail(lease, str(exc))
        except Exception as exc:  # S3/HTTP errors, anything unexpected: the job fails with the reason
            log.exception("job failed unexpectedly", extra={"job_id": lease.job.id})
            self._fail(lease, f"{type(exc).__name__}: {exc}")

    def _stopped(self, lease: Lease) -> None:
        if lease.cancel_requested():
            log.info("job cancelled while running; aborted", extra={"job_id": lease.job.id})
            lease.cancelled()
        else:
            log.info("job interrupted by shutdown; it runs again from its checkpoint", extra={"job_id": lease.job.id})
            lease.release()

    def _fail(self, lease: Lease, error: str) -> None:
        log.warning("job failed", extra={"job_id": lease.job.id, "error": error})
        lease.fail(error)

    def _record(self, lease: Lease, result: TranscriptionResult, wall: float) -> None:
        job_id = lease.job.id
        if not lease.complete(result):
            log.info("job cancelled while running; result discarded", extra={"job_id": job_id})
            return
        log.info("job done", extra={"job_id": job_id, "audio_secs": result.duration_secs, "wall_secs": round(wall, 3),
                                    "segments": len(result.segments), "segments_removed": len(result.removed),
                                    "degraded_chunks": [d.index for d in result.degraded_chunks]})
        if self._on_timing is not None:
            self._on_timing(JobTiming(job_id=job_id, audio_secs=result.duration_secs, wall_secs=wall))
