"""The WhisperModel's status, conditions and Events, and the lifecycle webhooks of its state changes.

:func:`status_body` is pure (what the status should say); :func:`write` sends it
with a write guarded by the resourceVersion the reconcile read, and only when
something changed, then announces what changed: one Event, one structured
log line and (ready/unloaded) one lifecycle webhook per state change. The
previous state is the one stored in status, so a restarted operator does not
repeat them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from whisperop.cluster import kube
from whisperop.core import crds, modelsource

from . import webhooks
from .config import api
from .observe import SOURCE_CONDITION

log = logging.getLogger("whisperop.operator.status")

READY_REASON = {"ready": "Loaded", "loading": "Loading", "waiting_for_gpu": "WaitingForGpu", "unloaded": "ScaledToZero"}
EVENT_REASON = {"ready": "ModelReady", "loading": "ModelLoading", "waiting_for_gpu": "ModelWaitingForGpu",
                "unloaded": "ModelUnloaded"}


def reject(wm: dict[str, Any], message: str) -> None:
    """An invalid model source: ``Accepted=False``/``Ready=False`` (reason InvalidModelSource) and one
    Warning Event per generation. The CRD's CEL rules reject such specs; this covers objects
    stored under an older CRD or by a server without CEL. An existing Deployment is left alone
    (it serves the last valid spec) until the spec is fixed."""
    meta = wm["metadata"]
    old = wm.get("status") or {}
    gen = meta.get("generation")
    prev = next((c for c in old.get("conditions") or [] if c.get("type") == "Accepted"), None)
    if prev and prev.get("reason") == "InvalidModelSource" and prev.get("message") == message and \
            prev.get("observedGeneration") == gen:
        return
    now = kube.now()
    conds = crds.set_condition(old.get("conditions") or [], "Accepted", "False", "InvalidModelSource", message, now, gen)
    conds = crds.set_condition(conds, "Ready", "False", "InvalidModelSource", message, now, gen)
    try:
        kube.models(api(), meta["namespace"]).patch_status(meta["name"], {"conditions": conds, "observedGeneration": gen},
                                                           rv=meta["resourceVersion"])
    except (kube.Conflict, kube.NotFound):
        return  # a newer version exists; its event runs this again
    kube.post_event(api(), wm, "Warning", "InvalidModelSource", message, "whisperop-operator")
    log.warning("model rejected", extra={"namespace": meta["namespace"], "model": meta["name"], "reason": message})


def accepted_message(spec: dict[str, Any]) -> str:
    src = modelsource.resolve(spec)
    return f"model from {src.uri}" if src.kind == "uri" else f"model from PVC {src.claim_name}: {src.path}"


def status_body(wm: dict[str, Any], seen: dict[str, Any], desired: int, queued: int, running: int,
                activity: datetime | None, source_cond: tuple[str, str, str] | None, now: datetime) -> dict[str, Any]:
    """The status the model should have (pure). ``lastActivityTime`` only moves forward; while jobs
    run (every reconcile sees ``now`` as activity) only by more than a second, to save writes.
    Without work it takes any newer value: a load request must end up older than the ready
    time stored after it, or the request would count as unserved once the model is down."""
    meta = wm["metadata"]
    old = wm.get("status") or {}
    gen = meta.get("generation")
    state = seen["state"]
    conds = old.get("conditions") or []
    conds = crds.set_condition(conds, "Ready", "True" if state == "ready" else "False", READY_REASON[state],
                               f"{seen['readyReplicas']} of {desired} replicas ready", now, gen)
    if seen["unschedulableReplicas"]:
        conds = crds.set_condition(conds, "GpuAvailable", "False", "Unschedulable",
                                   f"{seen['unschedulableReplicas']} replica(s) cannot be scheduled: "
                                   f"{seen['unschedulableMessage']}", now, gen)
    else:
        conds = crds.set_condition(conds, "GpuAvailable", "True", "Scheduled", "all replicas scheduled", now, gen)
    conds = crds.set_condition(conds, "Accepted", "True", "ModelSourceValid", accepted_message(wm["spec"]), now, gen)
    if source_cond:
        status_, reason, message = source_cond
        conds = crds.set_condition(conds, SOURCE_CONDITION, status_, reason, message, now, gen)
    else:  # a URI source (or a spec that moved off a PVC): no claim to report on
        conds = [c for c in conds if c.get("type") != SOURCE_CONDITION]
    act = crds.parse_time(old.get("lastActivityTime"))
    if activity is not None and (act is None or activity - act > timedelta(seconds=1)
                                 or (activity > act and not (queued or running))):
        act = activity
    return {
        "state": state, "replicas": desired, "readyReplicas": seen["readyReplicas"],
        "unschedulableReplicas": seen["unschedulableReplicas"], "queueDepth": queued, "runningJobs": running,
        "loadedAt": seen["loadedAt"] if state == "ready" else None,
        "vramNeededMB": seen["vramNeededMB"], "vramFreeMB": seen["vramFreeMB"], "retryInSecs": seen["retryInSecs"],
        "gpu": seen["gpu"],
        "streams": seen.get("streams") if state == "ready" else None,
        "streamsWanted": seen.get("streamsWanted") if state == "ready" else None,
        "lastActivityTime": kube.ts(act) if act else None,
        "conditions": conds, "observedGeneration": gen,
    }


def changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a write is needed (condition timestamps alone are no change)."""
    cmp_old = {k: old.get(k) for k in new if k != "conditions"}
    cmp_new = {k: v for k, v in new.items() if k != "conditions"}
    key = lambda c: (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))  # noqa: E731
    return cmp_old != cmp_new or {key(c) for c in old.get("conditions") or []} != {key(c) for c in new["conditions"]}


def write(wm: dict[str, Any], seen: dict[str, Any], desired: int, queued: int, running: int,
          activity: datetime | None, source_cond: tuple[str, str, str] | None) -> bool:
    """Write the status when it changed, then announce the changes; False when nothing was written."""
    meta = wm["metadata"]
    old = wm.get("status") or {}
    new = status_body(wm, seen, desired, queued, running, activity, source_cond, kube.now())
    if not changed(old, new):
        return False
    try:
        kube.models(api(), meta["namespace"]).patch_status(meta["name"], new, rv=meta["resourceVersion"])
    except (kube.Conflict, kube.NotFound):
        return False  # a newer version exists; its event runs this again
    announce(wm, old, new, seen, source_cond)
    return True


def state_message(prev: str, state: str, seen: dict[str, Any]) -> str:
    msg = f"state {prev} → {state}"
    if state == "waiting_for_gpu":
        msg += f" (vram needed {seen['vramNeededMB']} MB, free {seen['vramFreeMB']} MB, retry in {seen['retryInSecs']} s)"
    return msg


def lifecycle_payload(state: str, new: dict[str, Any]) -> dict[str, Any] | None:
    """The lifecycle webhook of a state change (ready and unloaded only, as in local mode)."""
    if state == "ready":
        return {"type": "model_ready", "loaded_at": new["loadedAt"]}
    if state == "unloaded":
        return {"type": "model_unloaded"}
    return None


def announce(wm: dict[str, Any], old: dict[str, Any], new: dict[str, Any], seen: dict[str, Any],
             source_cond: tuple[str, str, str] | None) -> None:
    meta = wm["metadata"]
    ns, name = meta["namespace"], meta["name"]
    prev, state = old.get("state") or "unloaded", new["state"]
    if state != prev:
        msg = state_message(prev, state, seen)
        kube.post_event(api(), wm, "Warning" if state == "waiting_for_gpu" else "Normal", EVENT_REASON[state], msg,
                        "whisperop-operator")
        log.info("model state changed", extra={
            "namespace": ns, "model": name, "from": prev, "to": state, "ready_replicas": seen["readyReplicas"],
            "replicas": new["replicas"], "loaded_at": new["loadedAt"], "retry_in_secs": seen["retryInSecs"]})
        payload = lifecycle_payload(state, new)
        if payload:
            webhooks.send_model_event(ns, payload)
    old_src = next((c for c in old.get("conditions") or [] if c.get("type") == SOURCE_CONDITION), None)
    if source_cond and source_cond[0] == "False" and (old_src or {}).get("reason") != source_cond[1]:
        kube.post_event(api(), wm, "Warning", "ModelSourceUnavailable", source_cond[2], "whisperop-operator")
        log.warning("model source unavailable", extra={"namespace": ns, "model": name, "reason": source_cond[1],
                                                       "detail": source_cond[2]})
    if seen["unschedulableReplicas"] and not old.get("unschedulableReplicas"):
        kube.post_event(api(), wm, "Warning", "GpuUnavailable",
                        f"{seen['unschedulableReplicas']} replica(s) Unschedulable: {seen['unschedulableMessage']}",
                        "whisperop-operator")
        log.warning("replicas unschedulable", extra={"namespace": ns, "model": name,
                                                     "unschedulable": seen["unschedulableReplicas"],
                                                     "detail": seen["unschedulableMessage"]})
