"""The WorkQueue on TranscriptionJobs: what a worker pod claims and how it writes back.

- **Cache**: one list+watch of the model's jobs (field selector ``spec.model``,
  relist on 410 Gone) wakes the claim loop and carries ``spec.cancel``.
- **Claim**: the first claimable job in queue order (priority, then age) is
  moved Queued → Running by a status write guarded by the resourceVersion the
  worker saw; on 409 the next candidate is tried, so two workers never both win.
- **Lease**: every write after the claim is guarded too: on 409 the lease
  re-reads the job and goes on only if it still owns it (phase Running,
  worker = this pod, same startTime); otherwise the job is *lost* (the
  operator requeued it, or someone else holds it) and its work is dropped, so
  a job never completes twice. A heartbeat thread writes ``heartbeatTime``
  every ``heartbeat_secs``; progress is written at most every
  ``progress_secs`` (0.5 s: ≤ 2 writes/s), coalesced in between.
- **Result**: the outputs go to S3 first (``results/<ns>/<job>/transcript.<fmt>``),
  then the status that points at them.
- **Checkpoint**: finished chunks in S3 (:mod:`whisperop.cluster.checkpoint`);
  deleted just before the terminal status write (so a job that shows
  Done/Failed/Cancelled has none left), kept when the job is handed back or
  lost (the next worker resumes from it).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Counter, Histogram

from whisperop.cluster import kube
from whisperop.cluster.checkpoint import S3Checkpoint, checkpoint_prefix
from whisperop.cluster.s3 import S3Settings
from whisperop.cluster.watch import ResourceWatch
from whisperop.core import crds
from whisperop.core.checkpoints import Checkpoint
from whisperop.core.crds import Phase
from whisperop.core.models import TranscriptionResult
from whisperop.core.ports import DecodeHints
from whisperop.core.urlguard import check_url, guarded_client

log = logging.getLogger("whisperop.worker")

JOBS = Counter("whisperop_worker_jobs_total", "Jobs finished by this worker", ["outcome"])
CLAIMS = Counter("whisperop_worker_claims_total", "Claim attempts", ["result"])
JOB_SECS = Histogram("whisperop_worker_job_seconds", "Wall time per job", buckets=(1, 5, 15, 60, 300, 1200, 3600, 14400))
WRITES = Counter("whisperop_worker_status_writes_total", "Job status writes by this worker", ["kind"])

COMPONENT = "whisperop-worker"  # the Events' source


def decode_hints(job: crds.TranscriptionJob) -> DecodeHints:
    """The job's ``whisperop.io/decode-hints`` annotation (prompt, temperature; set by the facade's
    OpenAI-compatible API); a malformed one is ignored, as if absent."""
    try:
        return DecodeHints.from_json(job.annotations.get(crds.ANN_DECODE_HINTS))
    except ValueError:
        log.warning("ignoring a malformed decode-hints annotation", extra={"job": job.name})
        return DecodeHints()


def download_audio(uri: str, folder: Path, s3: S3Settings | None, allow: str) -> Path:
    """``spec.audio`` into ``folder``: S3, or http(s) through the outbound URL guard (``allow``:
    WHISPEROP_OUTBOUND_ALLOW; each redirect hop is checked again at connect time, and a refused
    address fails the job with the guard's message)."""
    dest = folder / (uri.rsplit("/", 1)[-1].split("?")[0] or "audio")
    if uri.startswith("s3://"):
        assert s3 is not None
        return s3.download(uri, dest)
    with guarded_client(allow, follow_redirects=True, max_redirects=5, timeout=httpx.Timeout(60.0)) as client, \
            client.stream("GET", check_url(uri, allow=allow, what="audio URL")) as resp, open(dest, "wb") as f:
        resp.raise_for_status()
        for chunk in resp.iter_bytes(1 << 20):
            f.write(chunk)
    return dest


class Lost(Exception):
    """The job is no longer this worker's (requeued, deleted, or taken)."""


@dataclass(frozen=True)
class WorkQueueSettings:
    """The worker's knobs of the queue (:class:`whisperop.inference.config.WorkerConfig`)."""

    pod: str
    heartbeat_secs: float = 10.0
    progress_secs: float = 0.5
    resync_secs: float = 30.0
    tmp_dir: Path | None = None
    outbound_allow: str = ""  # WHISPEROP_OUTBOUND_ALLOW: which http(s) audio URLs may be fetched


class ClusterLease:
    """One claimed TranscriptionJob (see the module docstring)."""

    def __init__(self, queue: "ClusterWorkQueue", resource: crds.TranscriptionJob) -> None:
        self._q = queue
        self.resource = resource
        self.name = resource.name
        self.pod = queue.settings.pod
        self.job = crds.job_from_resource(resource).model_copy(update={"language": resource.spec.language})
        self.hints = decode_hints(resource)
        self._start_time = resource.status.startTime
        self._rv = resource.resource_version
        self._lock = threading.Lock()
        self._cancel = bool(self.resource.spec.cancel)
        self.lost = False
        self._last_write = time.monotonic()
        self._pending: dict[str, Any] = {}
        self._checkpoint = S3Checkpoint(queue.s3.client, queue.s3.bucket, checkpoint_prefix(resource))
        self._t0 = time.perf_counter()
        self._done = threading.Event()
        log.info("job claimed", extra={"job": self.name, "worker": self.pod})
        kube.post_event(queue.api, resource, "Normal", "Running", f"running on {self.pod}", COMPONENT)
        threading.Thread(target=self._heartbeat, daemon=True, name="heartbeat").start()

    # ── guarded writes ───────────────────────────────────────────────────

    def _owned(self, job: crds.TranscriptionJob) -> bool:
        st = job.status
        return st.phase == Phase.Running and st.worker == self.pod and st.startTime == self._start_time

    def _write(self, status: dict[str, Any], kind: str) -> None:
        with self._lock:
            if self.lost:
                raise Lost(self.name)
            body = {**self._pending, **status}
            for _ in range(5):
                try:
                    self.resource = crds.as_job(self._q.jobs.patch_status(self.name, body, rv=self._rv))
                    self._rv = self.resource.resource_version
                    self._pending = {}
                    self._last_write = time.monotonic()
                    self._cancel |= self.resource.spec.cancel
                    WRITES.labels(kind).inc()
                    return
                except kube.Conflict:
                    pass
                except kube.NotFound:
                    self.lost = True
                    raise Lost(self.name) from None
                self._refresh()
            raise Lost(f"{self.name}: too many conflicts")

    def _refresh(self) -> None:
        """After a 409: still ours? (else Lost) — then retry at the new resourceVersion."""
        try:
            fresh = crds.as_job(self._q.jobs.get(self.name))
        except kube.NotFound:
            self.lost = True
            raise Lost(self.name) from None
        if not self._owned(fresh):
            self.lost = True
            raise Lost(self.name)
        self._rv = fresh.resource_version
        self._cancel |= fresh.spec.cancel

    def _try_write(self, status: dict[str, Any], kind: str) -> None:
        """A write from inside the engine's callbacks: a lost job stops at the next cancel poll."""
        try:
            self._write(status, kind)
        except Lost:
            pass

    def _heartbeat(self) -> None:
        every = self._q.settings.heartbeat_secs
        while not self._done.wait(min(every, 1.0)):
            cached: crds.TranscriptionJob | None = self._q.cache.cached(self.name)
            if cached is not None and cached.spec.cancel:
                self._cancel = True
            if time.monotonic() - self._last_write >= every:
                try:
                    self._write({"heartbeatTime": kube.ts()}, "heartbeat")
                except Lost:
                    return
                except Exception:
                    log.warning("heartbeat failed", exc_info=True)

    def _finish(self, phase: Phase, reason: str, message: str, extra: dict[str, Any]) -> bool:
        """The lease's last status write (and its Event); False when the job was lost."""
        n = kube.now()
        conds = crds.set_condition(self.resource.status.conditions, "Running", "False", reason,
                                   message, n, self.resource.metadata.get("generation"))
        body = {"phase": phase.value, "heartbeatTime": kube.ts(n), "conditions": conds, **extra}
        if phase.terminal:
            body["completionTime"] = kube.ts(n)
            self._drop_checkpoint()  # before the terminal status: a job shown Done/Failed/Cancelled has none left
        try:
            self._write(body, phase.value.lower())
        except Lost:
            JOBS.labels("lost").inc()
            log.warning("job no longer ours; its end is not recorded", extra={"job": self.name, "phase": phase.value})
            return False
        JOBS.labels(phase.value.lower()).inc()
        kube.post_event(self._q.api, self.resource, "Warning" if phase == Phase.Failed else "Normal", reason, message, COMPONENT)
        return True

    # ── the Lease port ───────────────────────────────────────────────────

    @contextmanager
    def audio(self) -> Iterator[Path]:
        """The audio, downloaded into a temporary folder (:func:`download_audio`)."""
        with tempfile.TemporaryDirectory(prefix="whisperop-job-", dir=self._q.settings.tmp_dir) as tmp:
            yield download_audio(self.resource.spec.audio, Path(tmp), self._q.s3, self._q.settings.outbound_allow)

    def checkpoint(self) -> Checkpoint:
        return self._checkpoint

    def decoded(self, duration_secs: float, chunks_total: int) -> None:
        self._try_write({"durationSecs": round(duration_secs, 3), "chunksTotal": chunks_total, "chunk": 0, "progress": 0,
                         "heartbeatTime": kube.ts()}, "decoded")

    def progress(self, chunk: int, chunks_total: int) -> None:
        upd = {"chunk": chunk, "chunksTotal": chunks_total,
               "progress": min(99, 100 * chunk // chunks_total if chunks_total > 0 else 100)}
        if time.monotonic() - self._last_write >= self._q.settings.progress_secs:
            self._try_write({**upd, "heartbeatTime": kube.ts()}, "progress")
        else:
            with self._lock:
                self._pending.update(upd)

    def cancel_requested(self) -> bool:
        return self._cancel or self.lost

    def complete(self, result: TranscriptionResult) -> bool:
        if self.lost:
            return False
        uris = self._upload(result)  # outputs first, then the status that points at them
        return self._finish(Phase.Done, "Completed", f"{len(result.segments)} segments in {result.chunks} chunks", {
            "progress": 100, "chunk": result.chunks, "chunksTotal": result.chunks, "result": uris,
            "language": result.language, "durationSecs": round(result.duration_secs, 3), "error": None,
        })

    def fail(self, error: str) -> bool:
        if self.lost:
            return False
        return self._finish(Phase.Failed, "TranscriptionFailed", error, {"error": error})

    def cancelled(self) -> None:
        if self.lost:
            JOBS.labels("lost").inc()
            log.warning("job no longer ours; result dropped", extra={"job": self.name})
            return
        self._finish(Phase.Cancelled, "CancelledWhileRunning", f"cancelled while running on {self.pod}", {})

    def release(self) -> None:
        self._finish(Phase.Queued, "HandedBack", f"{self.pod} is shutting down; job handed back",
                     {"worker": None, "heartbeatTime": None, "startTime": None, "progress": 0, "chunk": 0})

    def requeue(self, reason: str, count_attempt: bool = True) -> None:
        """Handed back like a shutdown (:meth:`release`): another claim resumes it from its S3
        checkpoint, and the claim counts the attempt against ``maxAttempts``."""
        log.warning("engine died under the job; handing it back", extra={"job": self.name, "reason": reason})
        self.release()

    def close(self) -> None:
        self._done.set()
        JOB_SECS.observe(time.perf_counter() - self._t0)

    def _drop_checkpoint(self) -> None:
        """The job is about to be terminal: its checkpoint has served. A handed-back or lost job
        keeps it (the next worker resumes from it)."""
        try:
            self._checkpoint.clear()
        except Exception:
            log.warning("could not delete the job's checkpoint", extra={"job": self.name}, exc_info=True)

    def _upload(self, result: TranscriptionResult) -> dict[str, Any]:
        from whisperop.inference.writers import render

        prefix = crds.results_prefix(self.resource.namespace, self.name)
        store = self._q.s3.store()
        out: dict[str, Any] = {"segments": len(result.segments)}
        for fmt in dict.fromkeys(["json", *self.resource.spec.outputFormats]):
            key = f"{prefix}transcript.{fmt}"
            store.put(key, [render(result, fmt).encode("utf-8")])
            out[fmt] = self._q.s3.uri(key)
        return out


class ClusterWorkQueue:
    """WorkQueue on the TranscriptionJobs of one model in one namespace, for one worker pod."""

    def __init__(self, api: Any, namespace: str, model: str, s3: S3Settings, settings: WorkQueueSettings) -> None:
        self.api = api
        self.jobs = kube.jobs(api, namespace)
        self.s3 = s3
        self.settings = settings
        self.cache = ResourceWatch(self.jobs, field_selector=f"spec.model={model}", transform=crds.as_job)
        self._tried: set[tuple[str, str]] = set()
        self._last_resync = time.monotonic()

    def start(self, sync_timeout: float = 30.0) -> None:
        self.cache.start(wait=False)
        self.cache.synced.wait(sync_timeout)

    def stop(self) -> None:
        self.cache.stop()

    def claim_next(self) -> ClusterLease | None:
        """Each (job, resourceVersion) is tried once: a 409 means someone else changed it, and the
        watch brings the new version; ``resync_secs`` forgets the tried set (a missed event)."""
        if time.monotonic() - self._last_resync > self.settings.resync_secs:
            self._tried.clear()
            self._last_resync = time.monotonic()
        queued: list[crds.TranscriptionJob] = [j for j in self.cache.items() if j.claimable]
        for job in sorted(queued, key=kube.queue_key):
            key = (job.name, job.resource_version)
            if key in self._tried:
                continue
            self._tried.add(key)
            claimed = kube.claim(self.jobs, job, self.settings.pod)
            if claimed is not None:
                CLAIMS.labels("won").inc()
                return ClusterLease(self, claimed)
            CLAIMS.labels("conflict").inc()
        return None

    def wait(self, timeout: float) -> None:
        """Until the cache changes (or ``timeout``)."""
        self.cache.wait_changed(timeout)
