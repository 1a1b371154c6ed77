"""Model state from the inference pods and the model source's claim (pure functions).

The reconcile (models.py) lists the pods and reads the claim; these functions
only look at what was read. Readiness of a replica is the pod's Ready
condition *and* the worker's load-state annotation saying ``ready`` (the
worker writes it once the model is in memory, with ``loadedAt``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from whisperop.cluster import kube
from whisperop.core import crds

SOURCE_CONDITION = "ModelSourceAvailable"


def _cond(pod: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in ((pod.get("status") or {}).get("conditions") or []) if c.get("type") == type_), None)


def pod_ready(pod: dict[str, Any]) -> bool:
    c = _cond(pod, "Ready")
    return (pod.get("status") or {}).get("phase") == "Running" and c is not None and c.get("status") == "True"


def pod_unschedulable(pod: dict[str, Any]) -> str | None:
    """The scheduler's message when the pod is Pending for lack of resources, else None."""
    c = _cond(pod, "PodScheduled")
    if (pod.get("status") or {}).get("phase") == "Pending" and c and c.get("status") == "False" and c.get(
            "reason") == "Unschedulable":
        return c.get("message") or "Unschedulable"
    return None


def load_state(pod: dict[str, Any]) -> dict[str, Any]:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(crds.ANN_LOAD_STATE)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def _streams(states: list[dict[str, Any]]) -> dict[str, Any]:
    """``streams`` / ``streamsWanted`` summed over the ready workers that report them (issue 14)."""
    told = [s for s in states if isinstance(s.get("streams"), int) and isinstance(s.get("streamsWanted"), int)]
    if not told:
        return {}
    return {"streams": sum(s["streams"] for s in told), "streamsWanted": sum(s["streamsWanted"] for s in told)}


def observe(wm: crds.WhisperModel, desired: int, pods: list[dict[str, Any]]) -> dict[str, Any]:
    """Model state and its figures from the pods (see the module doc)."""
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ready = ready_pods(pods)
    unsched = [(p, m) for p in live if (m := pod_unschedulable(p))]
    waiting = [load_state(p) for p in live if load_state(p).get("state") == "waiting_for_gpu"]
    out: dict[str, Any] = {"readyReplicas": len(ready), "unschedulableReplicas": len(unsched),
                           "vramNeededMB": None, "vramFreeMB": None, "retryInSecs": None, "loadedAt": None,
                           "gpu": None, "streams": None, "streamsWanted": None}
    poll = wm.spec.gpuPollIntervalSeconds
    if ready:
        out["state"] = "ready"
        times = sorted(s for p in ready if (s := load_state(p).get("loadedAt")))
        out["loadedAt"] = times[0] if times else kube.ts(wm.status.loadedAt)  # none stored: now
        out["gpu"] = next((g for p in sorted(ready, key=lambda p: p["metadata"]["name"])
                           if (g := load_state(p).get("gpu"))), None)
        out.update(_streams([load_state(p) for p in ready]))
    elif desired == 0:
        out["state"] = "unloaded"
    elif waiting:
        w = waiting[0]
        out.update(state="waiting_for_gpu", vramNeededMB=w.get("vramNeededMB"), vramFreeMB=w.get("vramFreeMB"),
                   retryInSecs=w.get("retryInSecs", poll))
    elif live and len(unsched) == len(live) and any("gpu" in m.lower() for _, m in unsched):
        out.update(state="waiting_for_gpu", retryInSecs=poll)
    else:
        out["state"] = "loading"
    out["unschedulableMessage"] = unsched[0][1] if unsched else None
    return out



def ready_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live pods whose kubelet says Ready and whose worker reports the model loaded."""
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and pod_ready(p)
            and load_state(p).get("state") == "ready"]


def ready_since(pods: list[dict[str, Any]], now: datetime) -> datetime | None:
    """When the model became ready: the earliest ``loadedAt`` of its ready pods (a ready pod
    without one counts from ``now``); None while no pod is ready. The idle clock starts here."""
    ready = ready_pods(pods)
    if not ready:
        return None
    times = [t for p in ready if (t := crds.parse_time(load_state(p).get("loadedAt"))) is not None]
    return min(times) if times else now


def claim_condition(claim_name: str, ns: str, pvc: dict[str, Any] | None) -> tuple[str, str, str]:
    """``ModelSourceAvailable`` (status, reason, message) for a PVC source, from the claim as read
    (None: not found). Why: a missing or lost claim leaves the inference pods Pending with only
    the scheduler's message on the pod; users look at the WhisperModel. ``Pending`` is not an
    error: a claim of a WaitForFirstConsumer StorageClass binds only when the first pod is
    scheduled, so it reads Unknown until then."""
    if pvc is None:
        return ("False", "ClaimNotFound", f"PersistentVolumeClaim {claim_name} not found in namespace {ns}; "
                "inference pods stay Pending until it exists")
    phase = (pvc.get("status") or {}).get("phase") or "Pending"
    if phase == "Bound":
        return ("True", "ClaimBound", f"PersistentVolumeClaim {claim_name} is Bound")
    if phase == "Lost":
        return ("False", "ClaimLost", f"PersistentVolumeClaim {claim_name} lost its PersistentVolume")
    return ("Unknown", "ClaimPending", f"PersistentVolumeClaim {claim_name} is {phase} (a WaitForFirstConsumer "
            "claim binds when the first inference pod is scheduled)")
