"""The one webhook sender of both modes: ``whisperop serve`` and the operator.

Before, each mode had its own (``api/webhooks.py``: 30 s per attempt, ids
``job-<id>-<status>``; ``cluster/webhooks.py``: 10 s, ids ``<uid>-<phase>``).
Now every delivery, local or cluster, follows one policy:

* **retries** — up to ``WHISPEROP_WEBHOOK_ATTEMPTS`` (3) POSTs of the same
  JSON, 1 s then 2 s after the previous attempt's answer (the contract's
  policy), on any non-2xx answer or network error;
* **timeout** — ``WHISPEROP_WEBHOOK_TIMEOUT_SECS`` (10 s) per attempt, the
  limit GitHub gives its receivers; a receiver that has not answered by then
  is treated as down. One delivery thus ends within 3 x 10 + 3 = 33 s (the
  operator's handler thread waits that long at most, not 93 s);
* **delivery id** (``webhook-id``, also sent as ``X-Whisperop-Delivery``) —
  :func:`job_delivery_id` = ``job-<uid>-<status>`` (the job's never-reused
  identity and the contract's status: ``done``/``failed``/``cancelled``) and
  :func:`model_event_id` = ``model-<type>-<uuid>``. The same on every retry
  of an event and on a re-delivery after an operator crash, and different for
  any two events, so a receiver deduplicates by it (docs/api.md);
* **signing** — Standard Webhooks headers (:mod:`whisperop.core.signing`);
* **URL guard** — every connection goes through
  :func:`whisperop.core.urlguard.guarded_async_client` (an internal address is
  refused at delivery time whatever DNS says by then; redirects are not
  followed); URLs in logs are redacted;
* **fairness** — at most ``per_destination`` (8) deliveries in flight per
  (scheme, host, port) and ``max_in_flight`` (256) in all; the connection pool
  itself never makes a delivery wait (the original's shared pool of 100 let
  150 receivers that answer in 40 s drop another user's webhook after 3 pool
  timeouts).

One background thread runs an asyncio loop with one ``httpx.AsyncClient``:
:meth:`WebhookSender.send` only schedules a delivery there and returns a
future, so neither an HTTP handler nor a worker thread waits for a receiver;
the operator's handlers, which record the outcome, wait on that future
(:meth:`WebhookSender.deliver`).

Only the facade and the operator import this module; both extras ("facade",
"cluster") install httpx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from whisperop.core.errors import UnsafeURLError
from whisperop.core.signing import WebhookSigner
from whisperop.core.urlguard import AllowList, AllowSpec, guarded_async_client, redact

log = logging.getLogger("whisperop.webhooks")

ATTEMPTS = 3
BACKOFF: Sequence[float] = (1.0, 2.0)
TIMEOUT_SECS = 10.0
#: deliveries in flight per (scheme, host, port): a receiver that hangs holds at most this many
PER_DESTINATION = 8
#: deliveries in flight in all (bounds the sender's sockets)
MAX_IN_FLIGHT = 256
USER_AGENT = "whisper-operator"
DELIVERY_HEADER = "X-Whisperop-Delivery"


def job_delivery_id(uid: str, status: str) -> str:
    """``webhook-id`` of a job's completion webhook: ``job-<uid>-<status>``.

    ``uid`` is the job's identity that is never reused — the job id in local mode (a
    UUID), the TranscriptionJob's ``metadata.uid`` in the cluster (a name can be
    reused after a delete, a uid cannot); ``status`` is the contract's terminal
    status (``done``, ``failed``, ``cancelled``), in both modes."""
    return f"job-{uid}-{status}"


def model_event_id(event_type: str) -> str:
    """``webhook-id`` of one model lifecycle event (``model_ready``/``model_unloaded``):
    the same for every registered URL and attempt, new for the next event."""
    return f"model-{event_type}-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one delivery: whether a 2xx came back, after how many attempts,
    the last HTTP status (None after a network error) and the last error."""

    ok: bool
    attempts: int
    code: int | None = None
    error: str | None = None

    def __bool__(self) -> bool:
        return self.ok


class WebhookSender:
    """POSTs JSON with the policy of the module docstring, from a background event loop."""

    def __init__(self, attempts: int = ATTEMPTS, backoff: Sequence[float] = BACKOFF, timeout: float = TIMEOUT_SECS,
                 allow: AllowSpec = None, signer: WebhookSigner | None = None,
                 per_destination: int = PER_DESTINATION, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.attempts = attempts
        self.backoff = tuple(backoff)
        self.timeout = timeout
        self.allow = AllowList.parse(allow)
        self.signer = signer if signer is not None else WebhookSigner()
        self.per_destination = per_destination
        self.max_in_flight = max_in_flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._pending: set[Future[DeliveryResult]] = set()
        self._lock = threading.Lock()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._global: asyncio.Semaphore | None = None

    def start(self) -> WebhookSender:
        with self._lock:
            if self._thread is not None:
                return self
            if not self.signer:
                log.warning("webhooks are not signed: set WHISPEROP_WEBHOOK_SECRET (docs/security.md)")
            self._ready.clear()
            self._thread = threading.Thread(target=self._run, name="whisperop-webhooks", daemon=True)
            self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._global = asyncio.Semaphore(self.max_in_flight)
        self._client = guarded_async_client(
            self.allow, timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0), pool=None),
            follow_redirects=False, limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        )
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._client.aclose())
            loop.close()

    def send(self, url: str, payload: dict[str, Any], event_id: str | None = None) -> Future[DeliveryResult]:
        """Schedule a delivery; the future resolves to its :class:`DeliveryResult`.

        ``event_id`` (``webhook-id``) is the same on every attempt; a random one when not given."""
        if self._loop is None:
            raise RuntimeError("webhook sender not started")
        coro = self._deliver(url, payload, event_id or f"msg_{uuid.uuid4().hex}")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def deliver(self, url: str, payload: dict[str, Any], event_id: str | None = None) -> DeliveryResult:
        """:meth:`send` and wait for the outcome (the operator records it in the job's status)."""
        return self.send(url, payload, event_id).result()

    def _forget(self, fut: Future[DeliveryResult]) -> None:
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
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   DELIVERY_HEADER: event_id, **self.signer.headers(event_id, body)}
        async with self._slot(url), self._global:
            r = await self._client.post(url, content=body, headers=headers)
            return r.status_code

    async def _deliver(self, url: str, payload: dict[str, Any], event_id: str) -> DeliveryResult:
        body = json.dumps(payload).encode()
        fields = {"url": redact(url), "kind": payload.get("type") or payload.get("status"), "webhook_id": event_id}
        code: int | None = None
        reason = ""
        for attempt in range(1, self.attempts + 1):
            try:
                code = await self._attempt(url, body, event_id)
                if 200 <= code < 300:
                    log.info("webhook delivered", extra={**fields, "attempt": attempt, "status_code": code})
                    return DeliveryResult(True, attempt, code)
                reason = f"HTTP {code}"
            except UnsafeURLError as exc:
                log.error("webhook refused by the outbound URL guard", extra={**fields, "reason": str(exc)})
                return DeliveryResult(False, attempt, None, f"refused: {exc}")
            except (httpx.HTTPError, OSError) as exc:  # connection refused, timeout, DNS
                code, reason = None, f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                log.warning("webhook attempt failed; retrying",
                            extra={**fields, "attempt": attempt, "reason": reason, "retry_in_secs": delay})
                await asyncio.sleep(delay)
        log.error("webhook not delivered", extra={**fields, "attempts": self.attempts, "reason": reason})
        return DeliveryResult(False, self.attempts, code, reason)

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
