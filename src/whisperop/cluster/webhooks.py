"""The lifecycle-webhook registry of cluster mode, kept in the cluster (delivery is
:mod:`whisperop.core.webhooks`, the one sender of both modes; the operator sends).

Registry: one ConfigMap per namespace, ``whisperop-webhooks``, whose data maps
``sha256(url)[:16]`` → ``{"url", "exp", "pending"}`` (JSON; a bare URL from
older versions is still read). Entries expire and the registry is bounded
(:class:`whisperop.core.settings.WebhookRegistrySettings`). Registering is a JSON merge patch adding one key,
so concurrent registrations from many facade replicas and the operator never
overwrite each other, and nothing lives in a process's memory. Every URL ever
registered (by a job's ``webhookUrl`` or by the facade) receives the model
lifecycle payloads ``{"type": "model_ready", "loaded_at"}`` and
``{"type": "model_unloaded"}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from whisperop.core.crds import WEBHOOK_CONFIGMAP
from whisperop.core.settings import WebhookRegistrySettings

log = logging.getLogger("whisperop.webhooks")


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _entry(value: str) -> tuple[str, float | None, bool]:
    """(url, expiry as Unix time or None, pending) of one registry value: JSON since the
    registry is bounded, a bare URL before (kept until re-registered or unregistered)."""
    if value.startswith("{"):
        try:
            doc = json.loads(value)
            return str(doc["url"]), float(doc["exp"]), bool(doc.get("pending"))
        except (ValueError, KeyError, TypeError):
            return "", 0.0, False
    return value, None, False


def _read(core: Any, namespace: str) -> dict[str, str] | None:
    from kubernetes.client.rest import ApiException

    try:
        return dict(core.read_namespaced_config_map(WEBHOOK_CONFIGMAP, namespace).data or {})
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def register(api: Any, namespace: str, url: str, pending: bool = False,
             limits: WebhookRegistrySettings | None = None) -> bool:
    """Add ``url`` to the namespace's registry (idempotent, safe under concurrency), with an expiry;
    drops expired entries on the way. The size bounds are checked on a read just before the
    patch, so concurrent replicas can overshoot them by a few entries, never grow them without end."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    lim = limits or WebhookRegistrySettings()
    core = client.CoreV1Api(api)
    now = time.time()
    data = _read(core, namespace) or {}
    entries = {k: _entry(v) for k, v in data.items()}
    patch: dict[str, str | None] = {k: None for k, (_, exp, _) in entries.items() if exp is not None and exp <= now}
    live = {k: e for k, e in entries.items() if k not in patch}
    key = url_key(url)
    if key in live and live[key][2] is False and pending:
        return True  # a job's registration outlives a rejected submission's
    if key not in live:
        pendings = sum(1 for e in live.values() if e[2])
        if pending and (pendings >= lim.max_pending or len(live) >= lim.max_entries):
            log.warning("webhook registry: URL of a rejected submission not registered (full)",
                        extra={"pending": pendings, "entries": len(live)})
            if patch:
                core.patch_namespaced_config_map(WEBHOOK_CONFIGMAP, namespace, {"data": patch})
            return False
        if len(live) >= lim.max_entries:
            oldest = sorted(live, key=lambda k: (not live[k][2], live[k][1] or 0.0))
            for k in oldest[: len(live) - lim.max_entries + 1]:
                patch[k] = None
    exp = now + (lim.pending_ttl_secs if pending else lim.ttl_secs)
    patch[key] = json.dumps({"url": url, "exp": round(exp, 1), "pending": pending})
    body = {"data": patch}
    try:
        core.patch_namespaced_config_map(WEBHOOK_CONFIGMAP, namespace, body)
        return True
    except ApiException as exc:
        if exc.status != 404:
            raise
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=WEBHOOK_CONFIGMAP, labels={"app.kubernetes.io/part-of": "whisper-operator"}),
        data={k: v for k, v in patch.items() if v is not None},
    )
    try:
        core.create_namespaced_config_map(namespace, cm)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.patch_namespaced_config_map(WEBHOOK_CONFIGMAP, namespace, body)
    return True


def unregister(api: Any, namespace: str, url: str) -> bool:
    from kubernetes import client

    core = client.CoreV1Api(api)
    data = _read(core, namespace) or {}
    if url_key(url) not in data:
        return False
    core.patch_namespaced_config_map(WEBHOOK_CONFIGMAP, namespace, {"data": {url_key(url): None}})
    return True


def registered(api: Any, namespace: str) -> list[str]:
    """The URLs that have not expired."""
    from kubernetes import client

    data = _read(client.CoreV1Api(api), namespace) or {}
    now = time.time()
    return sorted({url for url, exp, _ in map(_entry, data.values()) if url and (exp is None or exp > now)})
