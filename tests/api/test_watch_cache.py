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


class Listing:
    """``list_all`` answering whatever ``objs`` holds now (a relist after 410 Gone sees the new list)."""

    plural = "transcriptionjobs"

    def __init__(self, objs: list[dict[str, Any]]) -> None:
        self.objs = objs

    def list_all(self, field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        return list(self.objs), "9"


def _tj(name: str, rv: str, phase: str | None = None, audio: str = "s3://bucket/a.wav") -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv}, "spec": {"audio": audio},
            "status": {"phase": phase} if phase else {}}


def test_the_cache_holds_typed_jobs_and_a_relist_diffs_them_into_callbacks() -> None:
    """One cache for every component: objects parsed at the boundary (crds.TranscriptionJob), a
    relist after 410 Gone delivers what changed meanwhile with the previous typed item, and an
    object that does not parse is left out instead of breaking the cache."""
    from whisperop.core import crds

    res = Listing([_tj("a", "1", "Queued"), _tj("b", "1", "Running"), _tj("bad", "1", audio="x" * 3000)])
    w = ResourceWatch(res, transform=crds.as_job)  # type: ignore[arg-type]
    seen: list[tuple[str, str, Any, Any]] = []
    w.add_callback(lambda typ, tj, prev: seen.append((typ, tj.name, tj.phase, prev and prev.phase)))
    w._relist()
    assert w.synced.is_set()
    assert sorted(tj.name for tj in w.items()) == ["a", "b"]  # "bad" breaks the schema's audio length
    assert all(isinstance(tj, crds.TranscriptionJob) for tj in w.items())
    res.objs = [_tj("a", "1", "Queued"), _tj("b", "2", "Done"), _tj("c", "1")]  # b finished, c new, a unchanged
    seen.clear()
    w._relist()
    assert sorted(seen) == [("ADDED", "c", crds.Phase.Queued, None),
                            ("MODIFIED", "b", crds.Phase.Done, crds.Phase.Running)]
    w._apply("MODIFIED", _tj("c", "3", audio="y" * 3000))  # an update that no longer parses: out of the cache
    assert w.cached("c") is None and seen[-1][0] == "DELETED"
