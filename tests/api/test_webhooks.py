"""Webhooks: retries with backoff against a real local HTTP receiver; what is sent where."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from whisperop.api.webhooks import WebhookNotifier
from whisperop.core.webhooks import WebhookSender
from whisperop.core.models import Job, ModelLoadingEvent, ModelReadyEvent, ModelUnloadedEvent, TranscriptionResult, utcnow
from whisperop.inference.runtime import LocalModelRuntime
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore


@dataclass
class Hit:
    path: str
    body: dict
    started: float
    status: int


@dataclass
class Receiver:
    """A real HTTP server: answers ``fail[path]`` times with 500, then 200."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, n: int, timeout: float = 15.0) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.hits) >= n:
                    return list(self.hits)
            time.sleep(0.02)
        raise AssertionError(f"expected {n} deliveries, got {self.hits}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            started = time.monotonic()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(rec.delay.get(self.path, 0.0))
            with rec.lock:
                left = rec.fail.get(self.path, 0)
                status = 500 if left > 0 else 200
                rec.fail[self.path] = left - 1
                rec.hits.append(Hit(self.path, body, started, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield rec
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sender() -> Iterator[WebhookSender]:
    s = WebhookSender(allow="127.0.0.1")
    s.start()
    yield s
    s.stop()


def test_three_attempts_with_1s_then_2s_backoff(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.fail["/flaky"] = 2
    fut = sender.send(receiver.url("/flaky"), {"id": "j", "status": "done"})
    assert fut.result(timeout=15).ok
    hits = receiver.wait(3)
    assert [h.status for h in hits] == [500, 500, 200]
    gap1, gap2 = hits[1].started - hits[0].started, hits[2].started - hits[1].started
    assert 0.9 <= gap1 <= 1.8 and 1.9 <= gap2 <= 2.8, (gap1, gap2)
    assert all(h.body == {"id": "j", "status": "done"} for h in hits)


def test_gives_up_after_three_failed_attempts(receiver: Receiver) -> None:
    s = WebhookSender(backoff=(0.05, 0.1), allow="127.0.0.1")
    s.start()
    try:
        receiver.fail["/down"] = 100
        assert s.send(receiver.url("/down"), {"type": "model_unloaded"}).result(timeout=10).ok is False
        # a refused connection is a failure too (nothing listens on port 9)
        assert s.send("http://127.0.0.1:9/x", {"type": "model_unloaded"}).result(timeout=10).ok is False
        time.sleep(0.3)
        assert len(receiver.hits) == 3
    finally:
        s.stop()


def test_send_never_blocks_the_caller(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.delay["/slow"] = 2.0
    t0 = time.monotonic()
    futs = [sender.send(receiver.url("/slow"), {"i": i}) for i in range(5)]
    assert time.monotonic() - t0 < 0.2
    assert all(f.result(timeout=10) for f in futs)
    assert time.monotonic() - t0 < 4.0, "deliveries run concurrently"


def test_notifier_sends_job_and_model_webhooks(tmp_path: Path, receiver: Receiver, sender: WebhookSender) -> None:
    store = SqliteJobStore.in_data_dir(tmp_path)
    runtime = LocalModelRuntime(tmp_path / "none.bin", store, LocalBlobStore.in_data_dir(tmp_path))  # never started
    notifier = WebhookNotifier(sender, store, runtime)
    notifier.start()
    try:
        store.register_webhook(receiver.url("/a"))
        store.register_webhook(receiver.url("/b"))
        store.create(Job(id="j1", webhook_url=receiver.url("/job")), "k")
        store.create(Job(id="j2"), "k2")  # no webhook_url: nothing sent
        store.claim_next()
        store.complete("j1", TranscriptionResult(language="en", duration_secs=1.0, segments=[], chunks=1))
        runtime._emit(ModelLoadingEvent())  # SSE-only: no webhook
        runtime._emit(ModelReadyEvent(loaded_at=utcnow()))
        runtime._emit(ModelUnloadedEvent())
        hits = receiver.wait(5)
        time.sleep(0.3)
        by_path: dict[str, list[dict]] = {}
        for h in receiver.hits:
            by_path.setdefault(h.path, []).append(h.body)
        # the Job as GET /jobs/{id} shows it: ``removed`` only with ?verbose=true
        assert by_path["/job"] == [store.get("j1").model_copy(update={"removed": None}).model_dump(mode="json")]
        for p in ("/a", "/b"):
            assert sorted(b["type"] for b in by_path[p]) == ["model_ready", "model_unloaded"]
        assert len(hits) == 5 and len(receiver.hits) == 5
    finally:
        notifier.stop()
        store.close()
