"""DELETE /jobs/{id}: queued, running, terminal, unknown."""

from __future__ import annotations

import time
import uuid

from tests.support.client import ApiClient
from tests.support.shapes import assert_error, assert_job, assert_json_response
from tests.support.sse import SSEStream


def test_cancel_queued_job_never_starts(api: ApiClient, audio) -> None:
    blocker = api.submit(audio.long)
    api.wait_status(blocker, "running", timeout=60)
    queued = api.submit(audio.jfk)
    assert api.get_job(queued)["status"] == "queued"

    r = api.cancel(queued)
    assert r.status_code == 200, f"{r.status_code}: {r.text}"
    body = assert_json_response(r)
    assert_job(body, queued, status="cancelled")

    assert api.cancel(blocker).status_code == 200
    # the worker is free again: the next job runs, the cancelled one stays untouched
    follower = api.submit(audio.short)
    assert_job(api.wait_terminal(follower, timeout=120), follower, status="done")
    job = api.get_job(queued)
    assert_job(job, queued, status="cancelled")
    assert job["segments"] == [] and job["progress"] == 0, job
    assert job["duration_secs"] is None, "a job that never started has no duration_secs"
    assert job["completed_at"] == body["completed_at"], "completed_at of a cancelled job changed later"


def test_cancel_running_job_discards_partial_result(api: ApiClient, audio) -> None:
    job_id = api.submit(audio.long)
    with SSEStream(api.url(f"/jobs/{job_id}/stream")) as s:
        s.wait_open()
        # let it produce at least one chunk, so there is a partial result to discard
        api.wait_job(job_id, lambda j: j["status"] == "running" and j["progress"] > 0, timeout=90, what="running with progress > 0")
        r = api.cancel(job_id)
        cancelled_at = time.monotonic()
        assert r.status_code == 200, f"{r.status_code}: {r.text}"
        assert_job(assert_json_response(r), job_id, status="cancelled")
        # the subscriber learns the job ended (a done event with the cancelled job, or an error event)
        end = s.wait_for(lambda e: e.event in ("done", "error"), timeout=60)
        if end.event == "done":
            assert end.json()["job"]["status"] == "cancelled", end
    # the worker stops at the next opportunity: a job submitted now starts long before
    # the 1200 s file could have finished
    nxt = api.submit(audio.short)
    api.wait_status(nxt, ("running", "done"), timeout=30)
    started_after = time.monotonic() - cancelled_at
    assert_job(api.wait_terminal(nxt, timeout=60), nxt, status="done")
    job = api.get_job(job_id)
    assert_job(job, job_id, status="cancelled")
    assert job["segments"] == [], f"cancelled job kept {len(job['segments'])} segments of its partial result"
    assert started_after < 30


def test_cancel_terminal_jobs_is_409(api: ApiClient, audio) -> None:
    done = api.submit(audio.short)
    assert api.wait_terminal(done, timeout=120)["status"] == "done"
    failed = api.post_job(("garbage.wav", audio.garbage)).json()["job_id"]
    assert api.wait_terminal(failed, timeout=120)["status"] == "failed"
    cancelled = api.submit(audio.long)
    assert api.cancel(cancelled).status_code == 200
    for job_id, status in ((done, "done"), (failed, "failed"), (cancelled, "cancelled")):
        r = api.cancel(job_id)
        msg = assert_error(r, 409)
        assert "terminal" in msg and job_id in msg, f"409 message for a {status} job: {msg!r}"
        assert api.get_job(job_id)["status"] == status, "a refused cancel changed the job"


def test_cancel_unknown_job_is_404(api: ApiClient) -> None:
    job_id = str(uuid.uuid4())
    assert_error(api.cancel(job_id), 404, message=f"job {job_id} not found")
