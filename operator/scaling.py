"""How many inference replicas a WhisperModel should have (a pure function).

Inputs are all read from the cluster: queued and running jobs of the model,
the model's spec, ``status.lastActivityTime``, the Deployment's current
replicas and the demand annotation.

Demand from the REST facade (``POST /model/load`` / ``/model/unload``) is
recorded WITHOUT touching the spec a user keeps in Git, as the annotation

    metadata.annotations["whisperop.io/demand"] = '{"action": "load", "at": "2026-05-10T14:00:00.000Z"}'

* ``load``: counts as activity at ``at`` — the model gets at least one replica
  until ``idleTimeoutSeconds`` have passed since then without work;
* ``unload``: when no job is queued or running, skip the rest of the idle
  timeout and go to ``minReplicas`` now (an in-flight job finishes first;
  jobs that arrive later scale it up again).

Rules: with work, ``min(maxReplicas, max(minReplicas, ceil((queued + running) / JOB_CONCURRENCY), current))``
(``JOB_CONCURRENCY`` jobs per replica at a time, from ``spec.env``, default 1; never shrinking while there is work); idle, keep the current count until
``idleTimeoutSeconds`` (0 = never) after the later of the last activity and the
moment the model became ready, then ``minReplicas``.

The idle clock (issue 15). Activity is every load request, every job queued
or running (``now``), every job's arrival and every job's completion (any
terminal phase, ``completionTime`` from the informer) — a reconcile does not
have to catch a job while it runs for it to count. The clock runs only while
the model is ready: loading time (scheduling, image pull, download, load)
never counts, so a load that takes longer than ``idleTimeoutSeconds`` is not
undone before anyone could use it (measured before this rule: with
``idleTimeoutSeconds: 3`` a load went loading → unloaded in 7.5 s without ever
being ready; with 20, the Deployment went to zero 16.6 s after the last job
ended). An explicit unload demand is not idle time and acts at once. The
reconcile passes the ready time as activity too, so the stored
``status.lastActivityTime`` is where the idle clock starts, and a load request
older than it has been served: it gives no replica after the idle timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from whisperop.core import crds
from whisperop.core.crds import Demand, demand_annotation, parse_demand

__all__ = ["Decision", "Demand", "decide", "demand_annotation", "idle_deadline", "idle_since", "last_activity", "parse_demand", "desired_replicas"]


def last_activity(stored: datetime | None, demand: Demand | None, work: int, now: datetime,
                  created: datetime | None, jobs_seen: list[datetime] | None = None) -> datetime | None:
    """The newest activity: the stored one, the model's creation, a load request, ``now`` while
    there is work, and ``jobs_seen`` (arrival and completion times of the model's jobs)."""
    candidates = [t for t in (stored, created, *(jobs_seen or ())) if t is not None]
    if demand is not None and demand.action == "load":
        candidates.append(demand.at)
    if work:
        candidates.append(now)
    return max(candidates) if candidates else None


def idle_since(activity: datetime | None, ready_since: datetime | None) -> datetime | None:
    """Where the idle clock starts: the later of the last activity and the moment the model became
    ready; None while it is not ready (the clock does not run)."""
    if ready_since is None:
        return None
    return max(activity, ready_since) if activity is not None else ready_since


def idle_deadline(spec: crds.WhisperModelSpec, activity: datetime | None, ready_since: datetime | None) -> datetime | None:
    """When an idle, ready model goes down to ``minReplicas`` (None: not ready, or never)."""
    idle = spec.idleTimeoutSeconds
    start = idle_since(activity, ready_since)
    if idle == 0 or start is None:
        return None
    return start + timedelta(seconds=idle)


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str  # work | unload | idle_timeout | load_request | loading | within_idle | never_idle | min


def jobs_per_replica(spec: crds.WhisperModelSpec) -> int:
    """``JOB_CONCURRENCY`` of the model's workers (``spec.env``; the worker's default 1): a pod runs
    that many jobs at once, so that many jobs of work need one replica, not several."""
    try:
        return max(1, int(spec.env.get("JOB_CONCURRENCY", 1)))
    except (TypeError, ValueError):
        return 1  # the worker refuses such a value at start; scale as for one job per pod


def decide(spec: crds.WhisperModelSpec, queued: int, running: int, current: int, activity: datetime | None,
           demand: Demand | None, now: datetime, ready_since: datetime | None,
           last_arrival: datetime | None = None) -> Decision:
    """Replicas and why. ``ready_since``: when the model became ready (the earliest ``loadedAt`` of
    its ready pods), None while no pod is ready. ``last_arrival``: when the newest job of the model
    was created. An unload is undone only by a job that arrived after it — not by the activity of
    the job that was already running when it was asked (that one finishes first, then the model
    goes down). Unknown (None): the activity time is used."""
    mn = spec.minReplicas
    mx = max(spec.maxReplicas, mn, 1)
    work = queued + running
    if work:  # up by queue depth; never down while there is work (down only after the idle timeout)
        per_pod = jobs_per_replica(spec)
        return Decision(min(mx, max(mn, -(-work // per_pod), current)), "work")
    if demand is not None and demand.action == "unload":
        superseded_at = last_arrival if last_arrival is not None else activity
        if superseded_at is None or demand.at >= superseded_at:
            return Decision(mn, "unload")
    recent_load = demand is not None and demand.action == "load" and (activity is None or demand.at >= activity)
    keep = min(mx, max(current, mn, 1 if recent_load else 0))
    if spec.idleTimeoutSeconds == 0:
        return Decision(keep, "never_idle")
    if ready_since is None:
        # not ready (loading, waiting for a GPU, or scaled to zero): loading time is not idle time;
        # a load requested since the last activity gets its replica
        return Decision(keep, "load_request" if recent_load and keep > current else "loading" if keep else "min")
    deadline = idle_deadline(spec, activity, ready_since)
    if deadline is not None and now < deadline:
        return Decision(keep, "within_idle")
    return Decision(mn, "idle_timeout")


def desired_replicas(spec: crds.WhisperModelSpec, queued: int, running: int, current: int, activity: datetime | None,
                     demand: Demand | None, now: datetime, last_arrival: datetime | None = None,
                     ready_since: datetime | None = None) -> int:
    """:func:`decide`'s replica count."""
    return decide(spec, queued, running, current, activity, demand, now, ready_since, last_arrival).replicas
