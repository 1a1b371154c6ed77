"""The WorkQueue of ``whisperop serve``: SQLite jobs + audio blobs, as leases for the executor.

A lease's writes are the store's conditional ones (``WHERE status = 'running'``),
so a job cancelled through the API meanwhile keeps its ``cancelled`` state and
the late result is dropped. The lease follows the store's watch for its own
job: a cancel sets the flag the engine's abort callback polls, so whisper.cpp
stops inside the current chunk.

The audio goes *before* the job is marked terminal (a finished job never
leaves a blob behind); a lease released by a shutdown keeps both its audio and
its checkpoint: the job is still ``running`` in the store, and the next start
queues it again (:meth:`SqliteJobStore.recover_interrupted`), resuming at its
first unfinished chunk.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from whisperop.core.checkpoints import Checkpoint
from whisperop.core.models import JobStatus, TranscriptionResult
from whisperop.core.ports import BlobStore, JobChange
from whisperop.stores.sqlite_jobs import ClaimedJob, SqliteJobStore

log = logging.getLogger("whisperop.stores.local_queue")


class LocalLease:
    """One claimed SQLite job (see the module docstring)."""

    def __init__(self, queue: "LocalWorkQueue", claimed: ClaimedJob) -> None:
        self._queue = queue
        self._store = queue.jobs
        self.job = claimed.job
        self.hints = claimed.hints
        self.audio_key = claimed.audio_key
        self._cancel = threading.Event()
        self._unwatch = self._store.watch(self._on_change)
        if self._store.get(self.job.id).status == JobStatus.cancelled:  # cancelled between claim and watch
            self._cancel.set()

    def _on_change(self, change: JobChange) -> None:
        if change.job.id == self.job.id and change.job.status == JobStatus.cancelled:
            self._cancel.set()

    def audio(self) -> AbstractContextManager[Path]:
        return self._queue.blobs.local_path(self.audio_key)

    def checkpoint(self) -> Checkpoint | None:
        return self._store.checkpoint(self.job.id)

    def decoded(self, duration_secs: float, chunks_total: int) -> None:
        self._store.record_progress(self.job.id, 0, chunks_total, round(duration_secs, 3))

    def progress(self, chunk: int, chunks_total: int) -> None:
        self._store.record_progress(self.job.id, chunk, chunks_total)

    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def complete(self, result: TranscriptionResult) -> bool:
        self._drop_audio()
        return self._store.complete(self.job.id, result) is not None

    def fail(self, error: str) -> bool:
        self._drop_audio()
        return self._store.fail(self.job.id, error) is not None

    def cancelled(self) -> None:
        self._drop_audio()  # the store marked it cancelled already (the API's cancel)

    def release(self) -> None:
        """Nothing to write: the job stays ``running`` with its audio and checkpoint until the next start."""

    def requeue(self, reason: str, count_attempt: bool = True) -> None:
        """Queued again in its FIFO place with its audio and checkpoint (:meth:`SqliteJobStore.requeue`);
        past ``MAX_JOB_ATTEMPTS`` the store fails it, and then the audio goes."""
        if self._store.requeue(self.job.id, reason, count_attempt=count_attempt) is None:
            self._drop_audio()

    def close(self) -> None:
        self._unwatch()

    def _drop_audio(self) -> None:
        if not self._queue.delete_audio:
            return
        try:
            self._queue.blobs.delete(self.audio_key)
        except Exception:
            log.warning("could not delete job audio", extra={"job_id": self.job.id}, exc_info=True)


class LocalWorkQueue:
    """WorkQueue on a :class:`SqliteJobStore` and the BlobStore its audio lies in."""

    def __init__(self, jobs: SqliteJobStore, blobs: BlobStore, delete_audio: bool = True) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self.delete_audio = delete_audio

    def claim_next(self) -> LocalLease | None:
        claimed = self.jobs.claim_next()
        return None if claimed is None else LocalLease(self, claimed)
