"""SSE: the broadcaster fans one source out to many subscribers; job/model streams."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from whisperop.api import sse
from whisperop.api.sse import Broadcaster, EventHub, job_messages, message
from whisperop.core.models import Job, JobStatus, ModelReadyEvent, TranscriptionResult, utcnow
from whisperop.core.ports import JobChange
from whisperop.inference.runtime import LocalModelRuntime
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore


def _parse(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            ev = next(line[7:] for line in lines if line.startswith("event: "))
            data = next(line[6:] for line in lines if line.startswith("data: "))
            out.append((ev, json.loads(data)))
    return out


def test_publish_from_another_thread_reaches_every_subscriber_in_order() -> None:
    async def main() -> list[list[str]]:
        b = Broadcaster()
        subs = [b.subscribe("t") for _ in range(50)]
        other = b.subscribe("other")

        def producer() -> None:
            for i in range(20):
                b.publish("t", message("progress", {"i": i}))

        t = threading.Thread(target=producer)
        t.start()
        await asyncio.to_thread(t.join)
        got = []
        for s in subs:
            got.append([json.loads((await s.get(1.0)).data)["i"] for _ in range(20)])  # type: ignore[union-attr]
        assert await other.get(0.05) is None
        for s in subs:
            s.close()
        assert b.subscriber_count() == 1
        return got

    got = asyncio.run(main())
    assert all(seq == list(range(20)) for seq in got)


def _running_job(status: JobStatus = JobStatus.running, **kw: object) -> Job:
    return Job(id="j", status=status, **kw)  # type: ignore[arg-type]


def test_job_messages_per_change() -> None:
    assert job_messages(JobChange("progress", _running_job(), chunk=0, chunks_total=7)) == [], "decode-only update is not an event"
    [p] = job_messages(JobChange("progress", _running_job(), chunk=3, chunks_total=7))
    assert (p.event, json.loads(p.data)) == ("progress", {"type": "progress", "percent": 42, "chunk": 3, "chunks_total": 7})
    failed = _running_job(JobStatus.failed, error="could not decode audio", completed_at=utcnow())
    err, done = job_messages(JobChange("finished", failed))
    assert (err.event, json.loads(err.data)) == ("error", {"type": "error", "message": "could not decode audio"})
    assert done.event == "done" and done.final and json.loads(done.data)["job"]["status"] == "failed"
    cancelled = _running_job(JobStatus.cancelled, completed_at=utcnow())
    assert [m.event for m in job_messages(JobChange("finished", cancelled))] == ["done"]
    assert job_messages(JobChange("created", _running_job(JobStatus.queued))) == []


@pytest.fixture
def hub(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqliteJobStore.in_data_dir(tmp_path)
    runtime = LocalModelRuntime(tmp_path / "none.bin", store, LocalBlobStore.in_data_dir(tmp_path))  # never started
    h = EventHub(store, runtime)
    h.start()
    yield h, store, runtime
    h.stop()
    store.close()


def test_many_subscribers_fed_from_one_watch_without_store_reads(hub) -> None:  # type: ignore[no-untyped-def]
    h, store, _ = hub
    store.create(Job(id="j1"), "a")
    watchers_before = len(store._watchers)
    reads = {"n": 0}
    real_get = store.get

    def counting_get(job_id: str) -> Job:
        reads["n"] += 1
        return real_get(job_id)

    async def main() -> list[list[tuple[str, dict]]]:
        streams = [h.job_stream("j1", counting_get) for _ in range(30)]
        firsts = [asyncio.ensure_future(s.__anext__()) for s in streams]
        await asyncio.sleep(0.3)  # every subscriber is now waiting on its queue
        assert reads["n"] == 30 and len(store._watchers) == watchers_before, "subscribers must not add watches"

        def work() -> None:
            store.claim_next()
            for i in range(1, 4):
                store.record_progress("j1", i, 3, 9.0)
            store.complete("j1", TranscriptionResult(language="en", duration_secs=9.0, segments=[], chunks=3))

        await asyncio.to_thread(work)
        out = []
        for s, first in zip(streams, firsts):
            chunks = [await first]
            async for c in s:
                chunks.append(c)
            out.append(_parse(b"".join(chunks)))
        assert reads["n"] == 30, "events were delivered without reading the store per subscriber"
        return out

    results = asyncio.run(main())
    assert all(r == results[0] for r in results)
    assert [e for e, _ in results[0]] == ["progress", "progress", "progress", "done"]
    assert results[0][-1][1]["job"] == store.get("j1").model_copy(update={"removed": None}).model_dump(mode="json")
    assert h.broadcaster.subscriber_count() == 0, "finished streams unsubscribe"


def test_late_subscriber_gets_exactly_one_done(hub) -> None:  # type: ignore[no-untyped-def]
    h, store, _ = hub
    store.create(Job(id="j2"), "a")
    store.cancel("j2")

    async def main() -> bytes:
        return b"".join([c async for c in h.job_stream("j2", store.get)])

    events = _parse(asyncio.run(main()))
    assert [e for e, _ in events] == ["done"] and events[0][1]["job"]["status"] == "cancelled"


def test_model_stream_sends_events_and_keepalive_comments(hub, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    h, _, runtime = hub
    monkeypatch.setattr(sse, "KEEPALIVE_SECS", 0.2)

    async def main() -> list[bytes]:
        stream = h.model_stream()
        first = await asyncio.wait_for(stream.__anext__(), 2)
        runtime._emit(ModelReadyEvent(loaded_at=utcnow()))
        second = await asyncio.wait_for(stream.__anext__(), 2)
        await stream.aclose()
        return [first, second]

    first, second = asyncio.run(main())
    assert first == b": keep-alive\n\n"
    [(name, payload)] = _parse(second)
    assert name == "model_ready" and set(payload) == {"type", "loaded_at"} and payload["loaded_at"].endswith("Z")
    assert h.broadcaster.subscriber_count() == 0


def test_mid_job_subscriber_starts_with_the_current_state(hub) -> None:  # type: ignore[no-untyped-def]
    """Joining at chunk 2 of 5: the first event is that state, not silence until chunk 3 ends."""
    h, store, _ = hub
    store.create(Job(id="j3"), "a")
    store.claim_next()
    store.record_progress("j3", 0, 5, 50.0)
    store.record_progress("j3", 1, 5)
    store.record_progress("j3", 2, 5)

    async def main() -> list[tuple[str, dict]]:
        stream = h.job_stream("j3", store.get, store.progress)
        first = _parse(await asyncio.wait_for(stream.__anext__(), 30))

        def work() -> None:
            store.record_progress("j3", 2, 5)  # a repeat of the state already sent: skipped
            store.record_progress("j3", 3, 5)
            store.complete("j3", TranscriptionResult(language="en", duration_secs=50.0, segments=[], chunks=5))

        await asyncio.to_thread(work)
        rest = b"".join([c async for c in stream])
        return first + _parse(rest)

    events = asyncio.run(main())
    assert [(e, d.get("chunk")) for e, d in events] == [("progress", 2), ("progress", 3), ("done", None)]
    assert events[0][1] == {"type": "progress", "percent": 40, "chunk": 2, "chunks_total": 5}
