"""GET /jobs/{id}/stream: progress -> done, late subscribers, error events, fan-out."""

from __future__ import annotations

import time

from tests.support.client import ApiClient
from tests.support.shapes import assert_error, assert_job, assert_job_event
from tests.support.sse import SSEStream, names, read_stream


def _check_stream_headers(s: SSEStream) -> None:
    assert s.status_code == 200, f"stream answered {s.status_code}: {s.body[:300]!r}"
    ctype = s.response_headers.get("content-type", "") if s.response_headers else ""
    assert ctype.startswith("text/event-stream"), f"content-type {ctype!r}"


def test_progress_events_then_one_done(api: ApiClient, audio) -> None:
    # the job waits behind a blocker until the stream is open: an idle server could otherwise
    # run most of a short job before the subscription exists (progress is not replayed)
    blocker = api.submit(audio.long)
    api.wait_status(blocker, "running", timeout=60)
    job_id = api.submit(audio.medium)
    with SSEStream(api.url(f"/jobs/{job_id}/stream")) as s:
        s.wait_open()
        _check_stream_headers(s)
        assert api.cancel(blocker).status_code == 200
        done = s.wait_event("done", timeout=180)
        time.sleep(1.0)  # anything after done would show up here
        events = s.snapshot()
    seq = names(events)
    assert set(seq) <= {"progress", "done"}, f"unexpected events on a successful job: {seq}"
    assert seq.count("done") == 1, f"expected exactly one done event, got {seq}"
    assert seq[-1] == "done", f"done is not the last event: {seq}"
    progress = [assert_job_event("progress", e.json()) for e in events if e.event == "progress"]
    assert len(progress) >= 2, f"a ~5-chunk job should report progress per chunk, got {seq}"
    totals = {p.chunks_total for p in progress}
    assert len(totals) == 1 and totals.pop() >= 2, f"chunks_total changes or is < 2: {[p.model_dump() for p in progress]}"
    chunks = [p.chunk for p in progress]
    assert chunks == sorted(chunks) and len(set(chunks)) == len(chunks), f"chunk numbers not increasing: {chunks}"
    percents = [p.percent for p in progress]
    assert percents == sorted(percents), f"percent goes backwards: {percents}"
    payload = done.json()
    assert_job_event("done", payload)
    assert_job(payload["job"], job_id, status="done")
    # the done event carries the same Job that GET returns
    assert payload["job"] == api.get_job(job_id), "done event job differs from GET /jobs/{id}"


def test_late_subscriber_gets_exactly_one_done_and_the_stream_ends(api: ApiClient, audio) -> None:
    job_id = api.submit(audio.jfk)
    final = api.wait_terminal(job_id, timeout=120)
    s = read_stream(api.url(f"/jobs/{job_id}/stream"), timeout=15)
    _check_stream_headers(s)
    assert s.closed, "the stream of a finished job should end after its done event"
    assert names(s.events) == ["done"], f"late subscriber got {s.events}"
    payload = s.events[0].json()
    assert_job_event("done", payload)
    assert payload["job"] == final


def test_late_subscriber_to_failed_job_gets_done_with_failed_job(api: ApiClient, audio) -> None:
    r = api.post_job(("garbage.bin", audio.garbage))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    final = api.wait_terminal(job_id, timeout=120)
    assert final["status"] == "failed"
    s = read_stream(api.url(f"/jobs/{job_id}/stream"), timeout=15)
    assert names(s.events) == ["done"], f"late subscriber got {s.events}"
    assert s.events[0].json()["job"]["status"] == "failed"


def test_error_event_when_the_job_fails(api: ApiClient, audio) -> None:
    # A long job holds the worker so the bad job is still queued when we subscribe.
    blocker = api.submit(audio.long)
    api.wait_status(blocker, "running", timeout=60)
    r = api.post_job(("garbage.wav", audio.garbage))
    assert r.status_code == 202, r.text
    bad = r.json()["job_id"]
    with SSEStream(api.url(f"/jobs/{bad}/stream")) as s:
        s.wait_open()
        _check_stream_headers(s)
        assert api.get_job(bad)["status"] == "queued"
        assert api.cancel(blocker).status_code == 200
        err = s.wait_event("error", timeout=60)
        time.sleep(1.0)
        events = s.snapshot()
    payload = assert_job_event("error", err.json())
    seq = names(events)
    assert "progress" not in seq, f"undecodable audio produced progress events: {seq}"
    # after the error event only a done event (with the failed job) may follow
    after = seq[seq.index("error") + 1 :]
    assert set(after) <= {"done"} and after.count("done") <= 1, f"events after error: {seq}"
    for e in events:
        if e.event == "done":
            assert e.json()["job"]["status"] == "failed"
    job = api.get_job(bad)
    assert_job(job, bad, status="failed")
    assert payload.message.strip() and job["error"].strip()


def test_many_subscribers_see_the_same_events(api: ApiClient, audio) -> None:
    blocker = api.submit(audio.long)
    api.wait_status(blocker, "running", timeout=60)
    job_id = api.submit(audio.medium)
    streams = [SSEStream(api.url(f"/jobs/{job_id}/stream")).start() for _ in range(8)]
    try:
        for s in streams:
            s.wait_open()
            _check_stream_headers(s)
        assert api.cancel(blocker).status_code == 200
        for s in streams:
            s.wait_event("done", timeout=180)
        time.sleep(0.5)
        seqs = [[(e.event, e.data) for e in s.snapshot()] for s in streams]
    finally:
        for s in streams:
            s.close()
    assert all(seq == seqs[0] for seq in seqs), "subscribers that connected before the job started saw different events"
    assert [n for n, _ in seqs[0]].count("progress") >= 2


def test_stream_of_unknown_job_is_404(api: ApiClient) -> None:
    import uuid

    job_id = str(uuid.uuid4())
    assert_error(api.http.get(f"/jobs/{job_id}/stream"), 404, message=f"job {job_id} not found")
