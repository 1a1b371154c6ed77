"""Thin, shared access to the whisperop custom resources (operator, worker, facade).

Everything that must be atomic is a single API-server write guarded by
``metadata.resourceVersion`` (optimistic concurrency): a JSON merge patch
that carries the resourceVersion the writer last saw is applied only if the
object is still at that version, else the server answers 409 Conflict. The
claim protocol, the worker's progress/result writes and the operator's
requeues all use :meth:`Resources.patch_status` with ``rv=``; that is what
makes "two workers never both win" and "a job never completes twice" hold
without any lock or leader.
"""

from __future__ import annotations

import builtins
import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timezone
from typing import Any

from whisperop.core import crds
from whisperop.core.settings import KubeSettings

log = logging.getLogger("whisperop.cluster")
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def pod_namespace(settings: KubeSettings, explicit: str | None = None) -> str | None:
    """``explicit``, else ``POD_NAMESPACE``, else the service account's namespace file in a pod."""
    if explicit or settings.pod_namespace:
        return explicit or settings.pod_namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or None
    except OSError:
        return None


class Conflict(Exception):
    """409: the object changed since the resourceVersion the writer saw."""


class NotFound(Exception):
    """404."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def ts(dt: datetime | None = None) -> str:
    return crds.rfc3339(dt or now())


def api_client(settings: KubeSettings | None = None) -> Any:
    """An ApiClient: in-cluster config in a pod (``KUBERNETES_SERVICE_HOST`` and a service-account
    token), else the kubeconfig (``KUBECONFIG``, else ``~/.kube/config``). The values come from the
    deployable's settings object; the client library's own default is read at its import, so
    the file is always passed explicitly."""
    from kubernetes import client, config

    kube = settings if settings is not None else KubeSettings()
    if kube.service_host and os.path.exists(SERVICE_ACCOUNT_TOKEN):
        config.load_incluster_config()
        return client.ApiClient()
    cfg = client.Configuration()
    config.load_kube_config(config_file=kube.kubeconfig or os.path.expanduser("~/.kube/config"), client_configuration=cfg)
    cfg.connection_pool_maxsize = 16
    return client.ApiClient(cfg)


def _translate(exc: Exception) -> Exception:
    status = getattr(exc, "status", None)
    if status == 409:
        return Conflict(str(getattr(exc, "reason", exc)))
    if status == 404:
        return NotFound(str(getattr(exc, "reason", exc)))
    return exc


class Resources:
    """CRUD on one custom resource kind in one namespace, as plain dicts."""

    def __init__(self, api: Any, namespace: str, plural: str) -> None:
        from kubernetes import client

        self.api = api
        self.co = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.plural = plural

    def _args(self) -> tuple[str, str, str, str]:
        return crds.GROUP, crds.VERSION, self.namespace, self.plural

    def get(self, name: str) -> dict[str, Any]:
        try:
            return self.co.get_namespaced_custom_object(*self._args(), name)
        except Exception as exc:
            raise _translate(exc) from exc

    def list(self, field_selector: str | None = None, label_selector: str | None = None, limit: int | None = None,
             _continue: str | None = None) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if field_selector:
            kw["field_selector"] = field_selector
        if label_selector:
            kw["label_selector"] = label_selector
        if limit:
            kw["limit"] = limit
        if _continue:
            kw["_continue"] = _continue
        return self.co.list_namespaced_custom_object(*self._args(), **kw)

    def list_all(self, field_selector: str | None = None, page: int = 500) -> tuple[builtins.list[dict[str, Any]], str]:
        """Every object (paginated) and the list's resourceVersion (to start a watch from).
        (``builtins.list``: inside this class ``list`` names the method above.)"""
        items: builtins.list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            resp = self.list(field_selector=field_selector, limit=page, _continue=cont)
            items.extend(resp.get("items", []))
            cont = resp.get("metadata", {}).get("continue")
            if not cont:
                return items, resp.get("metadata", {}).get("resourceVersion", "")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.co.create_namespaced_custom_object(*self._args(), body)
        except Exception as exc:
            raise _translate(exc) from exc

    def patch(self, name: str, body: dict[str, Any], rv: str | None = None) -> dict[str, Any]:
        """Merge-patch metadata/spec; with ``rv`` only if unchanged since (409 → :class:`Conflict`)."""
        if rv is not None:
            body = {**body, "metadata": {**body.get("metadata", {}), "resourceVersion": rv}}
        try:
            return self.co.patch_namespaced_custom_object(*self._args(), name, body)
        except Exception as exc:
            raise _translate(exc) from exc

    def patch_status(self, name: str, status: dict[str, Any], rv: str | None = None) -> dict[str, Any]:
        """Merge-patch ``status`` (None values delete fields); guarded by ``rv`` when given."""
        body: dict[str, Any] = {"status": status}
        if rv is not None:
            body["metadata"] = {"resourceVersion": rv}
        try:
            return self.co.patch_namespaced_custom_object_status(*self._args(), name, body)
        except Exception as exc:
            raise _translate(exc) from exc

    def delete(self, name: str, propagation: str | None = None) -> None:
        """Delete (404 is success); ``propagation="Foreground"``: the object goes only after its
        dependents (owner references) are gone."""
        kw = {"propagation_policy": propagation} if propagation else {}
        try:
            self.co.delete_namespaced_custom_object(*self._args(), name, **kw)
        except Exception as exc:
            exc2 = _translate(exc)
            if not isinstance(exc2, NotFound):
                raise exc2 from exc


def jobs(api: Any, namespace: str) -> Resources:
    return Resources(api, namespace, crds.JOB_PLURAL)


def models(api: Any, namespace: str) -> Resources:
    return Resources(api, namespace, crds.MODEL_PLURAL)


# ── queue order and the claim protocol ──────────────────────────────────────


def queue_key(job: crds.TranscriptionJob) -> tuple[int, str, str]:
    """Queued jobs run by priority (higher first), then submission time (microseconds
    when the facade created the job, else creationTimestamp), then name."""
    return -job.spec.priority, crds.submission_order(job), job.name


def claim(res: Resources, job: crds.TranscriptionJob, worker: str) -> crds.TranscriptionJob | None:
    """Try to move ``job`` Queued → Running for ``worker``; guarded by the resourceVersion
    the caller saw. Returns the claimed job, or None when someone else changed it first."""
    t = ts()
    status = {
        "phase": crds.Phase.Running.value,
        "worker": worker,
        "heartbeatTime": t,
        "startTime": t,
        "progress": 0,
        "chunk": 0,
        "error": None,
        "conditions": crds.set_condition(job.status.conditions, "Running", "True", "Claimed",
                                         f"claimed by {worker}", now(), job.metadata.get("generation")),
    }
    try:
        return crds.as_job(res.patch_status(job.name, status, rv=job.resource_version))
    except (Conflict, NotFound):
        return None


# ── events ───────────────────────────────────────────────────────────────────


def post_event(api: Any, obj: "dict[str, Any] | crds.TranscriptionJob | crds.WhisperModel", type_: str, reason: str,
               message: str, component: str) -> None:
    """A core/v1 Event about ``obj`` (best effort: a failed Event never fails the caller)."""
    from kubernetes import client

    if not isinstance(obj, dict):
        obj = obj.dump()
    meta = obj.get("metadata", {})
    ns = meta.get("namespace") or "default"
    t = now()
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"{meta.get('name', 'x')[:200]}.{uuid.uuid4().hex[:12]}", namespace=ns),
        involved_object=client.V1ObjectReference(
            api_version=obj.get("apiVersion"), kind=obj.get("kind"), name=meta.get("name"), namespace=ns,
            uid=meta.get("uid"), resource_version=meta.get("resourceVersion"),
        ),
        reason=reason, message=message[:1024], type=type_, first_timestamp=t, last_timestamp=t, count=1,
        source=client.V1EventSource(component=component, host=socket.gethostname()),
        reporting_component=f"whisperop.io/{component}", reporting_instance=socket.gethostname()[:128],
    )
    try:
        client.CoreV1Api(api).create_namespaced_event(ns, ev)
    except Exception:
        log.debug("event not posted", exc_info=True)


class Once:
    """Run a callable at most once per key among threads (no persistence)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[Any] = set()

    def first(self, key: Any) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True
