"""Restart recovery: kill -9 mid-job, restart on the same DATA_DIR."""

from __future__ import annotations

from tests.support.client import ApiClient
from tests.support.shapes import RESTART_MESSAGE, assert_job, parse_utc
from tests.support.sse import names, read_stream
from tests.support.webhooks import WebhookReceiver, is_model_event


def test_kill9_mid_job_then_restart(start_server, receiver: WebhookReceiver, audio) -> None:
    """MAX_JOB_ATTEMPTS=1: the original contract — the job running at the crash fails."""
    srv = start_server.make("restart", MAX_JOB_ATTEMPTS="1")
    with ApiClient(srv.base_url) as c:
        c.ensure_ready(timeout=60)
        # a finished job whose webhook URL must survive the restart in the registry
        before = c.submit(audio.short, webhook_url=receiver.url("/registered-before"))
        assert_job(c.wait_terminal(before, timeout=60), before, status="done")
        running = c.submit(audio.long)
        c.wait_job(running, lambda j: j["status"] == "running" and j["progress"] > 0, timeout=90, what="running")
        queued = [c.submit(audio.jfk), c.submit(audio.short)]
        assert [c.get_job(j)["status"] for j in queued] == ["queued", "queued"]

    srv.kill9()
    srv.start()

    with ApiClient(srv.base_url) as c:
        # the job that was running when the server died is failed, with the contract's message
        job = c.get_job(running)
        assert_job(job, running, status="failed")
        assert job["error"] == RESTART_MESSAGE, job["error"]
        assert job["segments"] == []
        # finished jobs are kept as they were
        assert_job(c.get_job(before), before, status="done")
        # queued jobs are still there and not lost
        for j in queued:
            assert c.get_job(j)["status"] in ("queued", "running", "done"), c.get_job(j)
        # a late subscriber to the failed job gets one done event
        s = read_stream(c.url(f"/jobs/{running}/stream"), timeout=15)
        assert names(s.events) == ["done"] and s.events[0].json()["job"]["status"] == "failed", s.events

        c.ensure_ready(timeout=60)
        finals = [c.wait_terminal(j, timeout=120) for j in queued]
        for j, f in zip(queued, finals):
            assert_job(f, j, status="done")
        assert parse_utc(finals[0]["completed_at"]) <= parse_utc(finals[1]["completed_at"]), "queued jobs not run FIFO after restart"
        assert c.health()["queue_depth"] == 0


def test_webhook_registry_survives_restart(start_server, receiver: WebhookReceiver, audio) -> None:
    """Issue 3: the registry of webhook URLs is persisted, so a restart keeps it."""
    srv = start_server.make("registry-restart")
    with ApiClient(srv.base_url) as c:
        c.ensure_ready(timeout=60)
        job = c.submit(audio.short, webhook_url=receiver.url("/kept"))
        c.wait_terminal(job, timeout=60)
    srv.kill9()
    srv.start()
    with ApiClient(srv.base_url) as c:
        c.ensure_ready(timeout=60)
    [d] = receiver.wait_for("/kept", lambda d: is_model_event(d, "model_ready"), timeout=30)


def test_kill9_mid_job_requeues_and_resumes_by_default(start_server, audio) -> None:
    """Issue 17: a job running at a crash is queued again (in its FIFO place), keeps its audio,
    and finishes; the queued ones behind it run after it."""
    srv = start_server.make("resume")
    with ApiClient(srv.base_url) as c:
        c.ensure_ready(timeout=60)
        running = c.submit(audio.medium)
        c.wait_job(running, lambda j: j["status"] == "running" and j["progress"] > 0, timeout=90, what="running")
        queued = c.submit(audio.short)

    srv.kill9()
    srv.start()

    with ApiClient(srv.base_url) as c:
        assert c.get_job(running)["status"] in ("queued", "running", "done")
        c.ensure_ready(timeout=60)
        first = c.wait_terminal(running, timeout=300)
        assert_job(first, running, status="done")
        second = c.wait_terminal(queued, timeout=120)
        assert_job(second, queued, status="done")
        assert parse_utc(first["completed_at"]) <= parse_utc(second["completed_at"]), "the resumed job lost its FIFO place"


def test_sigterm_mid_job_keeps_the_job_and_resumes_it(start_server, audio) -> None:
    """A graceful stop aborts the chunk in flight but neither fails the job nor deletes its audio:
    the next start resumes it after its checkpointed chunks (counted from the "chunk decoded" log lines).

    Chunk 2 is held in whisper.cpp's abort callback (WHISPEROP_FAULT_SLOW_CHUNK) so the stop always
    lands mid-job: with the tiny test model the whole job takes 0.4 s, less than uvicorn's 3 s
    connection drain, and a stop that waited for the drain let it finish (seen in CI)."""
    import re

    srv = start_server.make("sigterm", LOG_FORMAT="text", WHISPEROP_FAULT_SLOW_CHUNK="2:1")
    with ApiClient(srv.base_url) as c:
        c.ensure_ready(timeout=60)
        job = c.submit(audio.medium)
        c.wait_job(job, lambda j: j["status"] == "running" and j["progress"] >= 40, timeout=120, what="40 % done")
    offset = srv.log_size()
    srv.stop()
    first_run = srv.log_text(offset, 10**6)
    assert "job interrupted by shutdown" in first_run, first_run
    assert "job done" not in first_run and "job failed" not in first_run, first_run
    del srv.extra_env["WHISPEROP_FAULT_SLOW_CHUNK"]
    final, log = srv.start_and_finish(job, ready_timeout=60, timeout=300)
    assert_job(final, job, status="done")
    after = [int(m.group(1)) for m in re.finditer(r"chunk decoded chunk=(\d+)", log)]
    assert after and min(after) >= 2, f"chunks decoded after the restart: {after} (chunks 0 and 1 were saved)"

