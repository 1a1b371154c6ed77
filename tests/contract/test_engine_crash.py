"""A dying engine is a state, never a dead server (issue 14, ``ENGINE_ISOLATION=process``;
on this CPU-only CI the default ``auto`` would run whisper.cpp in-process, so the tests set it).

Real ``whisperop serve`` processes with the tiny model; whisper.cpp runs in
the engine's child process, which really dies by the signal the test hook
``WHISPEROP_FAULT_CHILD_DIE`` arms (SIGSEGV / SIGABRT as ggml does when CUDA
runs out of memory) or after printing whisper.cpp's out-of-memory lines.
Checked through the HTTP contract: ``/model/status`` and ``/model/events``
say ``waiting_for_gpu`` with VRAM figures, the server stays up and becomes
``ready`` at the next attempt; a job whose engine died under it is requeued,
resumes from its checkpoint (each chunk decoded once, read from the engine's
"chunk decoded" log lines) and finishes once (one webhook).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.client import ApiClient
from tests.support.mode import MANAGED, MANAGED_ONLY_REASON
from tests.support.shapes import assert_health, assert_job, assert_model_event, assert_model_status
from tests.support.sse import SSEStream, names
from tests.support.webhooks import WebhookReceiver, is_job_payload

pytestmark = pytest.mark.skipif(not MANAGED, reason=MANAGED_ONLY_REASON)

POLL = 2


def _events(c: ApiClient) -> SSEStream:
    s = SSEStream(c.url("/model/events")).start()
    s.wait_open()
    assert s.status_code == 200, s.status_code
    return s


def _json_lines(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_engine_deaths_while_loading_wait_for_gpu_then_ready(start_server, audio) -> None:
    srv = start_server.make("child-dies-loading", ENGINE_ISOLATION="process", GPU_POLL_INTERVAL_SECS=str(POLL), LOG_FORMAT="json",
                            WHISPEROP_FAULT_CHILD_DIE="load:segv:1,load:abrt:1,load:oom:1")
    with ApiClient(srv.base_url) as c, _events(c) as ev:
        assert c.load().status_code == 202
        st = c.wait_model("waiting_for_gpu", timeout=60)
        assert_model_status(st, "waiting_for_gpu")
        assert st["vram_needed_mb"] >= 1 and st["vram_free_mb"] >= 0 and 0 <= st["retry_in_secs"] <= POLL, st
        assert_health(c.health(), model_state="waiting_for_gpu")
        assert_model_status(c.wait_model("ready", timeout=120), "ready")
        ev.wait_event("model_ready", timeout=30)
        time.sleep(0.5)
        evs = ev.snapshot()
        for e in evs:
            assert_model_event(e.event, e.json())
        seq = names(evs)
        waits = [e.json() for e in evs if e.event == "model_waiting_for_gpu"]
        job_id = c.submit(audio.jfk)
        assert_job(c.wait_terminal(job_id, timeout=180), job_id, status="done")
        assert_health(c.health(), model_state="ready")
    assert seq == ["model_loading", "model_waiting_for_gpu"] * 3 + ["model_loading", "model_ready"], seq
    for w in waits:
        assert w["vram_needed_mb"] >= 1 and w["vram_free_mb"] >= 0 and w["retry_in_secs"] == POLL, w
    assert srv.proc is not None and srv.proc.poll() is None, "the server lives on"
    log = srv.log_text(0, 2_000_000)
    reasons = [r["error"] for r in _json_lines(log) if r.get("msg") == "not enough GPU memory to load the model; retrying"]
    assert len(reasons) == 3, reasons
    assert "engine process killed by SIGSEGV" in reasons[0], reasons[0]
    assert "engine process killed by SIGABRT" in reasons[1], reasons[1]
    assert reasons[2].startswith("out of GPU memory while loading") and "cudaMalloc failed: out of memory" in reasons[2], reasons[2]


def test_a_job_whose_engine_dies_is_requeued_and_finishes_once(start_server, audio, receiver: WebhookReceiver) -> None:
    srv = start_server.make("child-dies-in-job", ENGINE_ISOLATION="process", LOG_FORMAT="json",
                            WHISPEROP_FAULT_CHILD_DIE="job:abrt:1")
    with ApiClient(srv.base_url) as c:
        assert c.load().status_code == 202
        c.wait_model("ready", timeout=120)
        with _events(c) as ev:
            job_id = c.submit(audio.medium, webhook_url=receiver.url("/job"))
            job = c.wait_terminal(job_id, timeout=600)
            assert_job(job, job_id, status="done")
            seq = names(ev.snapshot())
        receiver.wait_for("/job", lambda d: is_job_payload(d), timeout=30)
        time.sleep(2)  # a second delivery would come now
        deliveries = receiver.received("/job", lambda d: is_job_payload(d))
        assert_model_status(c.model_status(), "ready")
    assert len(deliveries) == 1, f"the job finished {len(deliveries)} times"
    assert seq[-2:] == ["model_loading", "model_ready"], f"the engine was loaded again after the death: {seq}"
    records = _json_lines(srv.log_text(0, 4_000_000))
    died = [r for r in records if r.get("msg") == "engine process died during a job; reloading the engine"]
    assert len(died) == 1 and died[0]["job_id"] == job_id and "killed by SIGABRT" in died[0]["error"], died
    assert any(r.get("msg") == "job requeued: the engine died under it" and r["job_id"] == job_id for r in records)
    assert any(r.get("msg") == "job resumed from its checkpoint" for r in records)
    decoded = [int(r["chunk"]) for r in records if r.get("msg") == "chunk decoded"]
    total = job["chunks"] if "chunks" in job else len(set(decoded))
    assert sorted(decoded) == list(range(total)), f"each chunk decoded exactly once across the death: {decoded}"
    assert len(decoded) >= 2, decoded


def test_fewer_streams_while_gpu_memory_is_short_then_more_once_it_frees(start_server, audio, tiny_model, tmp_path) -> None:
    """Issue 14 over HTTP: a pre-flight that fits 2 of 3 streams → ``/model/status`` ready with
    ``streams`` 2 / ``streams_wanted`` 3; once memory frees, one ``model_streams`` event and 3 streams.
    CI has no GPU: NVML's answer is the ``WHISPEROP_TEST_GPU_FILE`` test hook (the server and its
    engine child read it), the measured need a ``.vram.json`` next to a copy of the model."""
    import shutil

    model = tmp_path / tiny_model.name
    shutil.copy(tiny_model, model)
    gpu = "Test GPU 10GB"
    (tmp_path / f"{model.name}.vram.json").write_text(json.dumps({"gpu": gpu, "first_stream_mb": 900, "per_stream_mb": 300}))
    nvml = tmp_path / "gpu.json"

    def free(mb: int) -> None:
        tmp = nvml.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": gpu, "total_mb": 10240, "free_mb": mb}))
        tmp.replace(nvml)

    free(900 + 128 + 300 + 150)  # the first stream with its margin, one more, not a third
    poll = 3
    srv = start_server.make("streams-grow", ENGINE_ISOLATION="process", USE_GPU="true", PARALLELISM="3",
                            GPU_POLL_INTERVAL_SECS=str(poll), WHISPER_MODEL_PATH=str(model), WHISPEROP_TEST_GPU_FILE=str(nvml))
    with ApiClient(srv.base_url) as c, _events(c) as ev:
        assert c.load().status_code == 202
        ev.wait_event("model_ready", timeout=120)
        free(150)  # what the two loaded streams left (the first top-up check comes a poll interval after ready)
        st = c.wait_model("ready", timeout=30)
        for _ in range(50):  # the load's second stream joins in the background
            if st.get("streams") == 2:
                break
            time.sleep(0.1)
            st = c.model_status()
        assert_model_status(st, "ready")
        assert (st["streams"], st["streams_wanted"]) == (2, 3), st
        time.sleep(2 * poll)  # two checks with the memory still taken: nothing added
        assert c.model_status()["streams"] == 2
        free(10240)
        e = ev.wait_event("model_streams", timeout=poll + 60)
        assert_model_event(e.event, e.json())
        assert e.json() == {"type": "model_streams", "streams": 3, "streams_wanted": 3}, e.json()
        st = c.model_status()
        assert_model_status(st, "ready")
        assert (st["streams"], st["streams_wanted"]) == (3, 3), st
        job_id = c.submit(audio.jfk)
        assert_job(c.wait_terminal(job_id, timeout=180), job_id, status="done")
        seq = names(ev.snapshot())
    assert seq == ["model_loading", "model_ready", "model_streams"], seq
