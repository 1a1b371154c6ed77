"""Webhook delivery, off the request path and off the worker.

A sender thread runs its own asyncio loop with one ``httpx.AsyncClient``;
``send`` only schedules a delivery there, so neither an HTTP handler nor the
worker thread ever waits for a receiver. Each delivery is up to
``ATTEMPTS`` POSTs of the same JSON, with ``BACKOFF`` seconds between them
(1 s, then 2 s, as the original), retried on any non-2xx answer or network
error.

What is sent (:class:`WebhookNotifier`):

- a job reaching ``done``/``failed``/``cancelled`` → the full Job, to its
  own ``webhook_url`` (hooked on ``JobStore.watch``, so it does not matter
  who ended the job: the worker, a cancel, or restart recovery);
- ``model_ready``/``model_unloaded`` → to every URL ever registered in the
  JobStore's persisted registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import httpx

from whisperop.core.models import ModelReadyEvent, ModelUnloadedEvent
from whisperop.core.ports import JobChange, JobStore, ModelRuntime, RuntimeEvent, Unsubscribe

log = logging.getLogger("whisperop.webhooks")

ATTEMPTS = 3
BACKOFF: Sequence[float] = (1.0, 2.0)
TIMEOUT_SECS = 30.0


class WebhookSender:
    """POSTs JSON with retries from a background event loop."""

    def __init__(self, attempts: int = ATTEMPTS, backoff: Sequence[float] = BACKOFF, timeout: float = TIMEOUT_SECS) -> None:
        self.attempts = attempts
        self.backoff = tuple(backoff)
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._pending: set[Future[bool]] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="whisperop-webhooks", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=10.0), follow_redirects=False)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._client.aclose())
            loop.close()

    def send(self, url: str, payload: dict[str, Any]) -> Future[bool]:
        """Schedule a delivery; the future resolves to True once a 2xx came back."""
        if self._loop is None:
            raise RuntimeError("webhook sender not started")
        fut = asyncio.run_coroutine_threadsafe(self._deliver(url, payload), self._loop)
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: Future[bool]) -> None:
        with self._lock:
            self._pending.discard(fut)

    async def _deliver(self, url: str, payload: dict[str, Any]) -> bool:
        assert self._client is not None
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "whisperop-webhooks"}
        kind = payload.get("type") or payload.get("status")
        for attempt in range(1, self.attempts + 1):
            try:
                r = await self._client.post(url, content=body, headers=headers)
                if 200 <= r.status_code < 300:
                    log.info("webhook delivered", extra={"url": url, "kind": kind, "attempt": attempt, "status_code": r.status_code})
                    return True
                reason = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                log.warning("webhook attempt failed; retrying", extra={"url": url, "kind": kind, "attempt": attempt,
                                                                       "reason": reason, "retry_in_secs": delay})
                await asyncio.sleep(delay)
            else:
                log.error("webhook not delivered", extra={"url": url, "kind": kind, "attempts": attempt, "reason": reason})
        return False

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with self._lock:
            pending = list(self._pending)
        for fut in pending:
            fut.cancel()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None


class WebhookNotifier:
    """Decides what to send where (see the module docstring)."""

    def __init__(self, sender: WebhookSender, jobstore: JobStore, runtime: ModelRuntime) -> None:
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
            # the Job as GET /jobs/{id} shows it (``removed`` only with ?verbose=true)
            self.sender.send(job.webhook_url, job.model_copy(update={"removed": None}).model_dump(mode="json"))

    def _on_runtime(self, event: RuntimeEvent) -> None:
        if isinstance(event, (ModelReadyEvent, ModelUnloadedEvent)):
            payload = event.model_dump(mode="json")
            for url in self.jobstore.webhook_urls():
                self.sender.send(url, payload)
