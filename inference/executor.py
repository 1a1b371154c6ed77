"""The job executor: one leased job through the engine, in both modes.

``whisperop serve`` (:mod:`whisperop.inference.runtime`) and the worker pod
(:mod:`whisperop.inference.worker`) run every job through :meth:`Executor.run`;
what differs between them is only the :class:`~whisperop.core.ports.Lease`
(SQLite + files, or a TranscriptionJob + S3). A run:

    lease → audio → engine.transcribe_file → complete | fail | cancelled | release

How a run ends:

- the engine returns a result and no cancel was requested → ``complete``
  (False: the job was cancelled or taken meanwhile, the result is dropped);
- the engine stops for ``should_cancel`` (it raises :class:`JobCancelled`):
  a cancel requested through the API → ``cancelled``; the executor's own
  :meth:`Executor.interrupt` (the server or pod is shutting down) →
  ``release``: the job runs again later from its checkpoint;
- the engine's child process dies (:class:`EngineCrashed`, ``ENGINE_ISOLATION``) →
  ``requeue`` and the error goes up: the caller replaces the dead engine;
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
from whisperop.core.ports import JobTiming, Lease
from whisperop.inference.engine import Progress, TranscribeRequest
from whisperop.inference.isolated import Engine

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


class Executor:
    """Runs leased jobs (see the module docstring); several at once when the caller runs
    :meth:`run` from several threads (``JOB_CONCURRENCY``)."""

    def __init__(self, on_timing: Callable[[JobTiming], None] | None = None) -> None:
        self._on_timing = on_timing
        self._interrupted = threading.Event()
        self._lock = threading.Lock()
        self._running: list[Lease] = []

    @property
    def current(self) -> Lease | None:
        """The lease of a job running now (the oldest; None between jobs)."""
        with self._lock:
            return self._running[0] if self._running else None

    @property
    def running(self) -> int:
        """How many jobs run now."""
        with self._lock:
            return len(self._running)

    def interrupt(self) -> None:
        """Shutting down: abort the running job (released, not failed) and every later one."""
        self._interrupted.set()

    def _should_stop(self, lease: Lease) -> bool:
        return lease.cancel_requested() or self._interrupted.is_set()

    def run(self, lease: Lease, engine: Engine) -> None:
        job = lease.job
        with self._lock:
            self._running.append(lease)
        log.info("job started", extra={"job_id": job.id, "task": job.task.value, "language": job.language})
        try:
            self._execute(lease, engine)
        finally:
            with self._lock:
                self._running.remove(lease)
            lease.close()

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
        except EngineCrashed as exc:
            # the engine's child process died under the job: it runs again from its checkpoint, and
            # the caller drops the dead engine and loads a new one
            log.error("engine process died during a job; reloading the engine",
                      extra={"job_id": lease.job.id, "error": str(exc), "oom": exc.oom})
            lease.requeue(str(exc), count_attempt=not exc.oom)
            raise
        except GpuMemoryError as exc:
            # out of GPU memory as an exception (CTranslate2): the engine may hold half-made buffers;
            # the job runs again from its checkpoint on a freshly loaded one
            log.error("engine out of GPU memory during a job; reloading the engine",
                      extra={"job_id": lease.job.id, "error": str(exc)})
            lease.requeue(str(exc), count_attempt=False)
            raise EngineCrashed(str(exc), oom=True) from exc
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
