"""Ports: the interfaces between the facade, the executor and their backends.

The REST facade talks to a :class:`JobQueue` (create, read, list, cancel,
watch, the webhook registry), a :class:`BlobStore` and a :class:`ModelRuntime`;
it never runs jobs. The executor (:mod:`whisperop.inference.executor`, the same
code in ``whisperop serve`` and in a worker pod) talks to a :class:`WorkQueue`:
``claim_next()`` hands it a :class:`Lease` on one job, through which it reads
the audio and writes progress, the result or the failure. Local mode plugs in
SQLite + files (:mod:`whisperop.stores`); cluster mode plugs in
TranscriptionJob resources + S3 (:mod:`whisperop.cluster`). Keeping the
surface this small is what lets both modes pass the same contract suite.

Conventions every adapter follows:

- Every state change an executor makes through its lease (progress,
  completion, failure) is *conditional on the lease still holding the job*:
  a job cancelled through the API in the meantime stays cancelled (or, in a
  cluster, a job requeued by the operator belongs to its next worker), and
  the late write is dropped (the method returns ``False``). That is how
  "cancel discards the partial result" holds without locks spanning two
  processes.
- ``watch`` delivers every change once, in commit order, to in-process
  callbacks; SSE fan-out and webhooks hang off that one source instead of
  polling the store per subscriber.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from whisperop.core.checkpoints import Checkpoint
from whisperop.core.gpu import GpuInfo
from whisperop.core.models import Job, JobStatus, ModelState, ModelStatus, TranscriptionResult
from whisperop.core.models import (ModelLoadingEvent, ModelReadyEvent, ModelStreamsEvent, ModelUnloadedEvent,
                                   ModelWaitingForGpuEvent)

# ── JobQueue ─────────────────────────────────────────────────────────────────

ChangeKind = Literal["created", "started", "progress", "finished"]


@dataclass(frozen=True)
class JobChange:
    """One committed change of a job, as ``JobQueue.watch`` callbacks see it.

    ``chunk``/``chunks_total`` carry the progress detail that the SSE
    ``progress`` event needs but the Job shape does not hold.
    """

    kind: ChangeKind
    job: Job
    chunk: int = 0
    chunks_total: int = 0


@dataclass(frozen=True)
class DecodeHints:
    """Per-job decoding options beyond the contract's fields (the OpenAI-compatible API's
    ``prompt`` and ``temperature``); ``None`` = the engine's settings."""

    prompt: str | None = None
    temperature: float | None = None

    def to_json(self) -> str | None:
        """The stored form, the same in both modes (a SQLite column, a TranscriptionJob annotation);
        None when there is nothing to store."""
        d = {k: v for k, v in (("prompt", self.prompt), ("temperature", self.temperature)) if v is not None}
        return json.dumps(d) if d else None

    @classmethod
    def from_json(cls, raw: str | None) -> "DecodeHints":
        """The stored form back (fields of the wrong type are left out); ``ValueError`` when it is
        not a JSON object (an annotation anyone with kubectl may write)."""
        d = json.loads(raw) if raw else {}
        if not isinstance(d, dict):
            raise ValueError(f"decode hints are a JSON object, not {type(d).__name__}")
        prompt, temp = d.get("prompt"), d.get("temperature")
        return cls(prompt=str(prompt) if isinstance(prompt, str) and prompt else None,
                   temperature=float(temp) if isinstance(temp, (int, float)) else None)


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /jobs``: jobs newest first (without segments) and the cursor of the
    next page (``None`` on the last one). Cursors are opaque strings owned by the store."""

    jobs: list[Job]
    next_cursor: str | None


JobWatcher = Callable[[JobChange], None]
Unsubscribe = Callable[[], None]


@runtime_checkable
class JobQueue(Protocol):
    """The facade's side of the durable jobs, plus the webhook-URL registry."""

    def create(self, job: Job, audio_key: str, priority: int = 0, hints: DecodeHints | None = None,
               owner: str | None = None) -> Job:
        """Store a new ``queued`` job whose audio lies under ``audio_key``; higher ``priority`` runs
        first, equal priorities in submission order (as TranscriptionJob ``spec.priority``);
        ``owner``: the submitting token's principal (:meth:`owner`)."""
        ...

    def owner(self, job_id: str) -> str | None:
        """Who submitted the job (a bearer token's principal, :func:`whisperop.api.auth.principal_of`);
        None when submitted without auth or from outside the facade. Raises ``JobNotFound``."""
        ...

    def count_queued(self, owner: str) -> int:
        """Queued jobs of ``owner`` (the per-token queue limit)."""
        ...

    def get(self, job_id: str) -> Job:
        """The job; raises :class:`whisperop.core.errors.JobNotFound`."""
        ...

    def list_page(self, statuses: Sequence[JobStatus] | None, limit: int, cursor: str | None = None,
                  owner: str | None = None) -> JobPage:
        """Jobs newest first (segments left out), after ``cursor``; raises ``ValueError`` for a
        cursor this store did not issue. Jobs created while paging never shift later pages.
        ``owner``: only the jobs that principal submitted (``GET /jobs`` under auth)."""
        ...

    def delete(self, job_id: str) -> str | None:
        """Remove a *finished* job for good; returns its audio key (the caller deletes the blob).
        Raises ``JobNotFound``, or ``JobStillActive`` for a queued/running job."""
        ...

    def finished_before(self, cutoff: datetime, limit: int = 500) -> list[str]:
        """Ids of jobs that finished before ``cutoff`` (retention), oldest first."""
        ...

    def count_by_status(self) -> dict[JobStatus, int]:
        ...

    def queue_depth(self) -> int:
        """Jobs waiting to run (not counting the running one)."""
        ...

    def cancel(self, job_id: str) -> Job:
        """queued/running → cancelled now; raises ``JobNotFound`` or ``JobAlreadyTerminal``."""
        ...



    def progress(self, job_id: str) -> tuple[int, int] | None:
        """``(chunks done, chunks total)`` of a running job whose audio is planned, else None
        (the state an SSE subscriber joining mid-job starts with)."""
        ...



    def audio_key(self, job_id: str) -> str | None:
        ...

    def recover_interrupted(self) -> list[Job]:
        """At start: jobs left ``running`` by a dead process become ``failed``."""
        ...

    def watch(self, callback: JobWatcher) -> Unsubscribe:
        """Call ``callback`` after every committed change (from the writer's thread)."""
        ...

    def register_webhook(self, url: str, pending: bool = False) -> bool:
        """Remember ``url`` for model lifecycle webhooks (persisted; idempotent; bounded and
        expiring, :class:`whisperop.core.settings.WebhookRegistrySettings`). ``pending``: the URL
        of a submission that was not accepted (short-lived). False when the registry is full."""
        ...

    def unregister_webhook(self, url: str) -> bool:
        """Forget ``url``; False when it was not registered."""
        ...

    def webhook_urls(self) -> list[str]:
        """Every registered URL that has not expired, oldest first."""
        ...

    def close(self) -> None:
        ...


# ── WorkQueue ────────────────────────────────────────────────────────────────


@runtime_checkable
class Lease(Protocol):
    """One claimed job, held by one executor until it ends (see the module docstring).

    The executor calls, in order: ``audio`` (and ``checkpoint``) to run the job,
    ``decoded``/``progress`` while it runs, ``cancel_requested`` from the engine's
    abort poll, then exactly one of ``complete``/``fail``/``cancelled``/``release``/``requeue``,
    and finally ``close``."""

    job: Job
    hints: DecodeHints

    def audio(self) -> AbstractContextManager[Path]:
        """A local file with the job's audio for the duration of the ``with`` block."""
        ...

    def checkpoint(self) -> Checkpoint | None:
        """Where the engine keeps the job's finished chunks (None: no checkpoints)."""
        ...

    def decoded(self, duration_secs: float, chunks_total: int) -> None:
        """The audio is decoded and planned: its duration and chunk count."""
        ...

    def progress(self, chunk: int, chunks_total: int) -> None:
        """Chunks done so far (adapters may coalesce writes)."""
        ...

    def cancel_requested(self) -> bool:
        """The job was cancelled through the API, or is no longer this lease's."""
        ...

    def complete(self, result: TranscriptionResult) -> bool:
        """running → done with the result; False when the job was cancelled or taken meanwhile."""
        ...

    def fail(self, error: str) -> bool:
        """running → failed with ``error``; False when the job was cancelled or taken meanwhile."""
        ...

    def cancelled(self) -> None:
        """The run stopped because of ``cancel_requested``: record it (where the store has not yet)."""
        ...

    def release(self) -> None:
        """The run stopped because its executor is shutting down: the job runs again later,
        resuming from its checkpoint (local: at the next start; cluster: on another worker)."""
        ...

    def requeue(self, reason: str, count_attempt: bool = True) -> None:
        """The engine died under the run (an isolated engine's child process): the job runs again,
        resuming from its checkpoint, and fails instead once it has started ``MAX_JOB_ATTEMPTS``
        runs; ``count_attempt`` False (an out-of-memory death: the GPU's fault, not the job's)
        gives the attempt back."""
        ...

    def close(self) -> None:
        """End the lease (heartbeats stop); called last, whatever happened."""
        ...


@runtime_checkable
class WorkQueue(Protocol):
    """The executor's side of the durable jobs."""

    def claim_next(self) -> Lease | None:
        """Atomically take the next queued job (highest priority, then oldest); ``None`` when idle."""
        ...


# ── BlobStore ────────────────────────────────────────────────────────────────


class BlobWriter(Protocol):
    """An upload in progress: nothing is visible under the key until ``commit``."""

    def write(self, data: bytes) -> None:
        ...

    def commit(self) -> int:
        """Make the blob visible; returns its size in bytes."""
        ...

    def abort(self) -> None:
        """Throw away everything written (idempotent; safe after a failed write)."""
        ...


def write_all(writer: BlobWriter, chunks: Iterable[bytes]) -> int:
    """Fill ``writer`` with ``chunks`` and commit it; abort on any failure (Ctrl-C included),
    so a ``put`` that fails leaves nothing behind. Shared by every BlobStore's ``put``."""
    try:
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


@runtime_checkable
class BlobStore(Protocol):
    """Opaque byte blobs under string keys (audio uploads, results)."""

    def writer(self, key: str) -> BlobWriter:
        ...

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Stream ``chunks`` into ``key``; on any error nothing is left behind."""
        ...

    def get(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the blob; raises :class:`whisperop.core.errors.BlobNotFound`."""
        ...

    def local_path(self, key: str) -> AbstractContextManager[Path]:
        """A local file with the blob's bytes for the duration of the ``with`` block
        (the decoder needs a seekable file; remote stores download to a temp file)."""
        ...

    def exists(self, key: str) -> bool:
        ...

    def delete(self, key: str) -> None:
        """Remove the blob (no error if absent)."""
        ...

    def url(self, key: str, expires_secs: int = 3600) -> str:
        """A URL for the blob: presigned for S3, ``file://`` for local files."""
        ...


# ── ModelRuntime ─────────────────────────────────────────────────────────────

ModelEventModel = ModelLoadingEvent | ModelReadyEvent | ModelUnloadedEvent | ModelWaitingForGpuEvent | ModelStreamsEvent


@dataclass(frozen=True)
class JobTiming:
    """Reported once per job the runtime finished successfully (for the speed histogram)."""

    job_id: str
    audio_secs: float
    wall_secs: float


RuntimeEvent = ModelEventModel | JobTiming
RuntimeListener = Callable[[RuntimeEvent], None]


@runtime_checkable
class ModelRuntime(Protocol):
    """The model lifecycle (unloaded → loading → ready, waiting_for_gpu) and the
    job executor behind it. Local: a worker thread; cluster: a Deployment."""

    @property
    def state(self) -> ModelState:
        ...

    def status(self) -> ModelStatus:
        """The ``GET /model/status`` document (fields that do not apply are None)."""
        ...

    def gpu(self) -> GpuInfo | None:
        """The GPU the model runs on, for ``/health`` (None when unknown or there is none)."""
        ...

    def request_load(self) -> bool:
        """Start loading unless ready; returns False when already ready."""
        ...

    def request_unload(self) -> None:
        """Unload after the in-flight job (no-op when unloaded)."""
        ...

    def notify_job_queued(self) -> None:
        """A job was queued: wake the executor (and load the model if it is unloaded)."""
        ...

    def subscribe(self, listener: RuntimeListener) -> Unsubscribe:
        """Model events (SSE, webhooks) and job timings (metrics), from the runtime's thread."""
        ...

    def start(self) -> None:
        ...

    def stop(self, timeout: float = 10.0) -> None:
        ...
