"""Webhook delivery and the lifecycle-webhook registry, kept in the cluster.

Registry: one ConfigMap per namespace, ``whisperop-webhooks``, whose data maps
``sha256(url)[:16]`` → url. Registering is a JSON merge patch adding one key,
so concurrent registrations from many facade replicas and the operator never
overwrite each other, and nothing lives in a process's memory. Every URL ever
registered (by a job's ``webhookUrl`` or by the facade) receives the model
lifecycle payloads ``{"type": "model_ready", "loaded_at"}`` and
``{"type": "model_unloaded"}``.

Delivery: POST JSON, up to 3 attempts with 1 s then 2 s backoff on non-2xx or
a connection error (the contract's policy); each request carries
``X-Whisperop-Delivery`` (stable per job and outcome) so a receiver can drop
the rare duplicate after an operator crash between POST and recording it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from whisperop.core.crds import WEBHOOK_CONFIGMAP

log = logging.getLogger("whisperop.webhooks")

BACKOFF = (1.0, 2.0)


@dataclass
class DeliveryResult:
    ok: bool
    attempts: int
    code: int | None
    error: str | None


def post_json(url: str, payload: dict[str, Any], delivery_id: str | None = None, attempts: int = 3,
              backoff: tuple[float, ...] = BACKOFF, timeout: float = 10.0) -> DeliveryResult:
    data = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "whisper-operator"}
    if delivery_id:
        headers["X-Whisperop-Delivery"] = delivery_id
    code: int | None = None
    error: str | None = None
    for i in range(attempts):
        if i:
            time.sleep(backoff[min(i - 1, len(backoff) - 1)])
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers, method="POST"),
                                        timeout=timeout) as resp:
                code = resp.status
            if 200 <= code < 300:
                return DeliveryResult(True, i + 1, code, None)
            error = f"HTTP {code}"
        except urllib.error.HTTPError as exc:
            code, error = exc.code, f"HTTP {exc.code}"
        except Exception as exc:  # connection refused, timeout, DNS
            code, error = None, f"{type(exc).__name__}: {exc}"
        log.warning("webhook attempt failed", extra={"url": url, "attempt": i + 1, "error": error})
    return DeliveryResult(False, attempts, code, error)


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def register(api: Any, namespace: str, url: str) -> None:
    """Add ``url`` to the namespace's registry (idempotent, safe under concurrency)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api)
    body = {"data": {url_key(url): url}}
    try:
        core.patch_namespaced_config_map(WEBHOOK_CONFIGMAP, namespace, body)
        return
    except ApiException as exc:
        if exc.status != 404:
            raise
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=WEBHOOK_CONFIGMAP, labels={"app.kubernetes.io/part-of": "whisper-operator"}),
        data={url_key(url): url},
    )
    try:
        core.create_namespaced_config_map(namespace, cm)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.patch_namespaced_config_map(WEBHOOK_CONFIGMAP, namespace, body)


def registered(api: Any, namespace: str) -> list[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map(WEBHOOK_CONFIGMAP, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise
    return sorted(set((cm.data or {}).values()))
