"""Per-namespace informers of TranscriptionJobs for the model reconcile (see
whisperop.cluster.informer). Started lazily for each namespace the operator
serves, the first time a WhisperModel there is reconciled; a cache of the
cluster, rebuilt from a fresh list after a restart, never the source of truth."""

from __future__ import annotations

import threading
import time
from typing import Any

from whisperop.cluster import kube
from whisperop.cluster.informer import Informer
from whisperop.core import crds

from .config import api

_lock = threading.Lock()
_jobs: dict[str, Informer] = {}


def jobs(ns: str) -> Informer:
    with _lock:
        inf = _jobs.get(ns)
        if inf is None:
            inf = _jobs[ns] = Informer(kube.jobs(api(), ns), transform=summary).start()
        return inf


def summary(obj: dict[str, Any]) -> dict[str, Any]:
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status") or {}
    return {
        "name": meta.get("name"),
        "model": spec.get("model") or crds.DEFAULT_MODEL,
        "phase": status.get("phase"),
        "priority": spec.get("priority", 0),
        "created": meta.get("creationTimestamp"),
        "cancel": bool(spec.get("cancel")),
        "worker": status.get("worker"),
        "heartbeat": status.get("heartbeatTime"),
        "startTime": status.get("startTime"),
        "completionTime": status.get("completionTime"),
        "ttl": spec.get("ttlSecondsAfterFinished"),
        "deleting": bool(meta.get("deletionTimestamp")),
        "rv": meta.get("resourceVersion"),
    }


def summaries(ns: str, timeout: float = 30.0) -> list[dict[str, Any]] | None:
    """Every job of the namespace, or None while the informer has not synced."""
    inf = jobs(ns)
    if not inf.synced.wait(timeout):
        return None
    return inf.snapshot()


def wait_seen(ns: str, name: str, rv: str, timeout: float = 1.0) -> None:
    """Wait (briefly) until the informer holds ``name`` at ``rv`` or later."""
    inf = jobs(ns)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = inf.get(name)
        if s is not None and int(s["rv"]) >= int(rv):
            return
        inf.wait(0.05)
