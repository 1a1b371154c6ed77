"""Per-namespace informers of TranscriptionJobs for the model reconcile (see
whisperop.cluster.informer). Started lazily for each namespace the operator
serves, the first time a WhisperModel there is reconciled; a cache of the
cluster, rebuilt from a fresh list after a restart, never the source of truth.

A job whose phase changes (new, Queued, Running, terminal, deleted) kicks its
model's reconcile (kick.py): a queued job scales the model up at once, a
finished one moves the idle clock without waiting for the next tick. Progress
and heartbeat writes do not kick (the phase is unchanged)."""

from __future__ import annotations

import threading
from typing import Any

from whisperop.cluster import kube
from whisperop.cluster.informer import Informer
from whisperop.core import crds

from .config import api

_lock = threading.Lock()
_jobs: dict[str, Informer] = {}
_phases: dict[tuple[str, str], str | None] = {}


def jobs(ns: str) -> Informer:
    with _lock:
        inf = _jobs.get(ns)
        if inf is None:
            inf = _jobs[ns] = Informer(kube.jobs(api(), ns), transform=summary, on_change=_on_change).start()
        return inf


def phase_changed(typ: str, obj: dict[str, Any]) -> bool:
    """Record the job's phase; True when it differs from the last one seen (or the job is new/gone)."""
    meta = obj.get("metadata") or {}
    key = (meta.get("namespace") or "", meta.get("name") or "")
    if typ == "DELETED":
        return _phases.pop(key, "gone") != "gone"
    phase = (obj.get("status") or {}).get("phase")
    if key in _phases and _phases[key] == phase:
        return False
    _phases[key] = phase
    return True


def _on_change(typ: str, obj: dict[str, Any]) -> None:
    """Runs on the informer's thread: only records and kicks (never waits on the API)."""
    if not phase_changed(typ, obj) or (typ != "DELETED" and not (obj.get("status") or {}).get("phase")):
        return  # a new job without a phase is not work yet; jobs.py queues it, and that change kicks
    from . import models  # models imports this module

    ns = (obj.get("metadata") or {}).get("namespace")
    if ns:
        models.nudge(ns, (obj.get("spec") or {}).get("model") or crds.DEFAULT_MODEL)


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
