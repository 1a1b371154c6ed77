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


def event(tj: crds.TranscriptionJob, reason: str, message: str, warning: bool = False) -> None:
    kube.post_event(api(), tj, "Warning" if warning else "Normal", reason, message, "whisperop-operator")


def _set_phase(res: kube.Resources, tj: crds.TranscriptionJob, phase: str, reason: str, message: str,
               extra: dict[str, Any] | None = None, cond_type: str | None = None, cond_status: str = "True") -> bool:
    """Guarded status write of a phase change; False if the object changed meanwhile."""
    n = kube.now()
    gen = tj.metadata.get("generation")
    conds = crds.set_condition(tj.status.conditions, cond_type or phase, cond_status, reason, message, n, gen)
    body: dict[str, Any] = {"phase": phase, "conditions": conds, "observedGeneration": gen}
    if phase in crds.TERMINAL_PHASES:
        body["completionTime"] = kube.ts(n)
    if extra:
        body.update(extra)
    try:
        new = res.patch_status(tj.name, body, rv=tj.resource_version)
    except (kube.Conflict, kube.NotFound):
        return False
    tj.metadata["resourceVersion"] = new["metadata"]["resourceVersion"]
    metrics.TRANSITIONS.labels(phase, reason).inc()
    event(tj, reason, message, warning=phase == crds.Phase.Failed)
    return True


def validate(tj: crds.TranscriptionJob, models: kube.Resources) -> tuple[str, str] | None:
    """(reason, message) when the job cannot run (its WhisperModel is missing, its language
    unknown), else None. The schema did the rest."""
    model, lang = tj.spec.model, tj.spec.language
    try:
        models.get(model)
    except kube.NotFound:
        return "ModelNotFound", f"WhisperModel {model!r} does not exist in namespace {tj.namespace}"
    if lang and lang not in WHISPER_LANGUAGES:
        return "UnknownLanguage", f"unknown language {lang!r}; omit it to auto-detect"
    return None


def reconcile_job(obj: dict[str, Any]) -> str:
    """One level-triggered step for one job; returns what it did (for logs and tests)."""
    tj = crds.as_job(obj)
    meta, spec, status = tj.metadata, tj.spec, tj.status
    res = kube.jobs(api(), tj.namespace)
    finalizers = meta.get("finalizers") or []

    if tj.deleting:
        if crds.FINALIZER in finalizers:
            gc.cleanup_and_release(res, tj)
            return "cleaned"
        return "deleting"

    if crds.FINALIZER not in finalizers:
        body = {"metadata": {"finalizers": [*finalizers, crds.FINALIZER], "labels": {crds.LABEL_MODEL: spec.model}}}
        try:
            res.patch(tj.name, body, rv=tj.resource_version)
        except (kube.Conflict, kube.NotFound):
            pass
        return "finalizer"  # the patch produces a new event, which continues from here

    if not status.phase:
        problem = validate(tj, kube.models(api(), tj.namespace))
        if problem:
            reason, message = problem
            _set_phase(res, tj, crds.Phase.Failed, reason, message, extra={"error": message},
                       cond_type="Accepted", cond_status="False")
            return "failed"
        if spec.cancel:
            _set_phase(res, tj, crds.Phase.Cancelled, "CancelledWhileQueued", "cancelled before it ran")
            return "cancelled"
        if spec.webhookUrl:
            try:
                registry.register(api(), tj.namespace, spec.webhookUrl, limits=config().registry)
            except Exception:
                log.warning("could not register webhook URL", exc_info=True)
        if _set_phase(res, tj, crds.Phase.Queued, "Accepted", f"queued for WhisperModel {spec.model}",
                      extra={"attempts": status.attempts, "progress": 0}, cond_type="Accepted"):
            # the model is reconciled when the namespace's job cache sees this job Queued
            # (informers.py), whether or not it is at maxReplicas: every job is activity
            return "queued"
        return "conflict"

    if tj.phase == crds.Phase.Queued and spec.cancel:
        _set_phase(res, tj, crds.Phase.Cancelled, "CancelledWhileQueued", "cancelled before it ran")
        return "cancelled"

    if tj.phase.terminal:
        did = "terminal"
        if spec.webhookUrl and (status.webhook is None or status.webhook.state == "pending"):
            webhooks.deliver_job(res, tj)
            did = "webhook"
        if gc.ttl_expired(tj):
            gc.expire(res, tj)
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
