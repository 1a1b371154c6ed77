"""The operator's decisions are structured log lines (issue 15): a webhook that cannot be delivered
is one line with the redacted URL and the reason — before, kopf's formatter dropped the fields and
the operator wrote no line of its own."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def _docs(c: Cluster) -> list[dict[str, Any]]:
    text = (c.tmp / "operator.log").read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.strip()]  # LOG_FORMAT=json: every line


def test_failed_job_webhook_is_one_line_with_redacted_url_and_reason(cluster: Cluster, jfk_s3: str) -> None:
    c = cluster
    c.start_operator({"LOG_FORMAT": "json", "WHISPEROP_WEBHOOK_ATTEMPTS": "2"})
    secret = "tok3n-s3cret"
    url = f"http://127.0.0.1:{_closed_port()}/hooks/{secret}?sig={secret}"
    # no such WhisperModel: the job fails at once, and its completion webhook goes out
    c.create_job(jfk_s3, name="hooked", model="missing", webhookUrl=url)
    line = wait_for(lambda: next((d for d in _docs(c) if d.get("msg") == "job webhook failed"), None), 90,
                    "the operator's webhook line")
    assert line["level"] == "warning" and line["job"] == "hooked" and line["phase"] == "Failed", line
    assert line["result"] == "failed" and line["attempts"] == 2 and line["http_status"] is None, line
    assert line["url"].startswith("http://127.0.0.1:") and "#" in line["url"], line
    assert "Connect" in line["reason"] or "refused" in line["reason"].lower(), line
    assert secret not in (c.tmp / "operator.log").read_text(), "a webhook secret reached the log"
    assert any(d["logger"].startswith("kopf.") for d in _docs(c))
