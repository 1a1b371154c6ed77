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

Rules: with work, ``min(maxReplicas, max(minReplicas, queued + running, current))``
(one job per replica at a time; never shrinking while there is work); idle, keep the current count until
``idleTimeoutSeconds`` (0 = never) after the last activity, then
``minReplicas``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from whisperop.core import crds
from whisperop.core.crds import Demand, demand_annotation, parse_demand

__all__ = ["Demand", "demand_annotation", "parse_demand", "last_activity", "desired_replicas"]


def last_activity(stored: datetime | None, demand: Demand | None, work: int, now: datetime,
                  created: datetime | None) -> datetime | None:
    candidates = [t for t in (stored, created) if t is not None]
    if demand is not None and demand.action == "load":
        candidates.append(demand.at)
    if work:
        candidates.append(now)
    return max(candidates) if candidates else None


def desired_replicas(spec: dict[str, Any], queued: int, running: int, current: int, activity: datetime | None,
                     demand: Demand | None, now: datetime, last_arrival: datetime | None = None) -> int:
    """``last_arrival``: when the newest job of the model was created. An unload
    is undone only by a job that arrived after it — not by the activity of the
    job that was already running when it was asked (that one finishes first,
    then the model goes down). Unknown (None): the activity time is used."""
    mn = int(spec.get("minReplicas", crds.DEFAULT_MIN_REPLICAS))
    mx = max(int(spec.get("maxReplicas", crds.DEFAULT_MAX_REPLICAS)), mn, 1)
    work = queued + running
    if work:  # up by queue depth; never down while there is work (down only after the idle timeout)
        return min(mx, max(mn, work, current))
    if demand is not None and demand.action == "unload":
        superseded_at = last_arrival if last_arrival is not None else activity
        if superseded_at is None or demand.at >= superseded_at:
            return mn
    idle = int(spec.get("idleTimeoutSeconds", crds.DEFAULT_IDLE_TIMEOUT_SECS))
    recent_load = demand is not None and demand.action == "load" and (activity is None or demand.at >= activity)
    floor = max(mn, 1 if recent_load else 0)
    if idle == 0:
        return min(mx, max(current, floor))
    if activity is not None and now < activity + timedelta(seconds=idle):
        return min(mx, max(current, floor))
    return mn
