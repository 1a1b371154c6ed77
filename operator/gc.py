"""Garbage collection of TranscriptionJobs.

* ``ttlSecondsAfterFinished``: a finished job is deleted that long after its
  ``completionTime`` (checked on the job's events and by the periodic sweep of
  models.py, so a job is collected even if no event arrives after it finished).
* Finalizer ``whisperop.io/cleanup``: before a job goes away, the S3 objects the
  system created for it are deleted — its outputs under
  ``results/<ns>/<name>/`` and the URIs in ``status.result`` — and its input
  audio only when annotated ``whisperop.io/audio-owned: "true"`` (uploaded by
  the facade). A user's own input object is never touched.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from whisperop.cluster import kube
from whisperop.core import crds

from . import metrics

log = logging.getLogger("whisperop.operator.gc")


def ttl_expired(tj: crds.TranscriptionJob) -> bool:
    return tj.phase.terminal and summary_expired(crds.JobSummary.of(tj))


def summary_expired(s: crds.JobSummary) -> bool:
    done = s.completion_time
    return s.ttl is not None and done is not None and kube.now() >= done + timedelta(seconds=s.ttl)


def expire(res: kube.Resources, tj: crds.TranscriptionJob) -> None:
    res.delete(tj.name)
    metrics.GC.labels("ttl").inc()


def delete_objects(tj: crds.TranscriptionJob) -> int:
    from .config import config

    s3 = config().s3
    n = 0
    result = tj.status.result.dump() if tj.status.result else {}
    buckets = {s3.bucket}
    for fmt in ("json", "srt", "vtt", "txt"):
        uri = result.get(fmt)
        if uri and uri.startswith("s3://"):
            buckets.add(crds.split_s3_uri(uri)[0])
            s3.delete_uri(uri)
            n += 1
    for bucket in buckets:
        n += s3.delete_prefix(crds.results_prefix(tj.namespace, tj.name), bucket)
    if tj.annotations.get(crds.ANN_AUDIO_OWNED) == "true" and tj.spec.audio.startswith("s3://"):
        s3.delete_uri(tj.spec.audio)
        n += 1
    return n


def cleanup_and_release(res: kube.Resources, tj: crds.TranscriptionJob) -> bool:
    """Delete the job's system-created S3 objects, then remove the finalizer."""
    try:
        n = delete_objects(tj)
    except Exception:
        log.warning("S3 clean-up failed; retried by the next sweep", extra={"job": tj.name}, exc_info=True)
        return False
    finalizers = [f for f in (tj.metadata.get("finalizers") or []) if f != crds.FINALIZER]
    try:
        res.patch(tj.name, {"metadata": {"finalizers": finalizers}}, rv=tj.resource_version)
    except (kube.Conflict, kube.NotFound):
        return False
    metrics.GC.labels("finalizer").inc()
    log.info("job cleaned up", extra={"job": tj.name, "objects": n})
    return True


def sweep(namespace: str, summaries: list[crds.JobSummary]) -> None:
    """Periodic: delete expired jobs, finish clean-ups that an event could not."""
    from .config import api

    res = kube.jobs(api(), namespace)
    for s in summaries:
        try:
            if s.deleting:
                tj = crds.as_job(res.get(s.name))
                if crds.FINALIZER in (tj.metadata.get("finalizers") or []):
                    cleanup_and_release(res, tj)
            elif summary_expired(s):
                res.delete(s.name)
                metrics.GC.labels("ttl").inc()
        except kube.NotFound:
            pass
        except Exception:
            log.warning("sweep step failed", extra={"job": s.name}, exc_info=True)
