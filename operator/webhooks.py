"""Completion webhooks (one per finished job, recorded in ``status.webhook``) and
model lifecycle webhooks (to every URL in the namespace's registry ConfigMap).

Both go through the one sender of both modes (:mod:`whisperop.core.webhooks`:
retries, timeout, delivery ids, signing, URL guard), configured by the
operator's settings (``WHISPEROP_WEBHOOK_*``, ``WHISPEROP_OUTBOUND_ALLOW``).

Idempotence: a job's delivery is attempted only while ``status.webhook.state``
is not ``delivered``/``failed``; the outcome is written right after the POSTs.
An operator killed between the POST and that write delivers again on restart
(at-least-once); the delivery id ``job-<uid>-<status>`` (``webhook-id`` and
``X-Whisperop-Delivery``) lets a receiver drop that duplicate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from whisperop.cluster import kube
from whisperop.cluster import webhooks as registry
from whisperop.core import crds
from whisperop.core.models import to_json_dict
from whisperop.core.urlguard import redact
from whisperop.core.webhooks import DeliveryResult, WebhookSender, job_delivery_id, model_event_id

from . import metrics
from .config import api, config

log = logging.getLogger("whisperop.operator.webhooks")

_sender: WebhookSender | None = None
_sender_lock = threading.Lock()


def sender() -> WebhookSender:
    """The operator's one sender (started on first use; its loop thread lives as long as the process)."""
    global _sender
    with _sender_lock:
        if _sender is None:
            cfg = config()
            _sender = cfg.webhooks.sender(cfg.outbound_allow).start()
        return _sender


def _result(tj: crds.TranscriptionJob) -> crds.ResultDoc | None:
    """The parsed transcript.json of a Done job (None when absent or unreadable)."""
    uri = tj.status.result.json_ if tj.status.result else None
    if not uri:
        return None
    try:
        from whisperop.cluster.s3 import read_result

        return read_result(config().s3.client, uri)
    except Exception:
        log.warning("could not read the result JSON for the webhook", extra={"uri": uri}, exc_info=True)
        return None


def job_document(tj: crds.TranscriptionJob) -> dict[str, Any]:
    """The full Job (contract shape, as the facade's GET shows it), segments included when the job is done."""
    result = _result(tj) if tj.phase == crds.Phase.Done else None
    return to_json_dict(crds.job_with_result(tj, result))


def deliver_job(res: kube.Resources, tj: crds.TranscriptionJob) -> None:
    url = tj.spec.webhookUrl
    if not url:
        return
    outcome = crds.PHASE_TO_STATUS[tj.phase].value
    result = sender().deliver(url, job_document(tj), job_delivery_id(str(tj.metadata.get("uid")), outcome))
    state = "delivered" if result.ok else "failed"
    record: dict[str, Any] = {
        "url": url, "state": state, "attempts": result.attempts,
        "responseCode": result.code, "lastAttemptTime": kube.ts(), "error": result.error,
    }
    metrics.WEBHOOKS.labels("job", "delivered" if result.ok else "failed").inc()
    log.log(logging.INFO if result.ok else logging.WARNING, "job webhook " + state, extra={
        "namespace": tj.namespace, "job": tj.name, "phase": tj.status.phase, "url": redact(url),
        "result": state, "http_status": result.code, "attempts": result.attempts, "reason": result.error})
    try:
        res.patch_status(tj.name, {"webhook": record})
    except kube.NotFound:
        return
    if result.ok:
        kube.post_event(api(), tj, "Normal", "WebhookDelivered", f"POST {redact(url)}: HTTP {result.code}", "whisperop-operator")
    else:
        kube.post_event(api(), tj, "Warning", "WebhookFailed", f"POST {redact(url)} failed after {result.attempts} attempts: "
                        f"{result.error}", "whisperop-operator")


def send_model_event(namespace: str, payload: dict[str, Any]) -> None:
    """POST a model lifecycle payload to every registered URL (in the background: the sender's loop)."""
    try:
        urls = registry.registered(api(), namespace)
    except Exception:
        log.warning("could not read the webhook registry", exc_info=True)
        return

    event_id = model_event_id(str(payload.get("type")))  # one id per event, whatever the URL or attempt

    def recorder(url: str) -> Callable[[Future[DeliveryResult]], None]:
        return lambda fut: None if fut.cancelled() else record(url, fut.result())

    def record(url: str, r: DeliveryResult) -> None:
        metrics.WEBHOOKS.labels("model", "delivered" if r.ok else "failed").inc()
        log.log(logging.INFO if r.ok else logging.WARNING, "model webhook " + ("delivered" if r.ok else "failed"),
                extra={"namespace": namespace, "event": payload.get("type"), "url": redact(url),
                       "result": "delivered" if r.ok else "failed", "http_status": r.code, "attempts": r.attempts,
                       "reason": r.error})

    for url in urls:
        sender().send(url, payload, event_id).add_done_callback(recorder(url))
