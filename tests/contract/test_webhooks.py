"""Job completion webhooks: payload, retries with backoff, off the request path."""

from __future__ import annotations

import time

from tests.support.client import ApiClient
from tests.support.shapes import assert_job
from tests.support.webhooks import WebhookReceiver, is_job_payload


def _job_deliveries(receiver: WebhookReceiver, path: str, job_id: str, count: int = 1, timeout: float = 60.0):
    return receiver.wait_for(path, lambda d: is_job_payload(d, job_id), count=count, timeout=timeout)


def test_done_webhook_is_the_full_job(api: ApiClient, audio, receiver: WebhookReceiver) -> None:
    job_id = api.submit(audio.jfk, webhook_url=receiver.url("/done"))
    final = api.wait_terminal(job_id, timeout=120)
    [d] = _job_deliveries(receiver, "/done", job_id)
    assert d.content_type.startswith("application/json"), d.content_type
    body = d.json()
    assert_job(body, job_id, status="done")
    assert body == final, "webhook payload differs from GET /jobs/{id}"
    assert body["webhook_url"] == receiver.url("/done")
    time.sleep(1.5)
    assert len(receiver.received("/done", lambda d: is_job_payload(d, job_id))) == 1, "a 2xx answer must not be retried"


def test_failed_and_cancelled_jobs_send_webhooks(api: ApiClient, audio, receiver: WebhookReceiver) -> None:
    r = api.post_job(("garbage.wav", audio.garbage), webhook_url=receiver.url("/failed"))
    assert r.status_code == 202, r.text
    failed = r.json()["job_id"]
    [d] = _job_deliveries(receiver, "/failed", failed)
    assert_job(d.json(), failed, status="failed")

    running = api.submit(audio.long, webhook_url=receiver.url("/cancelled"))
    api.wait_status(running, "running", timeout=60)
    queued = api.submit(audio.jfk, webhook_url=receiver.url("/cancelled"))
    assert api.cancel(queued).status_code == 200
    assert api.cancel(running).status_code == 200
    got = receiver.wait_for("/cancelled", lambda d: is_job_payload(d), count=2, timeout=60)
    by_id = {d.json()["id"]: d.json() for d in got}
    assert set(by_id) == {running, queued}, f"cancel webhooks for {sorted(by_id)}"
    for jid, body in by_id.items():
        assert_job(body, jid, status="cancelled")
        assert body["segments"] == []


def test_retries_three_attempts_with_1s_then_2s_backoff(api: ApiClient, audio, receiver: WebhookReceiver) -> None:
    receiver.fail_first("/flaky", 2, status=500)
    job_id = api.submit(audio.short, webhook_url=receiver.url("/flaky"))
    got = _job_deliveries(receiver, "/flaky", job_id, count=3, timeout=60)
    assert [d.status for d in got] == [500, 500, 200]
    gap1 = got[1].started_at - got[0].answered_at
    gap2 = got[2].started_at - got[1].answered_at
    assert 0.7 <= gap1 <= 2.5, f"first retry after {gap1:.2f}s, expected ~1 s"
    assert 1.5 <= gap2 <= 4.5, f"second retry after {gap2:.2f}s, expected ~2 s"
    assert gap2 > gap1, f"backoff does not grow: {gap1:.2f}s then {gap2:.2f}s"
    for d in got:
        assert_job(d.json(), job_id, status="done")
    time.sleep(3.0)
    assert len(receiver.received("/flaky")) == 3, "delivered again after a 2xx"


def test_gives_up_after_three_attempts(api: ApiClient, audio, receiver: WebhookReceiver) -> None:
    receiver.fail_first("/down", 100, status=503)
    receiver.fail_first("/gone", 100, status=404)  # a client error is a non-2xx too
    down = api.submit(audio.short, webhook_url=receiver.url("/down"))
    gone = api.submit(audio.short, webhook_url=receiver.url("/gone"))
    _job_deliveries(receiver, "/down", down, count=3, timeout=60)
    _job_deliveries(receiver, "/gone", gone, count=3, timeout=60)
    time.sleep(5.0)  # longer than any further backoff step would be
    for path in ("/down", "/gone"):
        got = receiver.received(path)
        assert len(got) == 3, f"expected exactly 3 attempts on {path} (always failing), got {len(got)}: {got}"


def test_slow_receiver_blocks_neither_api_nor_worker(api: ApiClient, audio, receiver: WebhookReceiver) -> None:
    release = receiver.hold("/slow")  # the receiver sits on the request until the test is done
    try:
        job_id = api.submit(audio.short, webhook_url=receiver.url("/slow"))
        [d] = receiver.wait_for("/slow", lambda d: is_job_payload(d, job_id), timeout=60)
        t0 = time.monotonic()
        api.health()
        assert time.monotonic() - t0 < 2.0, "API blocked while a webhook is being delivered"
        # a worker blocked by the delivery would never get to the next job (wait_terminal times out)
        nxt = api.submit(audio.short)
        assert_job(api.wait_terminal(nxt, timeout=60), nxt, status="done")
        assert d.answered_at == 0.0, "the webhook was answered before the next job finished"
    finally:
        release.set()
