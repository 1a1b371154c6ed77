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
from typing import Any

from whisperop.cluster import kube
from whisperop.core import crds

from . import metrics

log = logging.getLogger("whisperop.operator.gc")


def ttl_expired(obj: dict[str, Any]) -> bool:
    ttl = obj.get("spec", {}).get("ttlSecondsAfterFinished")
    status = obj.get("status") or {}
    done = crds.parse_time(status.get("completionTime"))
    if ttl is None or status.get("phase") not in crds.TERMINAL_PHASES or done is None:
        return False
    return kube.now() >= done + timedelta(seconds=int(ttl))


def summary_expired(s: dict[str, Any]) -> bool:
    done = crds.parse_time(s.get("completionTime"))
    return s.get("ttl") is not None and done is not None and kube.now() >= done + timedelta(seconds=int(s["ttl"]))


def expire(res: kube.Resources, obj: dict[str, Any]) -> None:
    res.delete(obj["metadata"]["name"])
    metrics.GC.labels("ttl").inc()


def delete_objects(obj: dict[str, Any]) -> int:
    from .config import config

    s3 = config().s3
    meta = obj["metadata"]
    n = 0
    result = (obj.get("status") or {}).get("result") or {}
    buckets = {s3.bucket}
    for fmt in ("json", "srt", "vtt", "txt"):
        uri = result.get(fmt)
        if uri and uri.startswith("s3://"):
            buckets.add(crds.split_s3_uri(uri)[0])
            s3.delete_uri(uri)
            n += 1
    for bucket in buckets:
        n += s3.delete_prefix(crds.results_prefix(meta["namespace"], meta["name"]), bucket)
    audio = obj.get("spec", {}).get("audio", "")
    if (meta.get("annotations") or {}).get(crds.ANN_AUDIO_OWNED) == "true" and audio.startswith("s3://"):
        s3.delete_uri(audio)
        n += 1
    return n


def cleanup_and_release(res: kube.Resources, obj: dict[str, Any]) -> bool:
    """Delete the job's system-created S3 objects, then remove the finalizer."""
    meta = obj["metadata"]
    try:
        n = delete_objects(obj)
    except Exception:
        log.warning("S3 clean-up failed; retried by the next sweep", extra={"job": meta["name"]}, exc_info=True)
        return False
    finalizers = [f for f in (meta.get("finalizers") or []) if f != crds.FINALIZER]
    try:
        res.patch(meta["name"], {"metadata": {"finalizers": finalizers}}, rv=meta["resourceVersion"])
    except (kube.Conflict, kube.NotFound):
        return False
    metrics.GC.labels("finalizer").inc()
    log.info("job cleaned up", extra={"job": meta["name"], "objects": n})
    return True


def sweep(namespace: str, summaries: list[dict[str, Any]]) -> None:
    """Periodic: delete expired jobs, finish clean-ups that an event could not."""
    from .config import api

    res = kube.jobs(api(), namespace)
    for s in summaries:
        try:
            if s["deleting"]:
                obj = res.get(s["name"])
                if crds.FINALIZER in (obj["metadata"].get("finalizers") or []):
                    cleanup_and_release(res, obj)
            elif summary_expired(s):
                res.delete(s["name"])
                metrics.GC.labels("ttl").inc()
        except kube.NotFound:
            pass
        except Exception:
            log.warning("sweep step failed", extra={"job": s.get("name")}, exc_info=True)
