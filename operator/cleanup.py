"""Uninstall clean-up: delete the whisperop resources of a namespace, let the
operator finalize them, and release what it cannot (``whisperop operator cleanup``).

Why this exists: TranscriptionJobs carry the ``whisperop.io/cleanup``
finalizer (the operator deletes their S3 objects first, gc.py) and
WhisperModels carry kopf's ``kopf.zalando.org/KopfFinalizerMarker`` (they have
timers). Only the operator removes them. ``helm uninstall`` deletes the
operator's Deployment together with everything else, so a job or model left
after that can never be deleted and its namespace stays ``Terminating``
forever (``helm uninstall --wait`` ends in ``context deadline exceeded``).

The chart therefore runs this as a ``pre-delete`` hook Job, while the operator
still runs:

1. delete the named leftover pods (the ``helm test`` pod, which the chart keeps
   for ``helm test --logs`` and which Helm never deletes on uninstall);
2. delete every TranscriptionJob, then every WhisperModel, that the selectors
   match (by default all of the namespace: the operator is namespaced, so all
   of them are this release's); models in the foreground, so a model is gone
   only once its inference Deployment and pods are — nothing of the release
   is still running when ``helm uninstall`` returns;
3. wait up to ``timeout`` seconds for them to disappear — a running operator
   removes its finalizers after its own clean-up (S3 objects of the jobs);
4. what is still there after that (no operator, or one that crash-loops) is
   released: only *our* two finalizers are removed, any other controller's
   finalizer is left alone, and each release is logged as a warning because
   that job's S3 objects were not deleted.

Every step is idempotent, so a retried hook (Job ``backoffLimit``) or a
second run is harmless. The operator itself never removes finalizers on
shutdown: a restart or rolling update must not skip the S3 clean-up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from whisperop.cluster import kube
from whisperop.core import crds

log = logging.getLogger("whisperop.operator.cleanup")

KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
OUR_FINALIZERS = frozenset({crds.FINALIZER, KOPF_FINALIZER})
# the garbage collector's own: an object carrying one goes once its dependents are gone
GC_FINALIZERS = frozenset({"foregroundDeletion", "orphan"})
# after the release, how long the garbage collector may still take for a model's
# Deployment and pods (on the test control plane it took 8-24 s); bounded so that
# timeout + this + the pod's start stay inside Helm's default 5 min uninstall timeout
GC_WAIT_SECS = 60.0


@dataclass
class Plan:
    """What to clean up in one namespace."""

    namespace: str
    job_selector: str | None = None
    model_selector: str | None = None
    timeout: float = 120.0
    poll: float = 1.0
    pods: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    deleted: int = 0  # objects whose deletion this run requested
    finalized: int = 0  # gone within the timeout (the operator finalized them)
    released: list[str] = field(default_factory=list)  # "kind/name" whose finalizers we removed
    remaining: list[str] = field(default_factory=list)  # still there at the end (a foreign finalizer)


def _gc_pending(rest: list[tuple[str, kube.Resources, dict[str, Any]]]) -> bool:
    return any(GC_FINALIZERS & set(o["metadata"].get("finalizers") or []) for _, _, o in rest)


def _kinds(api: Any, plan: Plan) -> list[tuple[str, kube.Resources, str | None]]:
    """Jobs first: their clean-up needs the operator, a model's deletion stops its workers."""
    return [(crds.JOB_KIND, kube.jobs(api, plan.namespace), plan.job_selector),
            (crds.MODEL_KIND, kube.models(api, plan.namespace), plan.model_selector)]


def _names(res: kube.Resources, selector: str | None) -> list[str]:
    return [o["metadata"]["name"] for o in res.list(label_selector=selector).get("items", [])]


def delete_pods(api: Any, namespace: str, names: list[str]) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    for name in names:
        try:
            core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
            log.info("pod deleted", extra={"pod": name})
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise


def delete_all(api: Any, plan: Plan) -> dict[str, list[str]]:
    """Request the deletion of every matching object; returns kind → names."""
    found: dict[str, list[str]] = {}
    for kind, res, selector in _kinds(api, plan):
        found[kind] = _names(res, selector)
        for name in found[kind]:
            res.delete(name, propagation="Foreground" if kind == crds.MODEL_KIND else None)
        log.info("deletion requested", extra={"kind": kind, "count": len(found[kind])})
    return found


def left(api: Any, plan: Plan, found: dict[str, list[str]]) -> list[tuple[str, kube.Resources, dict[str, Any]]]:
    """Those of ``found`` that still exist: one list per kind (a GET per object and poll would
    be thousands of requests a second with thousands of jobs)."""
    out = []
    for kind, res, selector in _kinds(api, plan):
        wanted = set(found.get(kind, []))
        if wanted:
            out += [(kind, res, o) for o in res.list(label_selector=selector).get("items", [])
                    if o["metadata"]["name"] in wanted]
    return out


def wait_gone(api: Any, plan: Plan, found: dict[str, list[str]], timeout: float,
              gc_only: bool = False) -> list[tuple[str, kube.Resources, dict[str, Any]]]:
    """Poll until nothing of ``found`` is left or ``timeout`` seconds passed; returns what is left.
    ``gc_only``: stop as soon as no object left waits for the garbage collector."""
    deadline = time.monotonic() + timeout
    while True:
        rest = left(api, plan, found)
        if not rest or time.monotonic() >= deadline or (gc_only and not _gc_pending(rest)):
            return rest
        time.sleep(plan.poll)


def release(res: kube.Resources, obj: dict[str, Any]) -> bool:
    """Remove our finalizers (only ours) from ``obj``; retried on a conflicting write.
    Returns False when there was nothing of ours to remove."""
    name = obj["metadata"]["name"]
    for _ in range(10):
        fins = obj["metadata"].get("finalizers") or []
        keep = [f for f in fins if f not in OUR_FINALIZERS]
        if keep == fins:
            return False
        try:
            res.patch(name, {"metadata": {"finalizers": keep}}, rv=obj["metadata"]["resourceVersion"])
            return True
        except kube.NotFound:
            return False
        except kube.Conflict:
            try:
                obj = res.get(name)
            except kube.NotFound:
                return False
    raise RuntimeError(f"{name}: finalizers still changing after 10 attempts")


def run(api: Any, plan: Plan) -> Outcome:
    t0 = time.monotonic()
    out = Outcome()
    delete_pods(api, plan.namespace, plan.pods)
    found = delete_all(api, plan)
    out.deleted = sum(len(v) for v in found.values())
    rest = wait_gone(api, plan, found, plan.timeout)
    out.finalized = out.deleted - len(rest)
    for kind, res, obj in rest:
        if release(res, obj):
            out.released.append(f"{kind}/{obj['metadata']['name']}")
            log.warning("finalizer removed without the operator's clean-up (is the operator running?)"
                        + (" — the job's S3 objects were not deleted" if kind == crds.JOB_KIND else ""),
                        extra={"object": f"{kind}/{obj['metadata']['name']}", "waited_secs": plan.timeout})
    if rest:  # released objects go at once, or once the garbage collector removed a model's pods
        out.remaining = [f"{k}/{o['metadata']['name']}"
                         for k, _, o in wait_gone(api, plan, found, GC_WAIT_SECS, gc_only=True)]
    for name in out.remaining:
        log.warning("still present (a finalizer that is not whisperop's)", extra={"object": name})
    log.info("clean-up finished", extra={"deleted": out.deleted, "finalized": out.finalized,
                                         "released": len(out.released), "remaining": len(out.remaining),
                                         "secs": round(time.monotonic() - t0, 2)})
    return out
