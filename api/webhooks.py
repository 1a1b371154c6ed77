"""What ``whisperop serve`` sends where, through the one sender of both modes
(:class:`whisperop.core.webhooks.WebhookSender`: retries, timeout, delivery ids,
signing, the outbound URL guard).

- a job reaching ``done``/``failed``/``cancelled`` → the full Job, to its
  own ``webhook_url`` (hooked on ``JobQueue.watch``, so it does not matter
  who ended the job: the worker, a cancel, or restart recovery);
- ``model_ready``/``model_unloaded`` → to every URL ever registered in the
  JobQueue's persisted registry.

The cluster's equivalent is the operator's (``operator/webhooks.py``); the
cluster facade sends nothing (``create_app(..., send_webhooks=False)``).
"""

from __future__ import annotations

from whisperop.core.models import ModelReadyEvent, ModelUnloadedEvent
from whisperop.core.ports import JobChange, JobQueue, ModelRuntime, RuntimeEvent, Unsubscribe
from whisperop.core.webhooks import WebhookSender, job_delivery_id, model_event_id


class WebhookNotifier:
    """Decides what to send where (see the module docstring)."""

    def __init__(self, sender: WebhookSender, jobstore: JobQueue, runtime: ModelRuntime) -> None:
        self.sender = sender
        self.jobstore = jobstore
        self.runtime = runtime
        self._unsubs: list[Unsubscribe] = []

    def start(self) -> None:
        self.sender.start()
        self._unsubs = [self.jobstore.watch(self._on_job), self.runtime.subscribe(self._on_runtime)]

    def stop(self) -> None:
        for u in self._unsubs:
            u()
        self._unsubs = []
        self.sender.stop()

    def _on_job(self, change: JobChange) -> None:
        job = change.job
        if change.kind == "finished" and job.status.terminal and job.webhook_url:
            # the Job as GET /jobs/{id} shows it (``removed`` only with ?verbose=true), signed, with a delivery id
            self.sender.send(job.webhook_url, job.model_copy(update={"removed": None}).model_dump(mode="json"),
                             event_id=job_delivery_id(job.id, job.status.value))

    def _on_runtime(self, event: RuntimeEvent) -> None:
        if isinstance(event, (ModelReadyEvent, ModelUnloadedEvent)):
            payload = event.model_dump(mode="json")
            event_id = model_event_id(str(payload.get("type")))
            for url in self.jobstore.webhook_urls():
                self.sender.send(url, payload, event_id=event_id)
