"""WhisperModel reconcile: the owned inference Deployment, lost workers, state.

Runs on every WhisperModel event, on a timer (``WHISPEROP_RECONCILE_SECS``)
and when a job of the model is queued (:func:`nudge`). Each run reads the
cluster (the namespace's job informer, the model's pods and Deployment) and
converges:

1. lost workers: a Running job whose worker pod is gone, or whose heartbeat
   is older than ``WHISPEROP_HEARTBEAT_TIMEOUT_SECS``, goes back to Queued with
   ``attempts+1`` (``Failed`` once ``WHISPEROP_MAX_ATTEMPTS`` is reached;
   ``Cancelled`` if cancel was asked) — a write guarded by the resourceVersion
   in which the stale worker/heartbeat was seen, so a worker that is merely
   late keeps its job if it writes first;
2. TTL sweep and pending clean-ups of the namespace's finished jobs (gc.py);
3. replicas from scaling.py, applied to the Deployment ``whisper-<model>``
   (created with an ownerReference, template re-rendered when the spec changes);
4. ``status.state`` from what the cluster shows: no replicas → unloaded;
   ≥ 1 pod Ready whose worker reports the model loaded → ready; a worker
   reporting a GPU-memory load failure, or all pods Pending/Unschedulable for
   GPUs → waiting_for_gpu (with the figures known); otherwise loading. An
   Unschedulable replica next to a ready one shows as condition
   ``GpuAvailable=False`` and a Warning Event; a PVC model source's claim is read and
   reported as condition ``ModelSourceAvailable``;
5. Events and lifecycle webhooks on each state change (the previous state is
   the one stored in status, so a restarted operator does not repeat them).

A per-model lock only serialises concurrent runs inside one process; all
state is in the cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import defaultdict
from datetime import timedelta
from typing import Any

import kopf

from whisperop.cluster import kube
from whisperop.core import crds, modelsource

from . import gc, informers, metrics, scaling, webhooks
from .config import api, config

log = logging.getLogger("whisperop.operator.models")

_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


# the inference image's user and cache (Dockerfile.inference: USER 65532:65532,
# WHISPEROP_MODEL_CACHE=/var/cache/whisperop/models); the pod must match it
RUN_AS_ID = 65532
CACHE_DIR = "/var/cache/whisperop"


def deployment_name(model: str) -> str:
    return f"whisper-{model}"[:63].rstrip("-")


def pod_labels(model: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "whisper-operator", crds.LABEL_COMPONENT: "inference", crds.LABEL_MODEL: model}


def render_deployment(wm: dict[str, Any]) -> dict[str, Any]:
    """The inference Deployment of a WhisperModel (raises InvalidModelSource for a spec without
    exactly one model source). Pod Security "restricted": non-root 65532, no privilege escalation,
    all capabilities dropped, seccomp RuntimeDefault, read-only root with emptyDirs for the
    model cache and /tmp; a PVC model source is mounted read-only."""
    meta, spec = wm["metadata"], wm["spec"]
    source = modelsource.resolve(spec)
    name = meta["name"]
    cfg = config()
    labels = pod_labels(name)
    res = spec.get("resources") or {}
    gpus = int(res.get("gpus", crds.DEFAULT_GPUS))
    limits = dict(res.get("limits") or {})
    requests = dict(res.get("requests") or {})
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        requests["nvidia.com/gpu"] = str(gpus)
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "WHISPEROP_MODEL_NAME", "value": name},
        {"name": "WHISPEROP_WORKER_PORT", "value": str(cfg.worker_port)},
        {"name": "WHISPEROP_HEARTBEAT_SECS", "value": str(cfg.worker_heartbeat_secs)},
        {"name": "WHISPEROP_MODEL_CACHE", "value": f"{CACHE_DIR}/models"},
        {"name": "WHISPEROP_TMP_DIR", "value": "/tmp"},
        {"name": "USE_GPU", "value": "true" if gpus else "false"},
    ]
    if source.local_path:  # PVC source: the worker loads this file as is (no download, no conversion)
        env.append({"name": modelsource.MODEL_PATH_ENV, "value": source.local_path})
    env += [{"name": k, "value": v} for k, v in sorted((spec.get("env") or {}).items())]
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "failureThreshold": 1}
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.get("image") or crds.DEFAULT_IMAGE,
        "command": ["whisperop", "worker"],
        "env": env,
        "envFrom": [{"secretRef": {"name": cfg.s3_secret, "optional": True}}],
        "ports": [{"name": "http", "containerPort": cfg.worker_port}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20, "failureThreshold": 3},
        "resources": {k: v for k, v in (("limits", limits), ("requests", requests)) if v},
        "securityContext": {
            "runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes: list[dict[str, Any]] = [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    if source.kind == "pvc":
        volumes.append({"name": modelsource.PVC_VOLUME,
                        "persistentVolumeClaim": {"claimName": source.claim_name, "readOnly": True}})
        container["volumeMounts"].append({"name": modelsource.PVC_VOLUME, "mountPath": modelsource.PVC_MOUNT_DIR,
                                          "readOnly": True})
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": cfg.worker_grace_secs,
        "volumes": volumes,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_ID, "runAsGroup": RUN_AS_ID,
                            "fsGroup": RUN_AS_ID, "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "enableServiceLinks": False,
    }
    if spec.get("runtimeClassName"):
        pod_spec["runtimeClassName"] = spec["runtimeClassName"]
    if spec.get("nodeSelector"):
        pod_spec["nodeSelector"] = spec["nodeSelector"]
    if spec.get("tolerations"):
        pod_spec["tolerations"] = spec["tolerations"]
    if spec.get("serviceAccountName"):
        pod_spec["serviceAccountName"] = spec["serviceAccountName"]
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {crds.ANN_TEMPLATE_HASH: digest},
            "ownerReferences": [{
                "apiVersion": crds.API_VERSION, "kind": crds.MODEL_KIND, "name": name, "uid": meta["uid"],
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": template,
        },
    }


def ensure_deployment(wm: dict[str, Any], replicas: int) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    apps = client.AppsV1Api(api())
    want = render_deployment(wm)
    ns, name = wm["metadata"]["namespace"], want["metadata"]["name"]
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


# ── pods → state ─────────────────────────────────────────────────────────────


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


def observe(wm: dict[str, Any], desired: int, pods: list[dict[str, Any]]) -> dict[str, Any]:
    """Model state and its figures from the pods (see the module doc)."""
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ready = [p for p in live if pod_ready(p) and load_state(p).get("state") == "ready"]
    unsched = [(p, m) for p in live if (m := pod_unschedulable(p))]
    waiting = [load_state(p) for p in live if load_state(p).get("state") == "waiting_for_gpu"]
    out: dict[str, Any] = {"readyReplicas": len(ready), "unschedulableReplicas": len(unsched),
                           "vramNeededMB": None, "vramFreeMB": None, "retryInSecs": None, "loadedAt": None,
                           "gpu": None}
    poll = int(wm["spec"].get("gpuPollIntervalSeconds", crds.DEFAULT_GPU_POLL_INTERVAL_SECS))
    if ready:
        out["state"] = "ready"
        times = sorted(s for p in ready if (s := load_state(p).get("loadedAt")))
        out["loadedAt"] = times[0] if times else (wm.get("status") or {}).get("loadedAt") or kube.ts()
        out["gpu"] = next((g for p in sorted(ready, key=lambda p: p["metadata"]["name"])
                           if (g := load_state(p).get("gpu"))), None)
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


# ── the reconcile ────────────────────────────────────────────────────────────


def _requeue_lost(ns: str, model: str, running: list[dict[str, Any]], pods: dict[str, dict[str, Any]]) -> int:
    cfg = config()
    res = kube.jobs(api(), ns)
    n = kube.now()
    moved = 0
    for s in running:
        hb = crds.parse_time(s.get("heartbeat") or s.get("startTime"))
        gone = s.get("worker") not in pods
        stale = hb is None or n - hb > timedelta(seconds=cfg.heartbeat_timeout_secs)
        if not (gone or stale):
            continue
        try:
            obj = res.get(s["name"])
        except kube.NotFound:
            continue
        st = obj.get("status") or {}
        if st.get("phase") != crds.Phase.Running or st.get("worker") != s.get("worker") or st.get("heartbeatTime") != s.get(
                "heartbeat"):
            continue  # changed since the informer saw it: the worker is alive, or someone acted already
        why = f"worker {s.get('worker')} " + ("is gone" if gone else f"stopped heartbeating ({cfg.heartbeat_timeout_secs:.0f} s)")
        attempts = int(st.get("attempts") or 0) + 1
        gen = obj["metadata"].get("generation")
        conds = st.get("conditions") or []
        if obj["spec"].get("cancel"):
            phase, reason, msg = crds.Phase.Cancelled, "CancelledWorkerLost", f"cancelled; {why}"
        elif attempts >= cfg.max_attempts:
            phase, reason, msg = crds.Phase.Failed, "WorkerLost", f"{why}; gave up after {attempts} attempts"
        else:
            phase, reason, msg = crds.Phase.Queued, "Requeued", f"{why}; requeued (attempt {attempts + 1} of {cfg.max_attempts})"
        body: dict[str, Any] = {
            "phase": phase, "attempts": attempts, "worker": None, "heartbeatTime": None,
            "conditions": crds.set_condition(conds, "Running", "False", reason, msg, n, gen),
        }
        if phase == crds.Phase.Queued:
            body.update(progress=0, chunk=0, startTime=None)
        else:
            body.update(completionTime=kube.ts(n), error=msg if phase == crds.Phase.Failed else None)
        try:
            res.patch_status(s["name"], body, rv=obj["metadata"]["resourceVersion"])
        except (kube.Conflict, kube.NotFound):
            continue
        moved += 1
        metrics.REQUEUES.inc()
        metrics.TRANSITIONS.labels(phase, reason).inc()
        kube.post_event(api(), obj, "Warning", reason, msg, "whisperop-operator")
    return moved


def reconcile(wm: dict[str, Any]) -> dict[str, Any]:
    ns, name = wm["metadata"]["namespace"], wm["metadata"]["name"]
    if wm["metadata"].get("deletionTimestamp"):
        return {}
    with _locks[(ns, name)], metrics.RECONCILE.time():
        try:
            source = modelsource.resolve(wm["spec"])
        except modelsource.InvalidModelSource as exc:
            _reject(wm, str(exc))  # nothing is rendered from a spec that names no usable model
            return {"invalid": str(exc)}
        # jobs first, pods second: a job claimed by a pod that the list below does
        # not show can only mean the pod is really gone (see _requeue_lost)
        everything = informers.summaries(ns)
        if everything is None:
            log.warning("job informer not synced yet; reconcile skipped", extra={"model": name})
            return {}
        jobs = [j for j in everything if j["model"] == name]
        pods = _pods(ns, name)
        by_name = {p["metadata"]["name"]: p for p in pods}
        queued = [j for j in jobs if j["phase"] == crds.Phase.Queued and not j["cancel"] and not j["deleting"]]
        running = [j for j in jobs if j["phase"] == crds.Phase.Running]
        if running:
            moved = _requeue_lost(ns, name, running, by_name)
            if moved:
                running = [j for j in running if j.get("worker") in by_name]
        gc.sweep(ns, [s for s in everything
                      if s["deleting"] or (s["phase"] in crds.TERMINAL_PHASES and gc.summary_expired(s))])

        status = wm.get("status") or {}
        spec = wm["spec"]
        now = kube.now()
        demand = scaling.parse_demand(wm["metadata"].get("annotations"))
        activity = scaling.last_activity(crds.parse_time(status.get("lastActivityTime")), demand,
                                         len(queued) + len(running), now,
                                         crds.parse_time(wm["metadata"].get("creationTimestamp")))
        current = _current_replicas(ns, name)
        arrivals = [t for t in (crds.parse_time(j.get("created")) for j in jobs) if t is not None]
        desired = scaling.desired_replicas(spec, len(queued), len(running), current if current is not None else 0,
                                           activity, demand, now, last_arrival=max(arrivals) if arrivals else None)
        dep = ensure_deployment(wm, desired)
        seen = observe(wm, desired, pods)
        _write_status(wm, seen, desired, len(queued), len(running), activity, _claim_condition(ns, source))
        for st in ("unloaded", "loading", "waiting_for_gpu", "ready"):
            metrics.STATE.labels(ns, name, st).set(1 if seen["state"] == st else 0)
        metrics.QUEUE_DEPTH.labels(ns, name).set(len(queued))
        metrics.RUNNING.labels(ns, name).set(len(running))
        metrics.REPLICAS.labels(ns, name).set(desired)
        metrics.READY.labels(ns, name).set(seen["readyReplicas"])
        return {"state": seen["state"], "desired": desired, "queued": len(queued), "running": len(running),
                "deployment": (dep or {}).get("metadata", {}).get("name")}


def _reject(wm: dict[str, Any], message: str) -> None:
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


def _accepted_message(spec: dict[str, Any]) -> str:
    src = modelsource.resolve(spec)
    return f"model from {src.uri}" if src.kind == "uri" else f"model from PVC {src.claim_name}: {src.path}"


SOURCE_CONDITION = "ModelSourceAvailable"


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


def _write_status(wm: dict[str, Any], seen: dict[str, Any], desired: int, queued: int, running: int,
                  activity: Any, source_cond: tuple[str, str, str] | None) -> None:
    meta = wm["metadata"]
    old = wm.get("status") or {}
    now = kube.now()
    gen = meta.get("generation")
    state = seen["state"]
    conds = old.get("conditions") or []
    conds = crds.set_condition(conds, "Ready", "True" if state == "ready" else "False",
                               {"ready": "Loaded", "loading": "Loading", "waiting_for_gpu": "WaitingForGpu",
                                "unloaded": "ScaledToZero"}[state],
                               f"{seen['readyReplicas']} of {desired} replicas ready", now, gen)
    if seen["unschedulableReplicas"]:
        conds = crds.set_condition(conds, "GpuAvailable", "False", "Unschedulable",
                                   f"{seen['unschedulableReplicas']} replica(s) cannot be scheduled: "
                                   f"{seen['unschedulableMessage']}", now, gen)
    else:
        conds = crds.set_condition(conds, "GpuAvailable", "True", "Scheduled", "all replicas scheduled", now, gen)
    conds = crds.set_condition(conds, "Accepted", "True", "ModelSourceValid", _accepted_message(wm["spec"]), now, gen)
    if source_cond:
        status_, reason, message = source_cond
        conds = crds.set_condition(conds, SOURCE_CONDITION, status_, reason, message, now, gen)
    else:  # a URI source (or a spec that moved off a PVC): no claim to report on
        conds = [c for c in conds if c.get("type") != SOURCE_CONDITION]
    act = crds.parse_time(old.get("lastActivityTime"))
    if activity is not None and (act is None or activity - act > timedelta(seconds=1)):
        act = activity
    new: dict[str, Any] = {
        "state": state, "replicas": desired, "readyReplicas": seen["readyReplicas"],
        "unschedulableReplicas": seen["unschedulableReplicas"], "queueDepth": queued, "runningJobs": running,
        "loadedAt": seen["loadedAt"] if state == "ready" else None,
        "vramNeededMB": seen["vramNeededMB"], "vramFreeMB": seen["vramFreeMB"], "retryInSecs": seen["retryInSecs"],
        "gpu": seen["gpu"],
        "lastActivityTime": kube.ts(act) if act else None,
        "conditions": conds, "observedGeneration": gen,
    }
    cmp_old = {k: old.get(k) for k in new if k != "conditions"}
    cmp_new = {k: v for k, v in new.items() if k != "conditions"}
    old_conds = {(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in old.get("conditions") or []}
    new_conds = {(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conds}
    if cmp_old == cmp_new and old_conds == new_conds:
        return
    res = kube.models(api(), meta["namespace"])
    try:
        res.patch_status(meta["name"], new, rv=meta["resourceVersion"])
    except kube.Conflict:
        return  # a newer version exists; its event runs this again
    except kube.NotFound:
        return
    prev = old.get("state") or "unloaded"
    if state != prev:
        reason = {"ready": "ModelReady", "loading": "ModelLoading", "waiting_for_gpu": "ModelWaitingForGpu",
                  "unloaded": "ModelUnloaded"}[state]
        msg = f"state {prev} → {state}"
        if state == "waiting_for_gpu":
            msg += f" (vram needed {seen['vramNeededMB']} MB, free {seen['vramFreeMB']} MB, retry in {seen['retryInSecs']} s)"
        kube.post_event(api(), wm, "Warning" if state == "waiting_for_gpu" else "Normal", reason, msg, "whisperop-operator")
        payload: dict[str, Any] | None = None
        if state == "ready":
            payload = {"type": "model_ready", "loaded_at": new["loadedAt"]}
        elif state == "unloaded":
            payload = {"type": "model_unloaded"}
        if payload:
            webhooks.send_model_event(meta["namespace"], payload)
    old_src = next((c for c in old.get("conditions") or [] if c.get("type") == SOURCE_CONDITION), None)
    if source_cond and source_cond[0] == "False" and (old_src or {}).get("reason") != source_cond[1]:
        kube.post_event(api(), wm, "Warning", "ModelSourceUnavailable", source_cond[2], "whisperop-operator")
    if seen["unschedulableReplicas"] and not old.get("unschedulableReplicas"):
        kube.post_event(api(), wm, "Warning", "GpuUnavailable",
                        f"{seen['unschedulableReplicas']} replica(s) Unschedulable: {seen['unschedulableMessage']}",
                        "whisperop-operator")


def nudge(ns: str, name: str) -> None:
    """Reconcile a model now (e.g. a job was just queued), if it exists."""
    try:
        wm = kube.models(api(), ns).get(name)
    except kube.NotFound:
        return
    try:
        reconcile(wm)
    except Exception:
        log.warning("nudge failed", exc_info=True)


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


def _fresh(body: Any) -> dict[str, Any]:
    """Timers get the body as of the last event; re-read so the guarded status write is current."""
    meta = body["metadata"]
    try:
        return kube.models(api(), meta["namespace"]).get(meta["name"])
    except kube.NotFound:
        return dict(body)
