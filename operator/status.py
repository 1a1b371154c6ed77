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
    (it serves the last valid spec) until the spec is fixed. The spec does not parse, so the
    model comes as the API server's dict; its status is read through the typed model."""
    meta = wm["metadata"]
    old = crds.stored_model_status(wm)
    gen = meta.get("generation")
    prev = next((c for c in old.conditions if c.type == "Accepted"), None)
    if prev and prev.reason == "InvalidModelSource" and prev.message == message and prev.observedGeneration == gen:
        return
    now = kube.now()
    conds = crds.set_condition(old.conditions, "Accepted", "False", "InvalidModelSource", message, now, gen)
    conds = crds.set_condition(conds, "Ready", "False", "InvalidModelSource", message, now, gen)
    try:
        kube.models(api(), meta["namespace"]).patch_status(meta["name"], {"conditions": conds, "observedGeneration": gen},
                                                           rv=meta["resourceVersion"])
    except (kube.Conflict, kube.NotFound):
        return  # a newer version exists; its event runs this again
    kube.post_event(api(), wm, "Warning", "InvalidModelSource", message, "whisperop-operator")
    log.warning("model rejected", extra={"namespace": meta["namespace"], "model": meta["name"], "reason": message})


def accepted_message(spec: crds.WhisperModelSpec) -> str:
    src = modelsource.resolve(spec)
    return f"model from {src.uri}" if src.kind == "uri" else f"model from PVC {src.claim_name}: {src.path}"


def _conditions(wm: crds.WhisperModel, seen: dict[str, Any], desired: int,
                source_cond: tuple[str, str, str] | None, now: datetime) -> list[dict[str, Any]]:
    """Ready, GpuAvailable, Accepted and (PVC sources) ModelSourceAvailable as they should read."""
    state, gen = seen["state"], wm.metadata.get("generation")
    conds = crds.set_condition(wm.status.conditions, "Ready", "True" if state == "ready" else "False",
                               READY_REASON[state], f"{seen['readyReplicas']} of {desired} replicas ready", now, gen)
    if seen["unschedulableReplicas"]:
        conds = crds.set_condition(conds, "GpuAvailable", "False", "Unschedulable",
                                   f"{seen['unschedulableReplicas']} replica(s) cannot be scheduled: "
                                   f"{seen['unschedulableMessage']}", now, gen)
    else:
        conds = crds.set_condition(conds, "GpuAvailable", "True", "Scheduled", "all replicas scheduled", now, gen)
    conds = crds.set_condition(conds, "Accepted", "True", "ModelSourceValid", accepted_message(wm.spec), now, gen)
    if source_cond:
        status_, reason, message = source_cond
        return crds.set_condition(conds, SOURCE_CONDITION, status_, reason, message, now, gen)
    return [c for c in conds if c.get("type") != SOURCE_CONDITION]  # a URI source (or a spec that moved off a PVC)


def status_body(wm: crds.WhisperModel, seen: dict[str, Any], desired: int, queued: int, running: int,
                activity: datetime | None, source_cond: tuple[str, str, str] | None,
                now: datetime) -> crds.WhisperModelStatus:
    """The status the model should have (pure). ``lastActivityTime`` only moves forward; while jobs
    run (every reconcile sees ``now`` as activity) only by more than a second, to save writes.
    Without work it takes any newer value: a load request must end up older than the ready
    time stored after it, or the request would count as unserved once the model is down."""
    state = seen["state"]
    act = wm.status.lastActivityTime
    if activity is not None and (act is None or activity - act > timedelta(seconds=1)
                                 or (activity > act and not (queued or running))):
        act = activity
    ready = state == "ready"
    return crds.WhisperModelStatus.model_validate({
        "state": state, "replicas": desired, "readyReplicas": seen["readyReplicas"],
        "unschedulableReplicas": seen["unschedulableReplicas"], "queueDepth": queued, "runningJobs": running,
        "loadedAt": seen["loadedAt"] if ready else None,
        "vramNeededMB": seen["vramNeededMB"], "vramFreeMB": seen["vramFreeMB"], "retryInSecs": seen["retryInSecs"],
        "gpu": seen["gpu"],
        "streams": seen.get("streams") if ready else None,
        "streamsWanted": seen.get("streamsWanted") if ready else None,
        "lastActivityTime": act,
        "conditions": _conditions(wm, seen, desired, source_cond, now), "observedGeneration": wm.metadata.get("generation"),
    })


def changed(old: crds.WhisperModelStatus, new: crds.WhisperModelStatus) -> bool:
    """Whether a write is needed (condition timestamps alone are no change). Fields compare as they
    would be stored (JSON: timestamps in milliseconds), so an activity time that differs from the
    stored one only below a millisecond is no change."""
    if old.model_dump(mode="json", exclude={"conditions"}) != new.model_dump(mode="json", exclude={"conditions"}):
        return True
    key = lambda c: (c.type, c.status, c.reason, c.message)  # noqa: E731
    return {key(c) for c in old.conditions} != {key(c) for c in new.conditions}


def write(wm: crds.WhisperModel, seen: dict[str, Any], desired: int, queued: int, running: int,
          activity: datetime | None, source_cond: tuple[str, str, str] | None) -> bool:
    """Write the status when it changed, then announce the changes; False when nothing was written.
    The write is a merge patch of every field, None ones as explicit nulls (``loadedAt`` of a model
    that went down, the VRAM figures once it is no longer waiting, are deleted)."""
    old = wm.status
    new = status_body(wm, seen, desired, queued, running, activity, source_cond, kube.now())
    if not changed(old, new):
        return False
    try:
        kube.models(api(), wm.namespace).patch_status(wm.name, new.merge_patch(), rv=wm.resource_version)
    except (kube.Conflict, kube.NotFound):
        return False  # a newer version exists; its event runs this again
    announce(wm, old, new, seen, source_cond)
    return True


def state_message(prev: str, state: str, seen: dict[str, Any]) -> str:
    msg = f"state {prev} → {state}"
    if state == "waiting_for_gpu":
        msg += f" (vram needed {seen['vramNeededMB']} MB, free {seen['vramFreeMB']} MB, retry in {seen['retryInSecs']} s)"
    return msg


def lifecycle_payload(state: str, new: crds.WhisperModelStatus) -> dict[str, Any] | None:
    """The lifecycle webhook of a state change (ready and unloaded only, as in local mode)."""
    if state == "ready":
        return {"type": "model_ready", "loaded_at": kube.ts(new.loadedAt)}
    if state == "unloaded":
        return {"type": "model_unloaded"}
    return None


def announce(wm: crds.WhisperModel, old: crds.WhisperModelStatus, new: crds.WhisperModelStatus,
             seen: dict[str, Any], source_cond: tuple[str, str, str] | None) -> None:
    ns, name = wm.namespace, wm.name
    prev, state = crds.ModelStateName(old.state).value, crds.ModelStateName(new.state).value
    if state != prev:
        msg = state_message(prev, state, seen)
        kube.post_event(api(), wm, "Warning" if state == "waiting_for_gpu" else "Normal", EVENT_REASON[state], msg,
                        "whisperop-operator")
        log.info("model state changed", extra={
            "namespace": ns, "model": name, "from": prev, "to": state, "ready_replicas": seen["readyReplicas"],
            "replicas": new.replicas, "loaded_at": kube.ts(new.loadedAt) if new.loadedAt else None,
            "retry_in_secs": seen["retryInSecs"]})
        payload = lifecycle_payload(state, new)
        if payload:
            webhooks.send_model_event(ns, payload)
    old_src = next((c for c in old.conditions if c.type == SOURCE_CONDITION), None)
    if source_cond and source_cond[0] == "False" and (old_src.reason if old_src else None) != source_cond[1]:
        kube.post_event(api(), wm, "Warning", "ModelSourceUnavailable", source_cond[2], "whisperop-operator")
        log.warning("model source unavailable", extra={"namespace": ns, "model": name, "reason": source_cond[1],
                                                       "detail": source_cond[2]})
    if seen["unschedulableReplicas"] and not old.unschedulableReplicas:
        kube.post_event(api(), wm, "Warning", "GpuUnavailable",
                        f"{seen['unschedulableReplicas']} replica(s) Unschedulable: {seen['unschedulableMessage']}",
                        "whisperop-operator")
        log.warning("replicas unschedulable", extra={"namespace": ns, "model": name,
                                                     "unschedulable": seen["unschedulableReplicas"],
                                                     "detail": seen["unschedulableMessage"]})
