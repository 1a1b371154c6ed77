"""Webhook delivery, off the request path and off the worker.

A sender thread runs its own asyncio loop with one ``httpx.AsyncClient``;
``send`` only schedules a delivery there, so neither an HTTP handler nor the
worker thread ever waits for a receiver. Each delivery is up to
``ATTEMPTS`` POSTs of the same JSON, with ``BACKOFF`` seconds between them
(1 s, then 2 s, as the original), retried on any non-2xx answer or network
error.

What is sent (:class:`WebhookNotifier`):

- a job reaching ``done``/``failed``/``cancelled`` → the full Job, to its
  own ``webhook_url`` (hooked on ``JobQueue.watch``, so it does not matter
  who ended the job: the worker, a cancel, or restart recovery);
- ``model_ready``/``model_unloaded`` → to every URL ever registered in the
  JobQueue's persisted registry.

Every request carries ``webhook-id`` (stable per event: ``job-<id>-<status>``,
``model-<type>-<uuid>``; also sent as ``X-Whisperop-Delivery``, as cluster
mode does), ``webhook-timestamp`` and, with a secret configured,
``webhook-signature`` (:mod:`whisperop.core.signing`). URLs in logs are
redacted (:func:`whisperop.core.urlguard.redact`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

import httpx

from whisperop.core.errors import UnsafeURLError
from whisperop.core.models import ModelReadyEvent, ModelUnloadedEvent
from whisperop.core.ports import JobChange, JobQueue, ModelRuntime, RuntimeEvent, Unsubscribe
from whisperop.core.signing import WebhookSigner
from whisperop.core.urlguard import AllowList, AllowSpec, guarded_async_client, redact

log = logging.getLogger("whisperop.webhooks")

ATTEMPTS = 3
BACKOFF: Sequence[float] = (1.0, 2.0)
TIMEOUT_SECS = 30.0
#: deliveries in flight per (scheme, host, port): a receiver that hangs holds at most this many
PER_DESTINATION = 8
#: deliveries in flight in all (bounds the sender's sockets)
MAX_IN_FLIGHT = 256


class WebhookSender:
    """POSTs JSON with retries from a background event loop.

    Every connection goes through the outbound URL guard (``allow`` =
    ``WHISPEROP_OUTBOUND_ALLOW``), so an internal address is refused at delivery
    time too, whatever DNS says by then; redirects are not followed. Each
    destination (scheme, host, port) gets at most ``per_destination``
    deliveries in flight and the whole sender ``max_in_flight``; the connection
    pool itself never makes a delivery wait (the original's shared pool of 100
    let 150 receivers that answer in 40 s drop another user's webhook after 3
    pool timeouts). Deliveries are signed (:mod:`whisperop.core.signing`).
    """

    def __init__(self, attempts: int = ATTEMPTS, backoff: Sequence[float] = BACKOFF, timeout: float = TIMEOUT_SECS,
                 allow: AllowSpec = None, signer: WebhookSigner | None = None,
                 per_destination: int = PER_DESTINATION, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.attempts = attempts
        self.backoff = tuple(backoff)
        self.timeout = timeout
        self.allow = AllowList.parse(allow)
        self.signer = signer if signer is not None else WebhookSigner.from_env()
        self.per_destination = per_destination
        self.max_in_flight = max_in_flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._pending: set[Future[bool]] = set()
        self._lock = threading.Lock()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._global: asyncio.Semaphore | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        if not self.signer:
            log.warning("webhooks are not signed: set WHISPEROP_WEBHOOK_SECRET (docs/security.md)")
        self._thread = threading.Thread(target=self._run, name="whisperop-webhooks", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._global = asyncio.Semaphore(self.max_in_flight)
        self._client = guarded_async_client(
            self.allow, timeout=httpx.Timeout(self.timeout, connect=10.0, pool=None), follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        )
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._client.aclose())
            loop.close()

    def send(self, url: str, payload: dict[str, Any], event_id: str | None = None) -> Future[bool]:
        """Schedule a delivery; the future resolves to True once a 2xx came back.

        ``event_id`` (``webhook-id``) is the same on every attempt; a random one when not given."""
        if self._loop is None:
            raise RuntimeError("webhook sender not started")
        fut = asyncio.run_coroutine_threadsafe(self._deliver(url, payload, event_id or f"msg_{uuid.uuid4().hex}"), self._loop)
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: Future[bool]) -> None:
        with self._lock:
            self._pending.discard(fut)

    def _slot(self, url: str) -> asyncio.Semaphore:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1].lower()}"
        if key not in self._slots:
            self._slots[key] = asyncio.Semaphore(self.per_destination)
        return self._slots[key]

    async def _attempt(self, url: str, body: bytes, event_id: str) -> int:
        assert self._client is not None and self._global is not None
        headers = {"Content-Type": "application/json", "User-Agent": "whisperop-webhooks",
                   "X-Whisperop-Delivery": event_id, **self.signer.headers(event_id, body)}
        async with self._slot(url), self._global:
            r = await self._client.post(url, content=body, headers=headers)
            return r.status_code

    async def _deliver(self, url: str, payload: dict[str, Any], event_id: str) -> bool:
        body = json.dumps(payload).encode()
        kind = payload.get("type") or payload.get("status")
        shown = redact(url)
        for attempt in range(1, self.attempts + 1):
            try:
                code = await self._attempt(url, body, event_id)
                if 200 <= code < 300:
                    log.info("webhook delivered", extra={"url": shown, "kind": kind, "attempt": attempt,
                                                         "status_code": code, "webhook_id": event_id})
                    return True
                reason = f"HTTP {code}"
            except UnsafeURLError as exc:
                log.error("webhook refused by the outbound URL guard", extra={"url": shown, "kind": kind, "reason": str(exc),
                                                                              "webhook_id": event_id})
                return False
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                log.warning("webhook attempt failed; retrying", extra={"url": shown, "kind": kind, "attempt": attempt,
                                                                       "reason": reason, "retry_in_secs": delay,
                                                                       "webhook_id": event_id})
                await asyncio.sleep(delay)
            else:
                log.error("webhook not delivered", extra={"url": shown, "kind": kind, "attempts": attempt, "reason": reason,
                                                          "webhook_id": event_id})
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
                             event_id=f"job-{job.id}-{job.status.value}")

    def _on_runtime(self, event: RuntimeEvent) -> None:
        if isinstance(event, (ModelReadyEvent, ModelUnloadedEvent)):
            payload = event.model_dump(mode="json")
            event_id = f"model-{payload.get('type')}-{uuid.uuid4().hex}"
            for url in self.jobstore.webhook_urls():
                self.sender.send(url, payload, event_id=event_id)
