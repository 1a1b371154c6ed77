"""GET /model/events sends a keep-alive comment every 15 s."""

from __future__ import annotations

import time

from tests.support.sse import SSEStream


def test_model_events_keepalive_comment(model_events_probe: SSEStream) -> None:
    s = model_events_probe
    assert s.status_code == 200
    assert s.response_headers.get("content-type", "").startswith("text/event-stream")
    # the probe was opened at the start of the session; a comment is due within 15 s of that
    waited = time.monotonic() - (s.started_at or time.monotonic())
    s.wait_comment(timeout=max(1.0, 20.0 - waited))
    first = s.parser.comments[0][0] - (s.started_at or 0)
    assert first <= 20.0, f"first keep-alive comment after {first:.1f}s"
    assert not s.closed, "the model event stream was closed by the server"
