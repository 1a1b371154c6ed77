"""Local-mode retention: finished jobs are deleted ``JOB_TTL_SECS`` after they finished.

The cluster equivalent is the operator's ``ttlSecondsAfterFinished`` garbage
collection (the facade copies the same setting into every job it creates).
A sweep deletes the row and any blob the job still owns, in batches of 500
(one SQLite query each); it runs every ``ttl / 2`` seconds, at least every
60 s and at most every 0.5 s, so a job lives between ``ttl`` and
``1.5 × ttl`` (capped at ``ttl + 60 s``) after it finished.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from whisperop.core.errors import JobNotFound, JobStillActive
from whisperop.core.models import utcnow
from whisperop.core.ports import BlobStore, JobQueue

log = logging.getLogger("whisperop.api.retention")


def purge_job(jobs: JobQueue, blobs: BlobStore, job_id: str) -> None:
    """Delete a finished job and the blob it still owns (raises JobNotFound / JobStillActive)."""
    key = jobs.delete(job_id)
    if key:
        blobs.delete(key)


def sweep(jobs: JobQueue, blobs: BlobStore, ttl_secs: int) -> int:
    """Delete every job that finished more than ``ttl_secs`` ago; returns how many."""
    cutoff = utcnow() - timedelta(seconds=ttl_secs)
    n = 0
    while True:
        ids = jobs.finished_before(cutoff)
        for job_id in ids:
            try:
                purge_job(jobs, blobs, job_id)
                n += 1
            except (JobNotFound, JobStillActive):
                pass
        if len(ids) < 500:
            return n


class Retention:
    """The sweeper thread (only started when ``ttl_secs`` > 0)."""

    def __init__(self, jobs: JobQueue, blobs: BlobStore, ttl_secs: int) -> None:
        self.jobs, self.blobs, self.ttl_secs = jobs, blobs, ttl_secs
        self.interval = min(60.0, max(0.5, ttl_secs / 2))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.ttl_secs <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                n = sweep(self.jobs, self.blobs, self.ttl_secs)
                if n:
                    log.info("expired finished jobs deleted", extra={"jobs": n, "ttl_secs": self.ttl_secs})
            except Exception:
                log.warning("retention sweep failed; retrying", exc_info=True)
