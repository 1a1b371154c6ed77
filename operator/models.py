"""WhisperModel reconcile: the owned inference Deployment, lost workers, state.

Runs on every WhisperModel event, on a timer (``WHISPEROP_RECONCILE_SECS``,
the safety net) and whenever something the model depends on changes
(:mod:`kick`): one of its inference pods changes readiness or load state
(a kopf watch on the pods), one of its jobs is queued or reaches a terminal
phase (the namespace's job informer), or its idle timeout runs out. Each run
reads the cluster (the job informer, the model's pods and Deployment) and
converges:

1. lost workers: a Running job whose worker pod is gone, or whose heartbeat
   is older than ``WHISPEROP_HEARTBEAT_TIMEOUT_SECS``, goes back to Queued with
   ``attempts+1`` (``Failed`` once ``WHISPEROP_MAX_ATTEMPTS`` is reached;
   ``Cancelled`` if cancel was asked) — a write guarded by the resourceVersion
   in which the stale worker/heartbeat was seen, so a worker that is merely
   late keeps its job if it writes first;
2. TTL sweep and pending clean-ups of the namespace's finished jobs (gc.py);
3. replicas from scaling.py (idle counted from the later of ready and the last
   activity), applied to the Deployment ``whisper-<model>`` (render.py;
   created with an ownerReference, template re-rendered when the spec changes);
4. ``status.state`` from what the pods show (observe.py);
5. status, Events and lifecycle webhooks on each state change (status.py).

Every scaling decision that changes the Deployment is one structured log
line with its reason and the figures that decided it.

Why events and not only ticks: with the 5 s timer alone, a ready replica was
seen at the next tick (worker ``loadedAt`` 07:33:54.008, state flipped at the
07:33:55.05 tick; every ModelReady landed on a tick), up to 5 s added to every
scale from zero; and a job that finished between two ticks was not seen as
activity (the Deployment went to zero 16.6 s after the last job with
``idleTimeoutSeconds: 20``).

A per-model lock only serialises concurrent runs inside one process; all
state is in the cluster.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import kopf

from whisperop.cluster import kube
from whisperop.core import crds, modelsource

from . import gc, informers, metrics, scaling, status
from .config import api, config
from .kick import Kicker
from .observe import claim_condition, load_state, observe, pod_ready, pod_unschedulable, ready_pods, ready_since
from .render import CACHE_DIR, RUN_AS_ID, deployment_name, pod_labels, render_deployment

__all__ = ["CACHE_DIR", "RUN_AS_ID", "claim_condition", "deployment_name", "load_state", "observe", "pod_labels",
           "pod_ready", "pod_unschedulable", "ready_pods", "ready_since", "reconcile", "render_deployment"]

log = logging.getLogger("whisperop.operator.models")

_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def ensure_deployment(wm: crds.WhisperModel, replicas: int) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    apps = client.AppsV1Api(api())
    want = render_deployment(wm)
    ns, name = wm.namespace, want["metadata"]["name"]
    try:
        have = apps.read_namespaced_deployment(name, ns).to_dict()
    except ApiException as exc:
        if exc.status != 404:
            raise
        want["spec"]["replicas"] = replicas
        created = apps.create_namespaced_deployment(ns, want)
        kube.post_event(api(), wm, "Normal", "DeploymentCreated", f"created Deployment {name} with {replicas} replicas",
                        "whisperop-operator")
        return created.to_dict()
    patch: dict[str, Any] = {}
    if (have["metadata"].get("annotations") or {}).get(crds.ANN_TEMPLATE_HASH) != want["metadata"]["annotations"][
            crds.ANN_TEMPLATE_HASH]:
        patch = {"metadata": {"annotations": want["metadata"]["annotations"]}, "spec": {"template": want["spec"]["template"]}}
    if (have["spec"].get("replicas") or 0) != replicas:
        patch.setdefault("spec", {})["replicas"] = replicas
    if patch:
        have = apps.patch_namespaced_deployment(name, ns, patch).to_dict()
        if "replicas" in patch.get("spec", {}):
            kube.post_event(api(), wm, "Normal", "Scaled", f"Deployment {name} scaled to {replicas}", "whisperop-operator")
    return have



# ── the reconcile ────────────────────────────────────────────────────────────


def _requeue_lost(ns: str, model: str, running: list[crds.JobSummary], pods: dict[str, dict[str, Any]]) -> int:
    cfg = config()
    res = kube.jobs(api(), ns)
    n = kube.now()
    moved = 0
    for s in running:
        hb = s.heartbeat or s.start_time
        gone = s.worker not in pods
        stale = hb is None or n - hb > timedelta(seconds=cfg.heartbeat_timeout_secs)
        if not (gone or stale):
            continue
        try:
            obj = res.get(s.name)
        except kube.NotFound:
            continue
        tj = crds.as_job(obj)
        st = tj.status
        if st.phase != crds.Phase.Running or st.worker != s.worker or st.heartbeatTime != s.heartbeat:
            continue  # changed since the cache saw it: the worker is alive, or someone acted already
        why = f"worker {s.worker} " + ("is gone" if gone else f"stopped heartbeating ({cfg.heartbeat_timeout_secs:.0f} s)")
        attempts = st.attempts + 1
        if tj.spec.cancel:
            phase, reason, msg = crds.Phase.Cancelled, "CancelledWorkerLost", f"cancelled; {why}"
        elif attempts >= cfg.max_attempts:
            phase, reason, msg = crds.Phase.Failed, "WorkerLost", f"{why}; gave up after {attempts} attempts"
        else:
            phase, reason, msg = crds.Phase.Queued, "Requeued", f"{why}; requeued (attempt {attempts + 1} of {cfg.max_attempts})"
        body: dict[str, Any] = {
            "phase": phase, "attempts": attempts, "worker": None, "heartbeatTime": None,
            "conditions": crds.set_condition(st.conditions, "Running", "False", reason, msg, n, tj.metadata.get("generation")),
        }
        if phase == crds.Phase.Queued:
            body.update(progress=0, chunk=0, startTime=None)
        else:
            body.update(completionTime=kube.ts(n), error=msg if phase == crds.Phase.Failed else None)
        try:
            res.patch_status(s.name, body, rv=tj.resource_version)
        except (kube.Conflict, kube.NotFound):
            continue
        moved += 1
        metrics.REQUEUES.inc()
        metrics.TRANSITIONS.labels(phase, reason).inc()
        kube.post_event(api(), tj, "Warning", reason, msg, "whisperop-operator")
    return moved


def _activity_times(jobs: list[crds.JobSummary]) -> list[datetime]:
    """Arrival and completion times of the model's jobs (any terminal phase counts as activity)."""
    return [t for j in jobs for t in (j.created, j.completion_time) if t is not None]


def reconcile(wm: dict[str, Any]) -> dict[str, Any]:
    ns, name = wm["metadata"]["namespace"], wm["metadata"]["name"]
    if wm["metadata"].get("deletionTimestamp"):
        return {}
    with _locks[(ns, name)], metrics.RECONCILE.time():
        try:
            model = crds.as_model(wm)
        except modelsource.InvalidModelSource as exc:
            status.reject(wm, str(exc))  # nothing is rendered from a spec that names no usable model
            return {"invalid": str(exc)}
        source = modelsource.resolve(model.spec)
        # jobs first, pods second: a job claimed by a pod that the list below does
        # not show can only mean the pod is really gone (see _requeue_lost)
        everything = informers.summaries(ns)
        if everything is None:
            log.warning("job informer not synced yet; reconcile skipped", extra={"namespace": ns, "model": name})
            return {}
        jobs = [j for j in everything if j.model == name]
        pods = _pods(ns, name)
        by_name = {p["metadata"]["name"]: p for p in pods}
        queued = [j for j in jobs if j.phase == crds.Phase.Queued and not j.cancel and not j.deleting]
        running = [j for j in jobs if j.phase == crds.Phase.Running]
        if running:
            moved = _requeue_lost(ns, name, running, by_name)
            if moved:
                running = [j for j in running if j.worker in by_name]
        gc.sweep(ns, [s for s in everything if s.deleting or (s.phase in crds.TERMINAL_PHASES and gc.summary_expired(s))])

        spec = model.spec
        now = kube.now()
        demand = scaling.parse_demand(model.annotations)
        since = ready_since(pods, now)
        # becoming ready is stored as activity too: status.lastActivityTime is then where the idle
        # clock starts, and a load request older than it has been served (no reload after the timeout)
        activity = scaling.last_activity(model.status.lastActivityTime, demand,
                                         len(queued) + len(running), now,
                                         crds.parse_time(model.metadata.get("creationTimestamp")),
                                         jobs_seen=_activity_times(jobs) + ([since] if since else []))
        current = _current_replicas(ns, name)
        arrivals = [j.created for j in jobs if j.created is not None]
        decision = scaling.decide(spec, len(queued), len(running), current if current is not None else 0,
                                  activity, demand, now, since, last_arrival=max(arrivals) if arrivals else None)
        desired = decision.replicas
        if current != desired:
            _log_scale(ns, name, current, decision, len(queued), len(running), activity, since, demand, spec, now)
        dep = ensure_deployment(model, desired)
        seen = observe(model, desired, pods)
        status.write(model, seen, desired, len(queued), len(running), activity, _claim_condition(ns, source))
        _schedule_idle_check(ns, name, spec, decision, activity, since, now)
        _export(ns, name, seen, desired, len(queued), len(running))
        return {"state": seen["state"], "desired": desired, "queued": len(queued), "running": len(running),
                "deployment": (dep or {}).get("metadata", {}).get("name"), "reason": decision.reason}


def _export(ns: str, name: str, seen: dict[str, Any], desired: int, queued: int, running: int) -> None:
    """The model's gauges on ``/metrics`` (metrics.py)."""
    for s in ("unloaded", "loading", "waiting_for_gpu", "ready"):
        metrics.STATE.labels(ns, name, s).set(1 if seen["state"] == s else 0)
    metrics.QUEUE_DEPTH.labels(ns, name).set(queued)
    metrics.RUNNING.labels(ns, name).set(running)
    metrics.REPLICAS.labels(ns, name).set(desired)
    metrics.READY.labels(ns, name).set(seen["readyReplicas"])


def _log_scale(ns: str, name: str, current: int | None, decision: scaling.Decision, queued: int, running: int,
               activity: datetime | None, since: datetime | None, demand: scaling.Demand | None,
               spec: crds.WhisperModelSpec, now: datetime) -> None:
    start = scaling.idle_since(activity, since)
    msg = "scale up" if decision.replicas > (current or 0) else "scale down" if current is not None else "deployment created"
    log.info(msg, extra={
        "namespace": ns, "model": name, "from": current, "to": decision.replicas, "reason": decision.reason,
        "queued": queued, "running": running, "idle_secs": round((now - start).total_seconds(), 3) if start else None,
        "idle_timeout_secs": spec.idleTimeoutSeconds,
        "last_activity": kube.ts(activity) if activity else None, "ready_since": kube.ts(since) if since else None,
        "demand": f"{demand.action}@{kube.ts(demand.at)}" if demand else None,
        "min_replicas": spec.minReplicas, "max_replicas": spec.maxReplicas})


def _schedule_idle_check(ns: str, name: str, spec: crds.WhisperModelSpec, decision: scaling.Decision,
                         activity: datetime | None, since: datetime | None, now: datetime) -> None:
    """Kick the model when its idle timeout runs out, so the scale-down does not wait for a tick."""
    if decision.reason != "within_idle":
        return
    deadline = scaling.idle_deadline(spec, activity, since)
    if deadline is not None:
        KICKS.kick(ns, name, delay=(deadline - now).total_seconds() + 0.05)


def _claim_condition(ns: str, source: modelsource.ModelSource) -> tuple[str, str, str] | None:
    """Read the claim of a PVC source (None for a URI source: the worker checks those)."""
    if source.kind != "pvc" or not source.claim_name:
        return None
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        resp = client.CoreV1Api(api()).read_namespaced_persistent_volume_claim(source.claim_name, ns,
                                                                              _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return claim_condition(source.claim_name, ns, None)
        if exc.status == 403:  # an install whose operator Role predates `persistentvolumeclaims get`
            return ("Unknown", "ClaimNotReadable", f"the operator may not read PersistentVolumeClaim "
                    f"{source.claim_name} (its Role needs persistentvolumeclaims get)")
        raise
    return claim_condition(source.claim_name, ns, json.loads(resp.data))


def _pods(ns: str, name: str) -> list[dict[str, Any]]:
    from kubernetes import client

    resp = client.CoreV1Api(api()).list_namespaced_pod(
        ns, label_selector=f"{crds.LABEL_MODEL}={name},{crds.LABEL_COMPONENT}=inference", _preload_content=False)
    return json.loads(resp.data)["items"]


def _current_replicas(ns: str, name: str) -> int | None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        return client.AppsV1Api(api()).read_namespaced_deployment(deployment_name(name), ns).spec.replicas or 0
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _run_kicked(ns: str, name: str) -> None:
    try:
        wm = kube.models(api(), ns).get(name)
    except kube.NotFound:
        return
    reconcile(wm)


KICKS = Kicker(_run_kicked)


def nudge(ns: str, name: str) -> None:
    """Reconcile a model soon (coalesced, never blocking the caller; see kick.py)."""
    KICKS.kick(ns, name)


@kopf.timer(crds.GROUP, crds.VERSION, crds.MODEL_PLURAL, interval=config().reconcile_secs, sharp=True)
def model_timer(body: Any, **_: Any) -> None:
    reconcile(_fresh(body))


@kopf.on.event(crds.GROUP, crds.VERSION, crds.MODEL_PLURAL)
def model_event(*, event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    if event.get("type") == "DELETED":
        return
    try:
        reconcile(dict(body))
    except Exception:
        log.exception("model reconcile failed")


_pod_seen: dict[tuple[str, str], tuple[Any, ...]] = {}


def pod_fingerprint(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What of an inference pod the model's state depends on (other changes do not kick)."""
    st = pod.get("status") or {}
    return (st.get("phase"), pod_ready(pod), json.dumps(load_state(pod), sort_keys=True),
            bool(pod["metadata"].get("deletionTimestamp")), pod_unschedulable(pod))


@kopf.on.event("", "v1", "pods", labels={crds.LABEL_COMPONENT: "inference", crds.LABEL_MODEL: kopf.PRESENT})
def inference_pod_event(*, event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """A model's pod changed readiness, load state, phase or scheduling: reconcile that model now
    (``ready`` is then reported ~0.1 s after the worker's load-state write, not at the next tick)."""
    meta = body.get("metadata") or {}
    ns, pod, model = meta.get("namespace"), meta.get("name"), (meta.get("labels") or {}).get(crds.LABEL_MODEL)
    if not (ns and pod and model):
        return
    key = (ns, pod)
    if event.get("type") == "DELETED":
        _pod_seen.pop(key, None)
        nudge(ns, model)
        return
    fp = pod_fingerprint(dict(body))
    if _pod_seen.get(key) != fp:
        _pod_seen[key] = fp
        nudge(ns, model)


def _fresh(body: Any) -> dict[str, Any]:
    """Timers get the body as of the last event; re-read so the guarded status write is current."""
    meta = body["metadata"]
    try:
        return kube.models(api(), meta["namespace"]).get(meta["name"])
    except kube.NotFound:
        return dict(body)
