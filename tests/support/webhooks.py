"""A real HTTP webhook receiver on loopback that records every POST.

Per path it can fail the first N attempts (with a chosen status) or answer
slowly, so retries, backoff and "a slow receiver never blocks the server"
can be observed from the outside.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Delivery:
    path: str
    body: bytes
    headers: dict[str, str]
    started_at: float  # monotonic, when the request line arrived
    answered_at: float = 0.0  # monotonic, when the answer was sent
    status: int = 200  # what the receiver answered
    attempt: int = 1  # 1-based attempt number for this path

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def __repr__(self) -> str:
        body = self.body[:200].decode("utf-8", "replace")
        return f"<POST {self.path} #{self.attempt} -> {self.status}: {body}>"


@dataclass
class _Rule:
    fail_first: int = 0
    fail_status: int = 500
    delay: float = 0.0
    hold: threading.Event | None = None  # answer only once set (at most 120 s)


class WebhookReceiver:
    """``ThreadingHTTPServer`` on ``host`` (default 127.0.0.1) and a free port.

    ``url(path)`` is what to hand the server as ``webhook_url``. Set
    ``WHISPEROP_WEBHOOK_HOST`` to the address the server under test can reach
    this machine at when it is not on loopback (the receiver then listens on
    all interfaces).
    """

    def __init__(self, host: str | None = None) -> None:
        advertised = host or os.environ.get("WHISPEROP_WEBHOOK_HOST") or "127.0.0.1"
        bind = "127.0.0.1" if advertised in ("127.0.0.1", "localhost") else "0.0.0.0"
        self.advertised_host = advertised
        self.deliveries: list[Delivery] = []
        self._rules: dict[str, _Rule] = {}
        self._counts: dict[str, int] = {}
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_POST(self) -> None:  # noqa: N802
                started = time.monotonic()
                body = self._read_body()
                path = self.path.split("?", 1)[0]
                with receiver._cond:
                    receiver._counts[path] = receiver._counts.get(path, 0) + 1
                    attempt = receiver._counts[path]
                    rule = receiver._rules.get(path, _Rule())
                    d = Delivery(path, body, {k.lower(): v for k, v in self.headers.items()}, started, attempt=attempt)
                    d.status = rule.fail_status if attempt <= rule.fail_first else 200
                    receiver.deliveries.append(d)
                    receiver._cond.notify_all()
                if rule.delay:
                    time.sleep(rule.delay)
                if rule.hold is not None:
                    rule.hold.wait(120)
                payload = b'{"ok":true}' if d.status < 300 else b'{"error":"receiver told to fail"}'
                try:
                    self.send_response(d.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass
                with receiver._cond:
                    d.answered_at = time.monotonic()
                    receiver._cond.notify_all()

            do_PUT = do_POST

        self._httpd = ThreadingHTTPServer((bind, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="webhook-receiver", daemon=True)

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ── configuration ─────────────────────────────────────────────────────

    def url(self, path: str = "/hook") -> str:
        if not path.startswith("/"):
            path = "/" + path
        return f"http://{self.advertised_host}:{self.port}{path}"

    def fail_first(self, path: str, n: int, status: int = 500) -> None:
        with self._cond:
            self._rules.setdefault(path, _Rule()).fail_first = n
            self._rules[path].fail_status = status

    def slow(self, path: str, delay: float) -> None:
        with self._cond:
            self._rules.setdefault(path, _Rule()).delay = delay

    def hold(self, path: str) -> threading.Event:
        """Leave every request to ``path`` unanswered until the returned Event is set."""
        release = threading.Event()
        with self._cond:
            self._rules.setdefault(path, _Rule()).hold = release
        return release

    # ── inspection ────────────────────────────────────────────────────────

    def received(self, path: str | None = None, pred: Callable[[Delivery], bool] | None = None) -> list[Delivery]:
        with self._cond:
            out = [d for d in self.deliveries if path is None or d.path == path]
        return [d for d in out if pred is None or pred(d)]

    def wait_for(
        self,
        path: str | None,
        pred: Callable[[Delivery], bool] | None = None,
        count: int = 1,
        timeout: float = 30.0,
    ) -> list[Delivery]:
        """Wait until ``count`` deliveries to ``path`` match ``pred``; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [d for d in self.deliveries if (path is None or d.path == path) and (pred is None or pred(d))]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"webhook receiver: wanted {count} matching deliveries to {path} within {timeout}s, "
                        f"got {len(got)}; all deliveries: {self.deliveries}"
                    )
                self._cond.wait(min(left, 0.5))


def is_model_event(d: Delivery, type_: str | None = None) -> bool:
    try:
        body = d.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "type" in body and (type_ is None or body["type"] == type_)


def is_job_payload(d: Delivery, job_id: str | None = None) -> bool:
    try:
        body = d.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "id" in body and "status" in body and (job_id is None or body["id"] == job_id)
