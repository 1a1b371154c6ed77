"""LocalModelRuntime with the real (tiny) whisper.cpp engine: states, events, jobs, cancel."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.local_runtime import Recorder, local_runtimes, submit, wait_until
from whisperop.core.models import JobStatus, ModelState
from whisperop.core.ports import JobTiming
from whisperop.inference.runtime import FaultHooks, LocalModelRuntime


@pytest.fixture
def make_runtime(tmp_path: Path, tiny_model: Path) -> Iterator[Callable[..., tuple[LocalModelRuntime, Recorder]]]:
    """``make_runtime(**kw)``: the tiny model, ``kw`` given to ``LocalModelRuntime``."""
    with local_runtimes(tmp_path) as runtimes:
        yield functools.partial(runtimes.start, tiny_model)


def test_load_unload_cycle_and_status(make_runtime) -> None:  # type: ignore[no-untyped-def]
    rt, rec = make_runtime(faults=FaultHooks(WHISPEROP_FAULT_LOAD_DELAY_SECS=0.5))
    assert rt.status().model_dump(exclude_none=True) == {"state": ModelState.unloaded}
    rt.request_unload()  # no-op while unloaded: no event
    assert rt.request_load() is True
    wait_until(lambda: rt.state == ModelState.loading, 5, "loading")
    assert rt.request_load() is True, "a load in progress is still 'initiated'"
    wait_until(lambda: rt.state == ModelState.ready, 30, "ready")
    st = rt.status()
    assert st.loaded_at is not None and st.vram_needed_mb is None
    assert rt.request_load() is False, "already ready"
    rt.request_unload()
    wait_until(lambda: rt.state == ModelState.unloaded, 10, "unloaded")
    wait_until(lambda: rec.names()[-1:] == ["model_unloaded"], 5, "model_unloaded event")
    time.sleep(0.2)  # anything after model_unloaded would show up here
    assert rec.names() == ["model_loading", "model_ready", "model_unloaded"]


def test_unload_during_loading_ends_unloaded(make_runtime) -> None:  # type: ignore[no-untyped-def]
    rt, rec = make_runtime(faults=FaultHooks(WHISPEROP_FAULT_LOAD_DELAY_SECS=5))
    rt.request_load()
    wait_until(lambda: rt.state == ModelState.loading, 5)
    rt.request_unload()
    wait_until(lambda: rt.state == ModelState.unloaded, 2, "unload interrupts the load delay")
    wait_until(lambda: rec.names()[-1:] == ["model_unloaded"], 5, "model_unloaded event")
    assert rec.names() == ["model_loading", "model_unloaded"]


def test_gpu_memory_failure_waits_and_retries_each_poll_interval(make_runtime) -> None:  # type: ignore[no-untyped-def]
    rt, rec = make_runtime(faults=FaultHooks(WHISPEROP_FAULT_LOAD_OOM_COUNT=2), gpu_poll_interval_secs=1)
    rt.request_load()
    wait_until(lambda: rt.state == ModelState.waiting_for_gpu, 10)
    st = rt.status()
    assert st.vram_needed_mb is not None and st.vram_needed_mb >= 1 and st.vram_free_mb is not None
    assert st.retry_in_secs is not None and 0 <= st.retry_in_secs <= 1
    t0 = time.monotonic()
    wait_until(lambda: rt.state == ModelState.ready, 30)
    assert time.monotonic() - t0 >= 1.0, "two failed attempts need at least one more poll interval"
    wait_until(lambda: rec.names()[-1:] == ["model_ready"], 5, "model_ready event")
    names = rec.names()
    assert names == ["model_loading", "model_waiting_for_gpu"] * 2 + ["model_loading", "model_ready"], names
    waiting = [e for e in rec.events if getattr(e, "type", "") == "model_waiting_for_gpu"]
    assert all(e.retry_in_secs == 1 for e in waiting)  # type: ignore[union-attr]


def test_unload_while_waiting_for_gpu_stops_retrying(make_runtime) -> None:  # type: ignore[no-untyped-def]
    rt, rec = make_runtime(faults=FaultHooks(WHISPEROP_FAULT_LOAD_OOM_COUNT=5), gpu_poll_interval_secs=1)
    rt.request_load()
    wait_until(lambda: rt.state == ModelState.waiting_for_gpu, 10)
    rt.request_unload()
    wait_until(lambda: rt.state == ModelState.unloaded, 2)
    time.sleep(1.5)
    assert rt.state == ModelState.unloaded
    assert rec.names() == ["model_loading", "model_waiting_for_gpu", "model_unloaded"]


def test_idle_timeout_unloads(make_runtime) -> None:  # type: ignore[no-untyped-def]
    rt, rec = make_runtime(idle_timeout_secs=1)
    rt.request_load()
    wait_until(lambda: rt.state == ModelState.ready, 30)
    wait_until(lambda: rt.state == ModelState.unloaded, 10)
    wait_until(lambda: rec.names()[-1:] == ["model_unloaded"], 5, "model_unloaded event")
    assert rec.names() == ["model_loading", "model_ready", "model_unloaded"]
    # measured between the runtime's own events (the test seeing "ready" late would shorten it)
    assert rec.at("model_unloaded") - rec.at("model_ready") >= 0.9


def test_jobs_run_fifo_with_progress_and_a_failed_decode(make_runtime, chunked_wav: Path, short_wav: Path) -> None:  # type: ignore[no-untyped-def]
    rt, rec = make_runtime()
    progress: list[tuple[str, int, int]] = []
    rt.jobs.watch(lambda c: progress.append((c.job.id, c.chunk, c.chunks_total)) if c.kind == "progress" else None)
    submit(rt, chunked_wav, "a")  # queued before the model is there: the runtime loads for it
    submit(rt, b"\x00garbage\xff" * 100, "b")
    submit(rt, short_wav, "c", language="en")
    wait_until(lambda: all(rt.jobs.get(j).status.terminal for j in "abc"), 60, "all jobs finished")
    a, b, c = (rt.jobs.get(j) for j in "abc")
    assert (a.status, b.status, c.status) == (JobStatus.done, JobStatus.failed, JobStatus.done)
    assert a.duration_secs == pytest.approx(9.0, abs=0.1) and a.progress == 100 and a.language
    assert "decod" in (b.error or "").lower() or "audio" in (b.error or "").lower(), b.error
    assert c.language == "en"
    assert a.completed_at <= b.completed_at <= c.completed_at  # type: ignore[operator]
    chunks_a = [(ch, n) for j, ch, n in progress if j == "a" and ch > 0]
    assert len(chunks_a) >= 2 and [ch for ch, _ in chunks_a] == list(range(1, len(chunks_a) + 1))
    assert not any(rt.blobs.exists(f"audio/{j}/source") for j in "abc"), "audio is removed once a job ends"
    timings = [e for e in rec.events if isinstance(e, JobTiming)]
    assert [t.job_id for t in timings] == ["a", "c"] and all(t.audio_secs > 0 and t.wall_secs > 0 for t in timings)


def test_cancel_running_job_aborts_and_next_job_runs(make_runtime, long_wav: Path, short_wav: Path) -> None:  # type: ignore[no-untyped-def]
    rt, _ = make_runtime()
    submit(rt, long_wav, "long")
    wait_until(lambda: rt.jobs.get("long").progress > 0, 60, "long job progressing")
    submit(rt, short_wav, "next")
    rt.jobs.cancel("long")
    t0 = time.monotonic()
    wait_until(lambda: rt.jobs.get("next").status == JobStatus.done, 30, "next job done")
    assert time.monotonic() - t0 < 20, "the cancelled job kept the worker busy"
    job = rt.jobs.get("long")
    assert job.status == JobStatus.cancelled and job.segments == [] and job.progress < 100


def test_unload_request_waits_for_the_running_job(make_runtime, make_wav) -> None:  # type: ignore[no-untyped-def]
    rt, rec = make_runtime()
    status_at_unload: list[JobStatus] = []
    rt.subscribe(lambda e: status_at_unload.append(rt.jobs.get("j").status) if getattr(e, "type", "") == "model_unloaded" else None)
    # 60 s (about 20 chunks): the job must still run when the unload is asked right after its first chunk
    submit(rt, make_wav("long60.wav", 60.0, burst_secs=2.0, gap_secs=1.0, seed=3), "j")
    wait_until(lambda: rt.jobs.get("j").progress > 0, 60)
    rt.request_unload()
    assert rt.jobs.get("j").status == JobStatus.running, "test needs the job still running at the unload request"
    assert rt.state == ModelState.ready
    wait_until(lambda: bool(status_at_unload), 60, "model_unloaded event")  # the event follows the state change
    assert rt.state == ModelState.unloaded and rt.jobs.get("j").status == JobStatus.done
    assert status_at_unload == [JobStatus.done], "the model was unloaded before the in-flight job finished"
    assert rec.names()[-1] == "model_unloaded"
