"""A loaded isolated engine, supervised by the local runtime (issue 14): streams added when GPU
memory frees up, and a child that dies while no job runs.

Real ``LocalModelRuntime`` + SQLite + the isolated engine (a real child process running
whisper.cpp on the tiny random-weight model). CI has no GPU: what NVML answers comes from
the test hook ``WHISPEROP_TEST_GPU_FILE`` (a JSON file this test rewrites to "free" memory),
and the pre-flight's measured need is a ``.vram.json`` written here next to a copy of the
model. The deaths are real: ``kill -9`` of the child from here, or the child's own exit
after printing whisper.cpp's out-of-memory lines (``WHISPEROP_FAULT_CHILD_DIE=idle:oom``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

from tests.support.audio import noise_bursts_wav
from tests.support.local_runtime import Recorder, local_runtimes, submit, wait_until
from whisperop.core import gpu
from whisperop.core.models import JobStatus, ModelState
from whisperop.core.settings import EngineSettings
from whisperop.inference import isolated
from whisperop.inference.isolated import PREFLIGHT_MARGIN_MB, IsolatedEngine, VramNeed, write_need
from whisperop.inference.runtime import LocalModelRuntime

GPU = "Test GPU 10GB"
NEED = VramNeed(GPU, first_stream_mb=900, per_stream_mb=300)
TWO_OF_FOUR_MB = NEED.first_stream_mb + PREFLIGHT_MARGIN_MB + 300 + 150  # room for 2 streams, not 3


class FakeNvml:
    """The ``WHISPEROP_TEST_GPU_FILE`` hook: what NVML answers, rewritten by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def free(self, mb: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": GPU, "total_mb": 10240, "free_mb": mb}))
        tmp.replace(self.path)


@pytest.fixture
def nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml(tmp_path / "gpu.json")
    fake.free(10240)
    monkeypatch.setenv(gpu.TEST_GPU_ENV, str(fake.path))  # this process and the engine's children
    return fake


@pytest.fixture
def model(tiny_model: Path, tmp_path: Path) -> Path:
    """A copy of the tiny model (its ``.vram.json`` stays in this test's directory)."""
    path = tmp_path / "models" / tiny_model.name
    path.parent.mkdir()
    shutil.copy(tiny_model, path)
    return path


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    isolated._fault_used.clear()
    yield lambda spec: monkeypatch.setenv(isolated.FAULT_ENV, spec)
    isolated._fault_used.clear()


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., tuple[LocalModelRuntime, Recorder]]]:
    """``make_runtime(model, poll, **env)``: the isolated engine (``env`` on top) polling GPU memory
    every ``poll`` seconds; a stop may take 30 s (a child to end)."""
    with local_runtimes(tmp_path, stop_timeout=30) as runtimes:
        yield lambda model, poll, **env: runtimes.start(model, {"ENGINE_ISOLATION": "process", **env},
                                                        gpu_poll_interval_secs=poll)


def _engine(rt: LocalModelRuntime) -> IsolatedEngine:
    eng = rt._engine
    assert isinstance(eng, IsolatedEngine), eng
    return eng


def _events(rec: Recorder) -> list[dict[str, object]]:
    with rec.lock:
        return [e.model_dump(mode="json") for e in rec.events if hasattr(e, "model_dump")]


def test_fewer_streams_when_memory_is_short_then_more_once_it_frees(
        make_runtime, model: Path, nvml: FakeNvml, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_need(model, NEED)
    nvml.free(TWO_OF_FOUR_MB)
    rt, rec = make_runtime(model, poll=0.5, USE_GPU=True, PARALLELISM=4)
    # the two streams take their memory: what is left once they are in (written at model_ready,
    # in the runtime's thread, before the first top-up check half a poll later)
    left = TWO_OF_FOUR_MB - NEED.first_stream_mb - 300
    rt.subscribe(lambda ev: nvml.free(left) if getattr(ev, "type", "") == "model_ready" else None)
    rt.request_load()
    wait_until(lambda: rt.state == ModelState.ready, 120, "ready")
    wait_until(lambda: not _engine(rt)._growing, 60, "the load's own streams settled")
    st = rt.status()
    assert (st.streams, st.streams_wanted) == (2, 4), st
    assert st.vram_used_mb == 10240 - left, st
    # memory still short: polls go by without adding streams (0.5 s poll: 3 s is six checks)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        assert rt.status().streams == 2
        time.sleep(0.1)
    assert "model_streams" not in rec.names()
    nvml.free(10240)
    wait_until(lambda: "model_streams" in rec.names(), 60, "a model_streams event")
    streams_ev = [e for e in _events(rec) if e["type"] == "model_streams"]
    assert streams_ev == [{"type": "model_streams", "streams": 4, "streams_wanted": 4}], streams_ev
    st = rt.status()
    assert (st.state, st.streams, st.streams_wanted) == (ModelState.ready, 4, 4), st
    assert _engine(rt).parallelism == 4
    job = submit(rt, noise_bursts_wav(tmp_path / "b.wav", 4), "j1")
    wait_until(lambda: rt.jobs.get(job).status.terminal, 180, "job done")
    done = rt.jobs.get(job)
    assert done.status == JobStatus.done, done.error
    assert rec.names().count("model_ready") == 1, rec.names()


def test_a_child_killed_while_idle_is_loaded_again_without_a_job(make_runtime, model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rt, rec = make_runtime(model, poll=30)
    rt.request_load()
    wait_until(lambda: rt.state == ModelState.ready, 120, "ready")
    first = _engine(rt)
    os.kill(first.child_pid, signal.SIGKILL)
    wait_until(lambda: rec.names().count("model_ready") == 2, 120, "loaded again")
    assert rec.names() == ["model_loading", "model_ready", "model_loading", "model_ready"], rec.names()
    second = _engine(rt)
    assert second is not first and second.alive and not first.alive
    assert rt.jobs.queue_depth() == 0, "no job was needed to notice"
    job = submit(rt, noise_bursts_wav(tmp_path / "b.wav", 2), "j1")
    wait_until(lambda: rt.jobs.get(job).status.terminal, 180, "job done")
    assert rt.jobs.get(job).status == JobStatus.done, rt.jobs.get(job).error


def test_an_idle_child_dying_out_of_gpu_memory_waits_for_the_gpu(
        make_runtime, model: Path, fault, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fault("idle:oom:1")
    rt, rec = make_runtime(model, poll=2)
    rt.request_load()
    wait_until(lambda: "model_waiting_for_gpu" in rec.names(), 120, "waiting_for_gpu")
    st = rt.status()
    if st.state == ModelState.waiting_for_gpu:  # 2 s poll: normally seen; a very slow machine may be past it
        assert st.vram_needed_mb is not None and st.vram_needed_mb >= 1 and st.vram_free_mb is not None, st
    wait_until(lambda: rec.names().count("model_ready") == 2, 120, "ready again")
    names = rec.names()
    assert names == ["model_loading", "model_ready", "model_waiting_for_gpu", "model_loading", "model_ready"], names
    wait_ev = next(e for e in _events(rec) if e["type"] == "model_waiting_for_gpu")
    assert wait_ev["retry_in_secs"] == 2 and wait_ev["vram_needed_mb"] >= 1, wait_ev  # type: ignore[operator]
    job = submit(rt, noise_bursts_wav(tmp_path / "b.wav", 2), "j1")
    wait_until(lambda: rt.jobs.get(job).status.terminal, 180, "job done")
    assert rt.jobs.get(job).status == JobStatus.done, rt.jobs.get(job).error


# ── CTranslate2: out of GPU memory is an exception there (issue 14) ──────────


class _OomWhisper:
    """``ctranslate2.models.Whisper`` as CUDA out of memory makes it behave: the constructor or
    ``generate`` raise CTranslate2's own RuntimeError while armed; the real model otherwise."""

    armed = {"load": 0, "generate": 0}
    real: Any = None
    MESSAGE = "CUDA failed with error out of memory"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self.armed["load"] > 0:
            self.armed["load"] -= 1
            raise RuntimeError(self.MESSAGE)
        self._model = type(self).real(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed["generate"] > 0:
            self.armed["generate"] -= 1
            raise RuntimeError(self.MESSAGE)
        return self._model.generate(*args, **kwargs)


def test_ctranslate2_errors_out_of_gpu_memory_are_told_apart() -> None:
    from whisperop.core.errors import GpuMemoryError
    from whisperop.inference.ct2engine import gpu_oom

    err = gpu_oom(RuntimeError("CUDA failed with error out of memory"), "loading base-ct2")
    assert isinstance(err, GpuMemoryError) and str(err).startswith("out of GPU memory loading base-ct2: CUDA failed")
    assert isinstance(gpu_oom(RuntimeError("cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED"), "x"), GpuMemoryError)
    assert gpu_oom(RuntimeError("Unsupported model binary version"), "x") is None
    assert gpu_oom(ValueError("out of memory"), "x") is None


def test_ctranslate2_out_of_gpu_memory_waits_for_the_gpu_at_load_and_mid_job(
        make_runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import ctranslate2

    from whisperop.modelstore.cache import resolve_model

    ct2_model = resolve_model("base-ct2", EngineSettings().model_cache_dir)
    monkeypatch.setattr(_OomWhisper, "real", ctranslate2.models.Whisper)
    monkeypatch.setattr(_OomWhisper, "armed", {"load": 1, "generate": 0})
    monkeypatch.setattr(ctranslate2.models, "Whisper", _OomWhisper)
    rt, rec = make_runtime(ct2_model, poll=1, ENGINE="ctranslate2", ENGINE_ISOLATION="auto", CHUNK_MAX_SECS=10.0)
    rt.request_load()
    wait_until(lambda: rt.state == ModelState.ready, 180, "ready")
    assert rec.names() == ["model_loading", "model_waiting_for_gpu", "model_loading", "model_ready"], rec.names()
    wait_ev = next(e for e in _events(rec) if e["type"] == "model_waiting_for_gpu")
    assert wait_ev["retry_in_secs"] == 1 and wait_ev["vram_needed_mb"] >= 1, wait_ev  # type: ignore[operator]
    # mid-job: the first batch's generate runs out of memory, and so does the reload once
    _OomWhisper.armed.update(generate=1, load=1)
    job = submit(rt, noise_bursts_wav(tmp_path / "b.wav", 2), "j1")
    wait_until(lambda: rt.jobs.get(job).status.terminal, 300, "job done")
    done = rt.jobs.get(job)
    assert done.status == JobStatus.done, done.error
    model_events = [n for n in rec.names() if n.startswith("model_")]
    assert model_events[4:] == ["model_loading", "model_waiting_for_gpu", "model_loading", "model_ready"], model_events
    assert _OomWhisper.armed == {"load": 0, "generate": 0}
