"""Per-namespace watch caches of TranscriptionJobs for the model reconcile (see
whisperop.cluster.watch: the one list+watch cache of every component). Started lazily for each namespace the operator
serves, the first time a WhisperModel there is reconciled; a cache of the
cluster, rebuilt from a fresh list after a restart, never the source of truth.

A job whose phase changes (new, Queued, Running, terminal, deleted) kicks its
model's reconcile (kick.py): a queued job scales the model up at once, a
finished one moves the idle clock without waiting for the next tick. Progress
and heartbeat writes do not kick (the phase is unchanged)."""

from __future__ import annotations

import threading
from whisperop.cluster import kube
from whisperop.cluster.watch import ResourceWatch
from whisperop.core import crds

from .config import api

_lock = threading.Lock()
_jobs: dict[str, ResourceWatch] = {}


def jobs(ns: str) -> ResourceWatch:
    with _lock:
        inf = _jobs.get(ns)
        if inf is None:
            inf = _jobs[ns] = ResourceWatch(kube.jobs(api(), ns), transform=crds.JobSummary.of)
            inf.add_callback(lambda typ, s, prev: _on_change(ns, typ, s, prev))
            inf.start(wait=False)
        return inf


def phase_changed(typ: str, s: crds.JobSummary, prev: crds.JobSummary | None) -> bool:
    """True when a job's change kicks its model: a new phase (a job new with one, or gone).
    Progress and heartbeat writes keep the phase; a new job without a phase is not work yet
    (jobs.py queues it, and that change kicks)."""
    if typ == "DELETED":
        return True
    return s.phase is not None and (prev is None or prev.phase != s.phase)


def _on_change(ns: str, typ: str, s: crds.JobSummary, prev: crds.JobSummary | None) -> None:
    """Runs on the watch thread: only kicks (never waits on the API)."""
    if phase_changed(typ, s, prev):
        from . import models  # models imports this module

        models.nudge(ns, s.model)


def summaries(ns: str, timeout: float = 30.0) -> list[crds.JobSummary] | None:
    """Every job of the namespace, or None while the informer has not synced."""
    inf = jobs(ns)
    if not inf.synced.wait(timeout):
        return None
    return inf.items()
