"""Model lifecycle: /model/status, /model/load, /model/unload, /model/events, 503 per state,
idle timeout, waiting_for_gpu, QUEUE_WHILE_LOADING, model webhooks.

Each test starts its own server (fresh state, its own settings and fault hooks):
``WHISPEROP_FAULT_LOAD_DELAY_SECS`` makes ``loading`` observable and
``WHISPEROP_FAULT_LOAD_OOM_COUNT`` makes the next loads fail as out of GPU memory.
The idle-timeout tests also run against a ``WHISPEROP_BASE_URL`` server whose
starter declares its idle timeout and load delay (``idle_server`` in
conftest.py; the cluster facade in tests/operator/test_idle_cluster.py). They
measure from the server's own ``loaded_at``/``completed_at``, not from when
this client noticed ready/done, which a cluster facade learns through watches.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Iterator

import pytest

from tests.support.client import ApiClient
from tests.support.mode import MANAGED, MANAGED_ONLY_REASON
from tests.support.shapes import (
    assert_error,
    assert_health,
    assert_job,
    assert_model_event,
    assert_model_status,
    assert_not_ready,
    exact_keys,
    parse_utc,
)
from tests.support.sse import SSEStream, names
from tests.support.webhooks import WebhookReceiver, is_job_payload, is_model_event


def _events(c: ApiClient) -> SSEStream:
    s = SSEStream(c.url("/model/events")).start()
    s.wait_open()
    assert s.status_code == 200, s.status_code
    ctype = s.response_headers.get("content-type", "")
    assert ctype.startswith("text/event-stream"), ctype
    return s


def _validated(s: SSEStream) -> list[str]:
    evs = s.snapshot()
    for e in evs:
        assert_model_event(e.event, e.json())
    return names(evs)


def _is_subsequence(sub: list[str], seq: list[str]) -> bool:
    it = iter(seq)
    return all(x in it for x in sub)


@pytest.fixture
def client_of():
    clients: list[ApiClient] = []

    def make(srv) -> ApiClient:
        c = ApiClient(srv.base_url)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.cleanup()
        c.close()


def test_unloaded_rejection_triggers_load_and_registers_webhook(start_server, client_of, receiver: WebhookReceiver, audio) -> None:
    c = client_of(start_server.make("unloaded", WHISPEROP_FAULT_LOAD_DELAY_SECS="3"))
    st = c.model_status()
    assert_model_status(st, "unloaded")
    assert_health(c.health(), model_state="unloaded")
    with _events(c) as ev:
        r = c.post_job(audio.jfk, webhook_url=receiver.url("/rejected"))
        assert_not_ready(r, "unloaded", 30)
        # the rejection itself started a load, which takes >= 3 s here
        st = c.wait_model(("loading", "ready"), timeout=10)
        assert_model_status(st, "loading")
        assert_health(c.health(), model_state="loading")
        assert_not_ready(c.post_job(audio.jfk), "loading", 10)
        r = c.load()
        assert (r.status_code, r.json()) == (202, {"status": "load_initiated"}), f"POST /model/load while loading: {r.status_code} {r.text}"
        ready = assert_model_status(c.wait_model("ready", timeout=60), "ready")
        ev.wait_event("model_ready", timeout=30)
        time.sleep(0.5)
        seq = _validated(ev)
    assert seq == ["model_loading", "model_ready"], f"/model/events during one load: {seq}"
    assert_health(c.health(), model_state="ready")
    # the URL of the rejected submission was registered: it hears model_ready
    [d] = receiver.wait_for("/rejected", lambda d: is_model_event(d, "model_ready"), timeout=30)
    body = d.json()
    exact_keys(body, {"type", "loaded_at"}, "model_ready webhook")
    assert abs((parse_utc(body["loaded_at"]) - ready.loaded_at).total_seconds()) < 1.0, (body, ready)
    r = c.load()
    assert (r.status_code, r.json()) == (200, {"status": "already_ready"})
    job_id = c.submit(audio.jfk)
    assert_job(c.wait_terminal(job_id, timeout=120), job_id, status="done")
    assert not receiver.received("/rejected", lambda d: is_job_payload(d)), "the rejected submission must not become a job"


@pytest.fixture
def any_server(request):
    """A dedicated server in managed mode; the WHISPEROP_BASE_URL server otherwise
    (for tests that need no special settings, only to drive the model state)."""
    if MANAGED:
        return request.getfixturevalue("start_server").make(request.node.name[:20])
    return request.getfixturevalue("shared")


def test_load_and_unload_transitions(any_server, client_of, audio) -> None:
    c = client_of(any_server)
    c.ensure_unloaded()
    r = c.unload()
    assert (r.status_code, r.json()) == (200, {"status": "unload_requested"}), "unload while unloaded"
    assert c.model_state() == "unloaded"
    with _events(c) as ev:
        r = c.load()
        assert (r.status_code, r.json()) == (202, {"status": "load_initiated"})
        assert_model_status(c.wait_model("ready", timeout=60), "ready")
        r = c.load()
        assert (r.status_code, r.json()) == (200, {"status": "already_ready"})
        r = c.unload()
        assert (r.status_code, r.json()) == (200, {"status": "unload_requested"})
        assert_model_status(c.wait_model("unloaded", timeout=30), "unloaded")
        ev.wait_event("model_unloaded", timeout=15)
        r = c.unload()
        assert (r.status_code, r.json()) == (200, {"status": "unload_requested"}), "unload is 200 in every state"
        time.sleep(1.0)
        seq = _validated(ev)
    assert seq == ["model_loading", "model_ready", "model_unloaded"], f"/model/events: {seq}"
    assert_health(c.health(), model_state="unloaded")


def test_unload_waits_for_the_running_job(any_server, client_of, audio) -> None:
    c = client_of(any_server)
    c.ensure_ready(timeout=60)
    # the job waits behind a blocker until its stream is open, and the unload is asked on its first
    # pushed progress event (a poll for "running with progress > 0" could miss a job this short)
    blocker = c.submit(audio.long)
    c.wait_status(blocker, "running", timeout=60)
    job_id = c.submit(audio.medium)
    with _events(c) as ev, SSEStream(c.url(f"/jobs/{job_id}/stream")) as js:
        js.wait_open()
        assert c.cancel(blocker).status_code == 200
        js.wait_event("progress", timeout=60)
        r = c.unload()
        assert (r.status_code, r.json()) == (200, {"status": "unload_requested"})
        done = js.wait_event("done", timeout=120)
        unloaded = ev.wait_event("model_unloaded", timeout=60)
    job = c.get_job(job_id)
    assert_job(job, job_id, status="done")
    assert unloaded.received_at >= done.received_at - 0.5, "model unloaded before the in-flight job finished"
    assert_model_status(c.wait_model("unloaded", timeout=30), "unloaded")


# ── validation is answered before the 503 (as the original did) ──────────────

VALIDATION_CASES = {
    "missing-audio": (dict(audio=None, task="transcribe"), "missing 'audio' field", None),
    "empty-audio": (dict(audio=("empty.wav", b"")), "audio field is empty", None),
    "bad-task": (dict(audio="jfk", task="summarise"), "task must be 'transcribe' or 'translate'", None),
    "unknown-language": (dict(audio="jfk", language="xx"), None, None),
    "bad-webhook": (dict(audio="jfk", webhook_url="ftp://example.invalid/x"), None, None),
    "malformed-multipart": (None, None, "multipart error: "),
}


@pytest.fixture(scope="module")
def unloaded_server(session_servers):
    if not MANAGED:
        pytest.skip(MANAGED_ONLY_REASON)
    srv = session_servers.make("validation")
    yield srv
    srv.close()


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_bad_input_is_400_even_when_model_not_ready(unloaded_server, client_of, audio, case: str) -> None:
    """In the original, the multipart fields are read and checked before the model state:
    a bad request gets its 400, not a 503, and does not trigger a load."""
    c = client_of(unloaded_server)
    c.ensure_unloaded()
    fields, message, prefix = VALIDATION_CASES[case]
    if fields is None:
        r = c.http.post("/jobs", content=b"not multipart", headers={"Content-Type": "multipart/form-data; boundary=B"})
    else:
        fields = dict(fields)
        a = fields.pop("audio")
        r = c.post_job(audio.jfk if a == "jfk" else a, **fields)
    assert_error(r, 400, message=message, prefix=prefix)
    time.sleep(0.5)
    assert c.model_state() == "unloaded", "a rejected bad request triggered a model load"


def test_valid_request_with_undecodable_audio_gets_503_when_unloaded(unloaded_server, client_of, audio) -> None:
    c = client_of(unloaded_server)
    c.ensure_unloaded()
    assert_not_ready(c.post_job(("garbage.wav", audio.garbage)), "unloaded", 30)
    c.wait_model(("loading", "ready"), timeout=10)
    c.ensure_unloaded()


# ── waiting_for_gpu ──────────────────────────────────────────────────────────


def test_waiting_for_gpu_then_retry(start_server, client_of, receiver: WebhookReceiver, audio) -> None:
    poll = 3
    c = client_of(start_server.make("oom", WHISPEROP_FAULT_LOAD_OOM_COUNT="2", GPU_POLL_INTERVAL_SECS=str(poll)))
    with _events(c) as ev:
        assert c.load().status_code == 202
        st = c.wait_model("waiting_for_gpu", timeout=20)
        assert_model_status(st, "waiting_for_gpu")
        assert 0 <= st["retry_in_secs"] <= poll, st
        assert st["vram_needed_mb"] >= 0 and st["vram_free_mb"] >= 0, st
        assert_health(c.health(), model_state="waiting_for_gpu")
        r = c.post_job(audio.jfk, webhook_url=receiver.url("/gpu"))
        assert_not_ready(r, "waiting_for_gpu", poll)
        w = ev.wait_event("model_waiting_for_gpu", timeout=10).json()
        assert w["retry_in_secs"] == poll, w

        # unload while waiting: back to unloaded, and no retry happens by itself
        r = c.unload()
        assert (r.status_code, r.json()) == (200, {"status": "unload_requested"})
        assert_model_status(c.wait_model("unloaded", timeout=15), "unloaded")
        time.sleep(poll + 1.5)
        assert c.model_state() == "unloaded", "a load was retried after unload"

        # the second load hits the second simulated OOM; the retry after the poll interval fits
        assert c.load().status_code == 202
        c.wait_model("waiting_for_gpu", timeout=20)
        t0 = time.monotonic()
        assert_model_status(c.wait_model("ready", timeout=60), "ready")
        waited = time.monotonic() - t0
        ev.wait_event("model_ready", timeout=15)
        time.sleep(0.5)
        seq = _validated(ev)
    assert waited >= poll - 1.5, f"retried after {waited:.1f}s, GPU_POLL_INTERVAL_SECS={poll}"
    expected = ["model_loading", "model_waiting_for_gpu", "model_unloaded", "model_loading", "model_waiting_for_gpu", "model_ready"]
    assert _is_subsequence(expected, seq), f"/model/events: {seq}, expected in order {expected}"
    assert seq.count("model_ready") == 1 and seq.count("model_unloaded") == 1, seq
    assert seq.index("model_ready") > max(i for i, n in enumerate(seq) if n == "model_waiting_for_gpu"), seq
    receiver.wait_for("/gpu", lambda d: is_model_event(d, "model_ready"), timeout=30)


# ── QUEUE_WHILE_LOADING ──────────────────────────────────────────────────────


def test_queue_while_loading_accepts_jobs_during_load(start_server, client_of, audio) -> None:
    c = client_of(start_server.make("qwl", QUEUE_WHILE_LOADING="true", WHISPEROP_FAULT_LOAD_DELAY_SECS="6"))
    assert c.load().status_code == 202
    assert c.wait_model(("loading", "ready"), timeout=10)["state"] == "loading"
    r = c.post_job(audio.jfk)
    assert r.status_code == 202, f"QUEUE_WHILE_LOADING=true: expected 202 while loading, got {r.status_code}: {r.text}"
    job_id = r.json()["job_id"]
    assert_job(c.get_job(job_id), job_id, status="queued")
    h = assert_health(c.health())
    assert (h.model_state.value, h.queue_depth) == ("loading", 1), h
    assert_job(c.wait_terminal(job_id, timeout=120), job_id, status="done")


def test_default_does_not_queue_while_loading(start_server, client_of, audio) -> None:
    c = client_of(start_server.make("noqwl", WHISPEROP_FAULT_LOAD_DELAY_SECS="4"))
    assert c.load().status_code == 202
    assert c.wait_model(("loading", "ready"), timeout=10)["state"] == "loading"
    assert_not_ready(c.post_job(audio.jfk), "loading", 10)


# ── idle timeout ─────────────────────────────────────────────────────────────


def _since(server_time: str | None, what: str) -> float:
    """Seconds from a timestamp the server reported (loaded_at, completed_at) to now. The idle clock
    is the server's: measuring from when this client *noticed* ready or done would shorten the
    interval by the notice delay (a cluster facade learns of ready/done through watches)."""
    return (datetime.now(timezone.utc) - parse_utc(server_time, what)).total_seconds()


def test_idle_timeout_unloads_and_notifies(idle_server, client_of, receiver: WebhookReceiver, audio) -> None:
    t = idle_server(2)
    idle, load_wait = t.idle, 60 + 2 * t.load_delay
    c = client_of(t)
    c.ensure_unloaded(timeout=60)
    with _events(c) as ev:
        assert_not_ready(c.post_job(audio.short, webhook_url=receiver.url("/idle")), "unloaded", 30)
        st = c.wait_model("ready", timeout=load_wait)
        c.wait_model("unloaded", timeout=idle + 30)
        assert _since(st["loaded_at"], "loaded_at") >= idle - 0.5, "unloaded before the idle timeout passed"
        ev.wait_event("model_unloaded", timeout=10)
        [d] = receiver.wait_for("/idle", lambda d: is_model_event(d, "model_unloaded"), timeout=30)
        exact_keys(d.json(), {"type"}, "model_unloaded webhook")

        # a job longer than the idle timeout keeps the model loaded until it ends
        assert_not_ready(c.post_job(audio.medium), "unloaded", 30)
        c.wait_model("ready", timeout=load_wait)
        job_id = c.submit(audio.medium)
        states: list[str] = []
        while True:
            job = c.get_job(job_id)
            if job["status"] in ("done", "failed", "cancelled"):
                break
            states.append(c.model_state())
            time.sleep(0.2)
        assert_job(job, job_id, status="done")
        assert set(states) <= {"ready"}, f"model state while the job ran: {sorted(set(states))}"
        c.wait_model("unloaded", timeout=idle + 30)
        assert _since(job["completed_at"], "completed_at") >= idle - 0.5, "idle timer did not restart when the job finished"
        time.sleep(0.3)
        seq = _validated(ev)
    assert seq == ["model_loading", "model_ready", "model_unloaded"] * 2, f"/model/events: {seq}"


def test_a_load_slower_than_the_idle_timeout_is_not_undone(idle_server, client_of, audio) -> None:
    """Loading time is not idle time (issue 15: a cluster went loading → unloaded in 7.5 s with an
    idle timeout of 3 s and never reported ready). The model becomes ready, serves a job, and
    only then goes idle."""
    t = idle_server(2, load_delay=4)
    c = client_of(t)
    c.ensure_unloaded(timeout=60)
    with _events(c) as ev:
        assert c.load().status_code == 202
        ev.wait_event("model_loading", timeout=30)
        first = ev.wait_for(lambda e: e.event in ("model_ready", "model_unloaded"), timeout=60 + 3 * t.load_delay)
        assert first.event == "model_ready", f"the load was undone before the model was ready: {_validated(ev)}"
        st = c.model_status()
        assert_model_status(st, "ready")
        assert _since(st["loaded_at"], "loaded_at") < t.idle + 30
        job_id = c.submit(audio.short)
        job = c.wait_terminal(job_id, timeout=120)
        assert_job(job, job_id, status="done")
        c.wait_model("unloaded", timeout=t.idle + 30)
        assert _since(job["completed_at"], "completed_at") >= t.idle - 0.5, "unloaded before the idle timeout passed"
        ev.wait_event("model_unloaded", timeout=10)
        time.sleep(0.3)
        seq = _validated(ev)
    assert seq == ["model_loading", "model_ready", "model_unloaded"], f"/model/events: {seq}"


# ── model webhooks go to every URL ever registered ──────────────────────────


def test_model_webhooks_reach_every_registered_url(start_server, client_of, receiver: WebhookReceiver, audio) -> None:
    c = client_of(start_server.make("registry"))
    a, b = receiver.url("/a"), receiver.url("/b")
    assert_not_ready(c.post_job(audio.short, webhook_url=a), "unloaded", 30)  # registers a
    c.wait_model("ready", timeout=60)
    receiver.wait_for("/a", lambda d: is_model_event(d, "model_ready"), timeout=30)
    job_b = c.submit(audio.short, webhook_url=b)  # registers b
    job_a = c.submit(audio.short, webhook_url=a)  # a again: still one registration
    c.wait_terminal(job_b, timeout=60)
    c.wait_terminal(job_a, timeout=60)
    receiver.wait_for("/b", lambda d: is_job_payload(d, job_b), timeout=30)
    c.ensure_unloaded()
    for path in ("/a", "/b"):
        receiver.wait_for(path, lambda d: is_model_event(d, "model_unloaded"), timeout=30)
    c.ensure_ready(timeout=60)
    for path in ("/a", "/b"):
        receiver.wait_for(path, lambda d: is_model_event(d, "model_ready"), count=2 if path == "/a" else 1, timeout=30)
    time.sleep(1.5)
    count = lambda p, t: len(receiver.received(p, lambda d: is_model_event(d, t)))  # noqa: E731
    assert (count("/a", "model_ready"), count("/a", "model_unloaded")) == (2, 1), receiver.received("/a")
    assert (count("/b", "model_ready"), count("/b", "model_unloaded")) == (1, 1), receiver.received("/b")
    # only job payloads carry id/status; model payloads carry type
    for d in receiver.received():
        body = d.json()
        assert ("type" in body) != ("id" in body and "status" in body), body
