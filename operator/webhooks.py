"""Completion webhooks (one per finished job, recorded in ``status.webhook``) and
model lifecycle webhooks (to every URL in the namespace's registry ConfigMap).

Idempotence: a job's delivery is attempted only while ``status.webhook.state``
is not ``delivered``/``failed``; the outcome is written right after the POSTs.
An operator killed between the POST and that write delivers again on restart
(at-least-once); the ``X-Whisperop-Delivery`` header (job uid + phase) lets a
receiver drop that duplicate.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from whisperop.cluster import kube
from whisperop.cluster import webhooks as wh
from whisperop.core import crds
from whisperop.core.models import to_json_dict
from whisperop.core.urlguard import redact

from . import metrics
from .config import api, config

log = logging.getLogger("whisperop.operator.webhooks")


def _result(obj: dict[str, Any]) -> crds.ResultDoc | None:
    """The parsed transcript.json of a Done job (None when absent or unreadable)."""
    uri = ((obj.get("status") or {}).get("result") or {}).get("json")
    if not uri:
        return None
    try:
        from whisperop.cluster.s3 import S3Settings, read_result

        return read_result(S3Settings.from_env().client, uri)
    except Exception:
        log.warning("could not read the result JSON for the webhook", extra={"uri": uri}, exc_info=True)
        return None


def job_document(obj: dict[str, Any]) -> dict[str, Any]:
    """The full Job (contract shape, as the facade's GET shows it), segments included when the job is done."""
    result = _result(obj) if (obj.get("status") or {}).get("phase") == crds.Phase.Done else None
    return to_json_dict(crds.job_with_result(obj, result))


def deliver_job(res: kube.Resources, obj: dict[str, Any]) -> None:
    meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
    url = spec["webhookUrl"]
    result = wh.post_json(url, job_document(obj), delivery_id=f"{meta.get('uid')}-{status.get('phase')}",
                          attempts=config().webhook_attempts)
    record = {
        "url": url, "state": "delivered" if result.ok else "failed", "attempts": result.attempts,
        "responseCode": result.code, "lastAttemptTime": kube.ts(), "error": result.error,
    }
    metrics.WEBHOOKS.labels("job", "delivered" if result.ok else "failed").inc()
    log.log(logging.INFO if result.ok else logging.WARNING, "job webhook " + record["state"], extra={
        "namespace": meta.get("namespace"), "job": meta["name"], "phase": status.get("phase"), "url": redact(url),
        "result": record["state"], "http_status": result.code, "attempts": result.attempts, "reason": result.error})
    try:
        res.patch_status(meta["name"], {"webhook": record})
    except kube.NotFound:
        return
    if result.ok:
        kube.post_event(api(), obj, "Normal", "WebhookDelivered", f"POST {redact(url)}: HTTP {result.code}", "whisperop-operator")
    else:
        kube.post_event(api(), obj, "Warning", "WebhookFailed", f"POST {redact(url)} failed after {result.attempts} attempts: "
                        f"{result.error}", "whisperop-operator")


def send_model_event(namespace: str, payload: dict[str, Any]) -> None:
    """POST a model lifecycle payload to every registered URL (background threads)."""
    try:
        urls = wh.registered(api(), namespace)
    except Exception:
        log.warning("could not read the webhook registry", exc_info=True)
        return

    event_id = f"model-{payload.get('type')}-{uuid.uuid4().hex}"  # one id per event, whatever the URL or attempt

    def send(url: str) -> None:
        r = wh.post_json(url, payload, delivery_id=event_id, attempts=config().webhook_attempts)
        metrics.WEBHOOKS.labels("model", "delivered" if r.ok else "failed").inc()
        log.log(logging.INFO if r.ok else logging.WARNING, "model webhook " + ("delivered" if r.ok else "failed"),
                extra={"namespace": namespace, "event": payload.get("type"), "url": redact(url),
                       "result": "delivered" if r.ok else "failed", "http_status": r.code, "attempts": r.attempts,
                       "reason": r.error})

    for url in urls:
        threading.Thread(target=send, args=(url,), daemon=True, name="model-webhook").start()
