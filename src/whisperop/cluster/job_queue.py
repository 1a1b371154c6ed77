"""The JobQueue port on TranscriptionJob custom resources (cluster mode of the facade).

A job submitted over REST is a TranscriptionJob named by the job id (a UUID)
in the facade's namespace; its audio was streamed to S3 by the facade's
:class:`~whisperop.stores.s3_blobs.S3BlobStore` *before* ``create`` is
called (the router aborts the multipart upload on any failure, and deletes
the committed object if ``create`` fails), so there is never a job without
audio nor an orphan upload. The resource carries
``whisperop.io/audio-owned: "true"``: the operator's finalizer deletes the
audio with the job.

Reads:

- ``get`` reads the resource from the API server (a quorum read: a second
  facade replica answers for a job created a moment ago on the first), and,
  for a ``Done`` job, the segments from the result JSON in S3;
- ``list_page``/``count_by_status``/``queue_depth`` read the watch cache;
  jobs created with ``kubectl`` are there like any other. ``create`` returns
  only once the watch has delivered the new job (bounded wait), so a client
  that submits and then reads ``/health`` or ``GET /jobs`` from the same
  facade sees its job counted.

Writes: ``cancel`` merge-patches ``spec.cancel: true`` guarded by the
resourceVersion (409 → re-read and retry); the operator (queued) or the worker
(running) then moves the job to ``Cancelled``. The facade never runs jobs:
the executor's side of the resources is the WorkQueue of
:mod:`whisperop.cluster.work_queue` (``whisperop worker``).

``watch`` turns the process's single TranscriptionJob watch
(:class:`~whisperop.cluster.watch.ResourceWatch`) into ``JobChange``s:
``created``, ``started`` (→ Running), ``progress`` (chunk advanced) and
``finished`` (→ a terminal phase, emitted once per job per process, also
when only a relist after ``410 Gone`` revealed it).

The webhook registry is the namespace's ConfigMap ``whisperop-webhooks``
(:mod:`whisperop.cluster.webhooks`), the one the operator reads.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from whisperop.cluster import kube
from whisperop.cluster import webhooks as cluster_webhooks
from whisperop.core import crds
from whisperop.core.crds import Phase
from whisperop.core.errors import JobAlreadyTerminal, JobNotFound, JobStillActive
from whisperop.core.models import Job, JobStatus
from whisperop.core.ports import DecodeHints, JobChange, JobPage, JobWatcher, Unsubscribe
from whisperop.core.settings import DEFAULT_WATCH_TIMEOUT_SECS, WebhookRegistrySettings
from whisperop.core.subscribers import Subscribers
from whisperop.cluster.s3 import read_result
from whisperop.cluster.watch import ResourceWatch
from whisperop.stores.s3_blobs import S3BlobStore

log = logging.getLogger("whisperop.cluster.job_queue")

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
READ_YOUR_WRITES_SECS = 5.0  # how long create waits for its own job to reach the watch cache
SEGMENT_CACHE_SIZE = 256  # result documents kept in memory (GET of a finished job polled by clients)


TJ = crds.TranscriptionJob


def _owner_of(tj: TJ) -> str | None:
    return tj.annotations.get(crds.ANN_OWNER) or None


class K8sJobStore:
    """JobQueue on TranscriptionJobs of one namespace and one model."""

    def __init__(self, api: Any, namespace: str, blobs: S3BlobStore, model: str = crds.DEFAULT_MODEL,
                 watch_timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECS, ttl_secs_after_finished: int | None = None,
                 registry: WebhookRegistrySettings | None = None) -> None:
        self.api = api
        self.registry = registry or WebhookRegistrySettings()
        self.namespace = namespace
        self.blobs = blobs
        self.model = model
        self.ttl_secs_after_finished = ttl_secs_after_finished
        self.res = kube.jobs(api, namespace)
        self.informer = ResourceWatch(self.res, timeout_seconds=watch_timeout_seconds, name="transcriptionjobs",
                                      transform=crds.as_job)
        self._watchers: Subscribers[JobChange] = Subscribers("job watcher")
        self._lock = threading.Lock()
        self._finished: set[str] = set()  # jobs whose terminal change this process already emitted
        self._read_result = functools.lru_cache(maxsize=SEGMENT_CACHE_SIZE)(self._fetch_result)
        self.informer.add_callback(self._on_event)

    # ── lifecycle ────────────────────────────────────────────────────────

    def start(self) -> None:
        self.informer.start()
        self._finished.update(tj.name for tj in self._cached() if tj.phase.terminal)

    def close(self) -> None:
        self.informer.stop()

    # ── helpers ──────────────────────────────────────────────────────────

    def _cached(self) -> list[TJ]:
        return self.informer.items()

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.blobs.bucket}/{self.blobs._k(key)}"

    def _result_doc(self, tj: TJ) -> crds.ResultDoc | None:
        """What a Done job's result JSON holds (cached per job uid and result URI: a Done job's
        result never changes; a job re-created under the same name has a new uid)."""
        if tj.status.result is None:
            return None
        return self._read_result(tj.metadata.get("uid"), tj.status.result.json_)

    def _fetch_result(self, uid: str | None, uri: str) -> crds.ResultDoc:
        return read_result(self.blobs.client, uri)

    def to_job(self, tj: TJ) -> Job:
        if tj.phase != Phase.Done:
            return crds.job_from_resource(tj, [])
        return crds.job_with_result(tj, self._result_doc(tj), verbose=True)  # the routes drop removed unless ?verbose=true

    def _read(self, job_id: str) -> TJ:
        if not _NAME_RE.match(job_id):
            raise JobNotFound(job_id)
        try:
            return crds.as_job(self.res.get(job_id))
        except kube.NotFound:
            raise JobNotFound(job_id) from None

    # ── JobQueue: facade side ────────────────────────────────────────────

    def create(self, job: Job, audio_key: str, priority: int = 0, hints: DecodeHints | None = None,
               owner: str | None = None) -> Job:
        """``audio_key``: an upload of ours (owned: the finalizer deletes it), or a user's ``s3://`` URI
        (an ``audio_url``: pointed at, never deleted)."""
        external = audio_key.startswith("s3://")
        limit, factor = job.time_limit_secs, job.chunk_time_limit_factor
        # model_construct: the API server validates against the schema generated from this model
        spec = crds.TranscriptionJobSpec.model_construct(
            audio=audio_key if external else self.s3_uri(audio_key), model=self.model, task=job.task,
            priority=priority, language=job.language or None, webhookUrl=job.webhook_url or None,
            ttlSecondsAfterFinished=self.ttl_secs_after_finished or None,
            timeLimitSeconds=max(1, int(round(limit))) if limit is not None else None,
            chunkTimeLimitFactor=f"{factor:.6f}".rstrip("0").rstrip(".") if factor is not None else None)
        annotations = {crds.ANN_SUBMITTED: crds.submitted_now()}
        if not external:
            annotations[crds.ANN_AUDIO_OWNED] = "true"
        if hints and (raw := hints.to_json()):  # an annotation, not spec: the CRD schema stays the contract's
            annotations[crds.ANN_DECODE_HINTS] = raw
        if job.filename:
            annotations[crds.ANN_FILENAME] = job.filename
        if owner:
            annotations[crds.ANN_OWNER] = owner
        body = {
            "apiVersion": crds.API_VERSION, "kind": crds.JOB_KIND,
            "metadata": {"name": job.id, "annotations": annotations, "labels": {crds.LABEL_MODEL: self.model}},
            "spec": spec.dump(),
        }
        obj = self.res.create(body)
        if not self.informer.wait_seen(job.id, READ_YOUR_WRITES_SECS):
            log.warning("job not yet in the watch cache; listings may lag", extra={"job_id": job.id})
        return crds.job_from_resource(obj)

    def get(self, job_id: str) -> Job:
        return self.to_job(self._read(job_id))

    def owner(self, job_id: str) -> str | None:
        return _owner_of(self._read(job_id))

    def count_queued(self, owner: str) -> int:
        return sum(1 for tj in self._cached() if tj.phase == Phase.Queued and not tj.spec.cancel and _owner_of(tj) == owner)

    def list_page(self, statuses: Sequence[JobStatus] | None, limit: int, cursor: str | None = None,
                  owner: str | None = None) -> JobPage:
        """Newest first from the watch cache; the cursor is the last job's
        ``submission order|name`` (the queue's own order key), so jobs created while paging never
        shift later pages."""
        after: tuple[str, str] | None = None
        if cursor is not None:
            order, sep, name = cursor.rpartition("|")
            if not sep or not order or not name:
                raise ValueError(f"invalid cursor {cursor!r}")
            after = (order, name)
        wanted = set(statuses or ())
        keyed = sorted((((crds.submission_order(tj), tj.name), tj) for tj in self._cached()), key=lambda kv: kv[0],
                       reverse=True)
        out: list[tuple[tuple[str, str], Job]] = []
        for key, tj in keyed:
            if after is not None and key >= after:
                continue
            if owner is not None and _owner_of(tj) != owner:
                continue
            j = crds.job_from_resource(tj)
            if wanted and j.status not in wanted:
                continue
            if len(out) == limit:
                return JobPage([j for _, j in out], "|".join(out[-1][0]))
            out.append((key, j))
        return JobPage([j for _, j in out], None)

    def delete(self, job_id: str) -> str | None:
        """Deletes the TranscriptionJob; the operator's finalizer removes its S3 objects (results,
        and the audio the facade uploaded), so there is no audio key for the caller."""
        phase = self._read(job_id).phase
        if not phase.terminal:
            raise JobStillActive(job_id, crds.PHASE_TO_STATUS[phase].value)
        try:
            self.res.delete(job_id)
        except kube.NotFound:
            raise JobNotFound(job_id) from None
        return None

    def finished_before(self, cutoff: datetime, limit: int = 500) -> list[str]:
        """Always empty: in a cluster the operator collects finished jobs by their
        ``spec.ttlSecondsAfterFinished`` (which ``create`` sets from the facade's TTL)."""
        return []

    def count_by_status(self) -> dict[JobStatus, int]:
        counts = {s: 0 for s in JobStatus}
        for tj in self._cached():
            counts[crds.PHASE_TO_STATUS[tj.phase]] += 1
        return counts

    def queue_depth(self) -> int:
        """Queued (and not yet accepted) TranscriptionJobs of this facade's model."""
        return sum(1 for tj in self._cached() if tj.spec.model == self.model and tj.phase == Phase.Queued
                   and not tj.spec.cancel and not tj.deleting)

    def cancel(self, job_id: str, wait_secs: float = 10.0) -> Job:
        for _ in range(10):
            tj = self._read(job_id)
            if tj.phase.terminal:
                raise JobAlreadyTerminal(job_id, crds.PHASE_TO_STATUS[tj.phase].value)
            try:
                self.res.patch(job_id, {"spec": {"cancel": True}}, rv=tj.resource_version)
                break
            except kube.Conflict:
                continue
            except kube.NotFound:
                raise JobNotFound(job_id) from None
        else:
            raise RuntimeError(f"could not cancel job {job_id}: too many conflicts")
        # the operator (queued) or the worker (running) writes Cancelled; wait a moment for it
        deadline = time.monotonic() + wait_secs
        while time.monotonic() < deadline:
            cur = self.informer.cached(job_id)
            if cur is not None and cur.phase == Phase.Cancelled:
                return crds.job_from_resource(cur)
            if cur is not None and cur.phase.terminal:
                break  # the worker finished first; report what happened honestly below
            time.sleep(0.05)
        job = self.get(job_id)
        if job.status in (JobStatus.done, JobStatus.failed):
            return job
        return job.model_copy(update={"status": JobStatus.cancelled, "segments": []})

    def audio_key(self, job_id: str) -> str | None:
        # the operator's finalizer owns the clean-up of uploaded audio (annotation audio-owned)
        return None

    def recover_interrupted(self) -> list[Job]:
        return []  # the operator requeues jobs of dead workers (heartbeat)

    def watch(self, callback: JobWatcher) -> Unsubscribe:
        return self._watchers.add(callback)

    def register_webhook(self, url: str, pending: bool = False) -> bool:
        return cluster_webhooks.register(self.api, self.namespace, url, pending=pending, limits=self.registry)

    def unregister_webhook(self, url: str) -> bool:
        return cluster_webhooks.unregister(self.api, self.namespace, url)

    def webhook_urls(self) -> list[str]:
        return cluster_webhooks.registered(self.api, self.namespace)

    def progress(self, job_id: str) -> tuple[int, int] | None:
        tj = self._read(job_id)
        total = tj.status.chunksTotal or 0
        if tj.phase != Phase.Running or total < 1:
            return None
        return tj.status.chunk or 0, total

    # ── the watch → JobChange ────────────────────────────────────────────

    def _publish(self, change: JobChange) -> None:
        self._watchers.publish(change, {"job_id": change.job.id})

    def _on_event(self, typ: str, obj: TJ, prev: TJ | None) -> None:
        name = obj.name
        if typ == "DELETED":
            with self._lock:
                self._finished.discard(name)
            return
        phase, before = obj.phase, (prev.phase if prev is not None else None)
        st = obj.status
        if prev is None and phase not in crds.TERMINAL_PHASES:
            self._publish(JobChange("created", crds.job_from_resource(obj)))
        if phase == Phase.Running and before != Phase.Running:
            self._publish(JobChange("started", crds.job_from_resource(obj)))
        # Progress: the worker rate-limits its status writes (≤ 2/s), so one write can cover several
        # chunks; every chunk between the last one this process saw and the current one is done, and
        # each gets its progress event (as in local mode). A Done job has done all its chunks.
        seen = (prev.status.chunk or 0) if prev is not None and before == Phase.Running else 0
        total = st.chunksTotal or 0
        upto = (st.chunk or 0) if phase == Phase.Running else total if phase == Phase.Done else 0
        if before not in crds.TERMINAL_PHASES and total >= 1 and upto > seen and name not in self._finished:
            job = crds.job_from_resource(obj)
            for chunk in range(max(seen, 0) + 1, min(upto, total) + 1):
                self._publish(JobChange("progress", job, chunk, total))
        if phase in crds.TERMINAL_PHASES:
            with self._lock:
                if name in self._finished:
                    return
                self._finished.add(name)
            if not self._watchers:
                return
            try:
                job = self.to_job(obj)
            except Exception:
                log.warning("could not read the result of a finished job", extra={"job_id": name}, exc_info=True)
                job = crds.job_from_resource(obj)
            self._publish(JobChange("finished", job))
