"""Slow receivers cannot starve others (issue 16: 150 receivers answering in 40 s
exhausted the shared pool of 100 connections, and another user's webhook was
dropped after 3 pool timeouts). Real sender, real loopback receivers."""

from __future__ import annotations

import time

from whisperop.core.webhooks import WebhookSender
from whisperop.core.signing import WebhookSigner

from tests.support.webhooks import WebhookReceiver


def test_a_hanging_receiver_does_not_delay_another_destination() -> None:
    with WebhookReceiver() as slow, WebhookReceiver() as fast:
        release = slow.hold("/slow")
        sender = WebhookSender(allow="127.0.0.1", signer=WebhookSigner(), timeout=120)
        sender.start()
        try:
            held = [sender.send(slow.url("/slow"), {"i": i}) for i in range(150)]
            # the slow destination gets its per-destination share, not the whole sender
            slow.wait_for("/slow", count=8, timeout=30)
            t0 = time.monotonic()
            other = sender.send(fast.url("/other"), {"id": "j", "status": "done"})
            assert other.result(timeout=20).ok
            took = time.monotonic() - t0
            in_flight = len(slow.received("/slow"))
            assert in_flight == 8, f"{in_flight} requests reached the hanging receiver at once (cap 8)"
            assert not any(f.done() for f in held), "the slow deliveries are still waiting, not dropped"
        finally:
            release.set()
        assert all(f.result(timeout=120) for f in held), "every slow delivery completes once the receiver answers"
        sender.stop()
    assert took < 20


def test_many_hanging_destinations_do_not_exhaust_a_connection_pool() -> None:
    """120 hanging destinations (15 receivers x 8 spellings of 127.0.0.1, each its own
    destination): more than a 100-connection pool, and another receiver is still served."""
    spellings = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "127.0.1", "0x7f.1", "127.0.0.1.", "localhost"]
    receivers = [WebhookReceiver().start() for _ in range(15)]
    releases = [r.hold("/hang") for r in receivers]
    sender = WebhookSender(allow="127.0.0.0/8", signer=WebhookSigner(), timeout=120)
    sender.start()
    try:
        with WebhookReceiver() as fast:
            held = [sender.send(f"http://{host}:{r.port}/hang", {"i": 1}) for r in receivers for host in spellings]
            for r in receivers:
                r.wait_for("/hang", count=len(spellings), timeout=60)
            assert sum(len(r.received("/hang")) for r in receivers) == 120
            assert sender.send(fast.url("/other"), {"id": "j", "status": "done"}).result(timeout=30).ok
            assert not any(f.done() for f in held)
    finally:
        for e in releases:
            e.set()
        sender.stop()
        for r in receivers:
            r.stop()
