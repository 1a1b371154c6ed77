"""TranscriptionJob lifecycle on the operator side.

Level-triggered: every watch event of a job runs :func:`reconcile_job`, which
looks at the object as it is and does the one next step that is missing.
All decisions are read from the object (status, metadata) and every write is
guarded by the resourceVersion that was read, so a handler that runs twice
(operator restart, replayed event) changes nothing the second time. No kopf
change-detection handlers are used for jobs, so kopf writes no annotations on
them (fewer API writes per job; see docs/benchmarks-operator.md).

Steps, in order:
1. being deleted → delete the S3 objects the system created, drop the finalizer (gc.py);
2. no finalizer → add ``whisperop.io/cleanup`` and the ``whisperop.io/model`` label;
3. no phase → validate (the model exists, the language is one whisper knows) →
   ``Queued`` (and register its webhookUrl for model lifecycle webhooks) or
   ``Failed`` with condition ``Accepted=False``;
4. ``Queued`` with ``spec.cancel`` → ``Cancelled`` (a ``Running`` one is
   aborted by its worker; if the worker is gone, models.py cancels it);
5. terminal → completion webhook (webhooks.py), then TTL (gc.py).

Heartbeat loss (requeue with attempts+1, or Failed past the maximum) is
checked per model in models.py, where the pods are known; the queue as a
whole is read from the informers of informers.py (not kopf indices).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from whisperop.cluster import kube
from whisperop.cluster import webhooks as registry
from whisperop.core import crds
from whisperop.core.languages import WHISPER_LANGUAGES

from . import gc, metrics, webhooks
from .config import api, config

log = logging.getLogger("whisperop.operator.jobs")


def event(obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    kube.post_event(api(), obj, "Warning" if warning else "Normal", reason, message, "whisperop-operator")


def _set_phase(res: kube.Resources, obj: dict[str, Any], phase: str, reason: str, message: str,
               extra: dict[str, Any] | None = None, cond_type: str | None = None, cond_status: str = "True") -> bool:
    """Guarded status write of a phase change; False if the object changed meanwhile."""
    st = obj.get("status") or {}
    n = kube.now()
    conds = st.get("conditions") or []
    gen = obj["metadata"].get("generation")
    conds = crds.set_condition(conds, cond_type or phase, cond_status, reason, message, n, gen)
    body: dict[str, Any] = {"phase": phase, "conditions": conds, "observedGeneration": gen}
    if phase in crds.TERMINAL_PHASES:
        body["completionTime"] = kube.ts(n)
    if extra:
        body.update(extra)
    try:
        new = res.patch_status(obj["metadata"]["name"], body, rv=obj["metadata"]["resourceVersion"])
    except (kube.Conflict, kube.NotFound):
        return False
    obj["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"]
    metrics.TRANSITIONS.labels(phase, reason).inc()
    event(obj, reason, message, warning=phase == crds.Phase.Failed)
    return True


def validate(obj: dict[str, Any], models: kube.Resources) -> tuple[tuple[str, str] | None, dict[str, Any] | None]:
    """((reason, message) when the job cannot run, else None; the WhisperModel). The schema did the rest."""
    spec = obj.get("spec", {})
    model = spec.get("model") or crds.DEFAULT_MODEL
    try:
        wm = models.get(model)
    except kube.NotFound:
        return ("ModelNotFound", f"WhisperModel {model!r} does not exist in namespace {obj['metadata']['namespace']}"), None
    lang = spec.get("language")
    if lang and lang not in WHISPER_LANGUAGES:
        return ("UnknownLanguage", f"unknown language {lang!r}; omit it to auto-detect"), wm
    return None, wm


def reconcile_job(obj: dict[str, Any]) -> str:
    """One level-triggered step for one job; returns what it did (for logs and tests)."""
    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    res = kube.jobs(api(), ns)
    spec = obj.get("spec", {})
    status = obj.get("status") or {}
    phase = status.get("phase")

    if meta.get("deletionTimestamp"):
        if crds.FINALIZER in (meta.get("finalizers") or []):
            gc.cleanup_and_release(res, obj)
            return "cleaned"
        return "deleting"

    if crds.FINALIZER not in (meta.get("finalizers") or []):
        model = spec.get("model") or crds.DEFAULT_MODEL
        body = {"metadata": {"finalizers": [*(meta.get("finalizers") or []), crds.FINALIZER],
                             "labels": {crds.LABEL_MODEL: model}}}
        try:
            res.patch(name, body, rv=meta["resourceVersion"])
        except (kube.Conflict, kube.NotFound):
            pass
        return "finalizer"  # the patch produces a new event, which continues from here

    if not phase:
        problem, wm = validate(obj, kube.models(api(), ns))
        if problem:
            reason, message = problem
            _set_phase(res, obj, crds.Phase.Failed, reason, message, extra={"error": message},
                       cond_type="Accepted", cond_status="False")
            return "failed"
        if spec.get("cancel"):
            _set_phase(res, obj, crds.Phase.Cancelled, "CancelledWhileQueued", "cancelled before it ran")
            return "cancelled"
        if spec.get("webhookUrl"):
            try:
                registry.register(api(), ns, spec["webhookUrl"], limits=config().registry)
            except Exception:
                log.warning("could not register webhook URL", exc_info=True)
        if _set_phase(res, obj, crds.Phase.Queued, "Accepted", f"queued for WhisperModel {spec.get('model', 'default')}",
                      extra={"attempts": status.get("attempts", 0), "progress": 0}, cond_type="Accepted"):
            # the model is reconciled when the namespace's job informer sees this job Queued
            # (informers.py), whether or not it is at maxReplicas: every job is activity
            return "queued"
        return "conflict"

    if phase == crds.Phase.Queued and spec.get("cancel"):
        _set_phase(res, obj, crds.Phase.Cancelled, "CancelledWhileQueued", "cancelled before it ran")
        return "cancelled"

    if phase in crds.TERMINAL_PHASES:
        did = "terminal"
        if spec.get("webhookUrl") and (status.get("webhook") or {}).get("state") not in ("delivered", "failed"):
            webhooks.deliver_job(res, obj)
            did = "webhook"
        if gc.ttl_expired(obj):
            gc.expire(res, obj)
            did = "expired"
        return did
    return "noop"


@kopf.on.event(crds.GROUP, crds.VERSION, crds.JOB_PLURAL)
def on_job_event(*, event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    if event.get("type") == "DELETED":
        return
    try:
        reconcile_job(dict(body))
    except Exception:
        # on.event handlers are not retried by kopf: the periodic model reconcile
        # (models.py) and the next event of the job pick up where this stopped.
        log.exception("job reconcile failed", extra={"job": body.get("metadata", {}).get("name")})
