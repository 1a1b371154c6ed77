"""Signed webhooks (Standard Webhooks): a real loopback receiver checks every delivery
of the real sender with an independent implementation of the documented algorithm
(HMAC-SHA256 over ``id.timestamp.body``, base64, ``v1,`` prefix), rotation with two
secrets, a stable id across retries, and replay/forgery refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Iterator

import pytest

from whisperop.core.webhooks import WebhookSender
from whisperop.core.signing import SignatureError, WebhookSigner, verify

from tests.support.webhooks import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OLD = "an-old-plain-secret"


def receiver_verifies(secret_key: bytes, headers: dict[str, str], body: bytes, seen: set[str], now: float) -> bool:
    """What docs/security.md tells a receiver to do, written out without whisperop's helpers."""
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(now - int(ts)) > 300 or msg_id in seen:
        return False
    mac = hmac.new(secret_key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    ok = any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split(" "))
    if ok:
        seen.add(msg_id)
    return ok


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


def test_deliveries_verify_with_either_secret_and_keep_their_id_across_retries(receiver: WebhookReceiver) -> None:
    receiver.fail_first("/flaky", 2)
    sender = WebhookSender(backoff=(0.05, 0.05), allow="127.0.0.1", signer=WebhookSigner.from_secrets([SECRET, OLD]))
    sender.start()
    try:
        assert sender.send(receiver.url("/flaky"), {"id": "j1", "status": "done"}, event_id="job-j1-done").result(20)
    finally:
        sender.stop()
    got = receiver.received("/flaky")
    assert len(got) == 3
    assert {d.headers["webhook-id"] for d in got} == {"job-j1-done"}  # one id, three attempts
    assert {d.headers["x-whisperop-delivery"] for d in got} == {"job-j1-done"}
    new_key = base64.b64decode(SECRET[len("whsec_"):])
    for d in got:
        assert receiver_verifies(new_key, d.headers, d.body, set(), time.time()), d.headers
        assert receiver_verifies(OLD.encode(), d.headers, d.body, set(), time.time()), "rotation: the old secret verifies too"
        assert verify([SECRET], d.headers, d.body) == "job-j1-done"
        assert json.loads(d.body) == {"id": "j1", "status": "done"}


def test_forged_tampered_and_replayed_deliveries_are_refused(receiver: WebhookReceiver) -> None:
    signer = WebhookSigner.from_secrets([SECRET])
    body = b'{"id":"j","status":"done"}'
    h = signer.headers("job-j-done", body)
    assert verify([SECRET], h, body) == "job-j-done"
    with pytest.raises(SignatureError, match="no valid signature"):
        verify([SECRET], h, body.replace(b"done", b"fail"))  # tampered body
    with pytest.raises(SignatureError, match="no valid signature"):
        verify(["whsec_" + base64.b64encode(b"other").decode()], h, body)  # another key
    with pytest.raises(SignatureError, match="missing"):
        verify([SECRET], {k: v for k, v in h.items() if k != "webhook-signature"}, body)  # unsigned
    old = signer.headers("job-j-done", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(SignatureError, match="tolerance"):
        verify([SECRET], old, body)  # an hour-old capture replayed
    seen: set[str] = set()
    key = base64.b64decode(SECRET[len("whsec_"):])
    assert receiver_verifies(key, h, body, seen, time.time())
    assert not receiver_verifies(key, h, body, seen, time.time()), "the same id twice inside the window is a replay"


def test_without_a_secret_deliveries_carry_id_and_timestamp_only(receiver: WebhookReceiver) -> None:
    sender = WebhookSender(allow="127.0.0.1", signer=WebhookSigner())
    sender.start()
    try:
        assert sender.send(receiver.url("/plain"), {"type": "model_unloaded"}).result(20)
    finally:
        sender.stop()
    [d] = receiver.received("/plain")
    assert d.headers["webhook-id"].startswith("msg_") and d.headers["webhook-timestamp"].isdigit()
    assert "webhook-signature" not in d.headers


def test_secrets_from_env_and_from_a_mounted_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = WebhookSigner.from_env({"WHISPEROP_WEBHOOK_SECRET": SECRET, "WHISPEROP_WEBHOOK_SECRET_PREVIOUS": OLD})
    d = tmp_path / "secret"
    d.mkdir()
    (d / "current").write_text(SECRET + "\n")
    (d / "previous").write_text(OLD)
    mounted = WebhookSigner.from_env({"WHISPEROP_WEBHOOK_SECRETS_FILE": str(d)})
    assert env.keys == mounted.keys and len(env.keys) == 2
