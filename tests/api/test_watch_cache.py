"""ResourceWatch.wait_seen: the read-your-writes wait of the cluster job store (no cluster needed)."""

from __future__ import annotations

import threading
import time
from typing import Any

from whisperop.cluster.watch import ResourceWatch


class ListOnly:
    """The one call ``ResourceWatch._relist`` makes, answering a fixed list."""

    plural = "transcriptionjobs"

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def list_all(self, field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        return [{"metadata": {"name": n, "resourceVersion": "7"}} for n in self.names], "7"


def test_wait_seen_times_out_when_the_watch_never_delivers() -> None:
    w = ResourceWatch(ListOnly([]))  # type: ignore[arg-type]
    t0 = time.monotonic()
    assert w.wait_seen("job-a", 0.3) is False
    assert time.monotonic() - t0 >= 0.29


def test_wait_seen_wakes_on_the_watch_event() -> None:
    w = ResourceWatch(ListOnly([]))  # type: ignore[arg-type]
    threading.Timer(0.2, w._apply, args=("ADDED", {"metadata": {"name": "job-a", "resourceVersion": "8"}})).start()
    t0 = time.monotonic()
    assert w.wait_seen("job-a", 5.0) is True
    took = time.monotonic() - t0
    assert 0.15 <= took < 2.0, took
    assert w.cached("job-a") is not None


def test_wait_seen_wakes_on_a_relist() -> None:
    w = ResourceWatch(ListOnly(["job-b"]))  # type: ignore[arg-type]
    threading.Timer(0.2, w._relist).start()
    assert w.wait_seen("job-b", 5.0) is True
    assert w.wait_seen("job-b", 0.0) is True  # already there: no wait
