"""Webhook delivery and the lifecycle-webhook registry, kept in the cluster.

Registry: one ConfigMap per namespace, ``whisperop-webhooks``, whose data maps
``sha256(url)[:16]`` → ``{"url", "exp", "pending"}`` (JSON; a bare URL from
older versions is still read). Entries expire and the registry is bounded
(:class:`whisperop.core.settings.WebhookRegistrySettings`). Registering is a JSON merge patch adding one key,
so concurrent registrations from many facade replicas and the operator never
overwrite each other, and nothing lives in a process's memory. Every URL ever
registered (by a job's ``webhookUrl`` or by the facade) receives the model
lifecycle payloads ``{"type": "model_ready", "loaded_at"}`` and
``{"type": "model_unloaded"}``.

Delivery: POST JSON, up to 3 attempts with 1 s then 2 s backoff on non-2xx or
a connection error (the contract's policy), through the outbound URL guard
(an internal address is refused at delivery time, redirects are not
followed); each request carries ``webhook-id`` = ``X-Whisperop-Delivery``
(stable per job and outcome) so a receiver can drop the rare duplicate after
an operator crash between POST and recording it, and the Standard Webhooks
signature headers (:mod:`whisperop.core.signing`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from whisperop.core.crds import WEBHOOK_CONFIGMAP
from whisperop.core.errors import UnsafeURLError
from whisperop.core.settings import WebhookRegistrySettings
from whisperop.core.signing import WebhookSigner
from whisperop.core.urlguard import ALLOW_ENV, guarded_client, redact

log = logging.getLogger("whisperop.webhooks")

BACKOFF = (1.0, 2.0)
PER_DESTINATION = 8


@dataclass
class DeliveryResult:
    ok: bool
    attempts: int
    code: int | None
    error: str | None


_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()
_client_lock = threading.Lock()
_clients: dict[tuple[str, float], Any] = {}


def _slot(url: str) -> threading.BoundedSemaphore:
    """At most PER_DESTINATION deliveries in flight per (scheme, host, port): a receiver that hangs
    ties up that many threads, never the deliveries to everybody else."""
    parts = urlsplit(url)
    key = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1].lower()}"
    with _slots_lock:
        if key not in _slots:
            _slots[key] = threading.BoundedSemaphore(PER_DESTINATION)
        return _slots[key]


def _client(timeout: float) -> Any:
    """One guarded httpx client per (allow-list, timeout), shared by the operator's threads."""
    allow = os.environ.get(ALLOW_ENV, "")
    with _client_lock:
        if (allow, timeout) not in _clients:
            import httpx

            _clients[(allow, timeout)] = guarded_client(
                allow, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0), pool=None), follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=20))
        return _clients[(allow, timeout)]


def post_json(url: str, payload: dict[str, Any], delivery_id: str | None = None, attempts: int = 3,
              backoff: tuple[float, ...] = BACKOFF, timeout: float = 10.0,
              signer: WebhookSigner | None = None) -> DeliveryResult:
    """POST ``payload`` with retries, through the outbound URL guard (``WHISPEROP_OUTBOUND_ALLOW``),
    signed with the Standard Webhooks headers; ``delivery_id`` is the stable ``webhook-id``."""
    import httpx

    data = json.dumps(payload).encode()
    event_id = delivery_id or f"msg_{uuid.uuid4().hex}"
    signer = signer if signer is not None else WebhookSigner.from_env()
    shown = redact(url)
    code: int | None = None
    error: str | None = None
    for i in range(attempts):
        if i:
            time.sleep(backoff[min(i - 1, len(backoff) - 1)])
        headers = {"Content-Type": "application/json", "User-Agent": "whisper-operator",
                   "X-Whisperop-Delivery": event_id, **signer.headers(event_id, data)}
        try:
            with _slot(url):
                code = _client(timeout).post(url, content=data, headers=headers).status_code
            if 200 <= code < 300:
                return DeliveryResult(True, i + 1, code, None)
            error = f"HTTP {code}"
        except UnsafeURLError as exc:
            log.error("webhook refused by the outbound URL guard", extra={"url": shown, "error": str(exc)})
            return DeliveryResult(False, i + 1, None, f"refused: {exc}")
        except (httpx.HTTPError, OSError) as exc:  # connection refused, timeout, DNS
            code, error = None, f"{type(exc).__name__}: {exc}"
        log.warning("webhook attempt failed", extra={"url": shown, "attempt": i + 1, "error": error,
                                                     "webhook_id": event_id})
    return DeliveryResult(False, attempts, code, error)


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
