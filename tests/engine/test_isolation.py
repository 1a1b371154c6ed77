"""The isolated engine (issue 14): whisper.cpp in a supervised child process.

Real child processes running the real engine on the tiny random-weight model;
the deaths are real signals the child sends itself (``WHISPEROP_FAULT_CHILD_DIE``,
armed by this process for the next child) or a real ``kill`` from here.
What is checked: the same result as in-process, callbacks and checkpoints
across the pipe, cancel, and what each death becomes (``GpuMemoryError`` for
out-of-memory lines or a signal while loading, ``ModelLoadError`` for another
death while loading, ``EngineCrashed`` during or before a job), the child's
last lines in the message, and a resumed job that decodes each chunk once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from whisperop.core.gpu import gpu_memory
from whisperop.core.errors import EngineCrashed, GpuMemoryError, JobCancelled, ModelLoadError
from whisperop.core.settings import EngineSettings
from whisperop.inference import isolated
from whisperop.inference.engine import TranscribeRequest, WhisperEngine
from whisperop.inference.isolated import IsolatedEngine, VramNeed, make_engine, streams_that_fit
from tests.engine.test_limits_checkpoints import MemoryCheckpoint
from tests.support.audio import noise_bursts_wav
from tests.support.decode_log import DecodeLog, decodes  # noqa: F401  (fixture)

BASE = {"USE_GPU": False, "CHUNK_MAX_SECS": 10, "TEMPERATURE_INC": 0.0}
EN = TranscribeRequest(language="en")


def _settings(**env: object) -> EngineSettings:
    return EngineSettings(**{**BASE, **env})  # type: ignore[arg-type]


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Sets WHISPEROP_FAULT_CHILD_DIE for this test, with fresh counts."""
    isolated._fault_used.clear()

    def arm(spec: str) -> None:
        monkeypatch.setenv(isolated.FAULT_ENV, spec)

    yield arm
    isolated._fault_used.clear()


def test_same_result_callbacks_and_checkpoint_as_in_process(tiny_model: Path, tmp_path: Path) -> None:
    audio = noise_bursts_wav(tmp_path / "b.wav", 3)
    local = WhisperEngine(tiny_model, _settings())
    try:
        expected = local.transcribe_file(audio, EN)
    finally:
        local.close()
    eng = make_engine(tiny_model, _settings(ENGINE_ISOLATION="process"))
    assert isinstance(eng, IsolatedEngine)
    progress: list[int] = []
    decoded: list[tuple[float, int]] = []
    cp = MemoryCheckpoint()
    try:
        assert eng.alive and eng.backend == "CPU" and eng.parallelism == 1
        result = eng.transcribe_file(audio, EN, on_progress=lambda p: progress.append(p.chunk),
                                     on_decoded=lambda d, n: decoded.append((d, n)), checkpoint=cp)
    finally:
        eng.close()
    assert result == expected
    assert progress == [1, 2, 3] and decoded == [(27.0, 3)]
    assert sorted(cp.records) == [0, 1, 2] and len(cp.plan() or []) == 3
    assert not eng.alive, "close ends the child"


def test_off_is_the_in_process_engine(tiny_model: Path) -> None:
    eng = make_engine(tiny_model, _settings(ENGINE_ISOLATION="off"))
    try:
        assert isinstance(eng, WhisperEngine)
    finally:
        eng.close()


def test_auto_isolates_on_a_gpu_only() -> None:
    assert isolated.isolation_on(_settings(USE_GPU=True)) == (gpu_memory() is not None), "auto: process where NVML sees a GPU"
    assert not isolated.isolation_on(_settings(USE_GPU=False)), "auto without the GPU: in-process"
    assert isolated.isolation_on(_settings(USE_GPU=False, ENGINE_ISOLATION="process"))
    assert not isolated.isolation_on(_settings(USE_GPU=True, ENGINE_ISOLATION="off"))


def test_cancel_crosses_the_pipe(tiny_model: Path, tmp_path: Path) -> None:
    # 40 chunks: the tiny model needs seconds for them, far longer than a cancel takes to cross the
    # pipe (polled every 0.25 s); with 4 it finished first on a quiet machine
    audio = noise_bursts_wav(tmp_path / "b.wav", 40)
    eng = IsolatedEngine(tiny_model, _settings())
    done: list[int] = []
    try:
        with pytest.raises(JobCancelled):
            eng.transcribe_file(audio, EN, on_progress=lambda p: done.append(p.chunk), should_cancel=lambda: len(done) >= 1)
        assert done and done[-1] < 40
        assert eng.alive, "a cancelled job leaves the engine serving"
        assert eng.transcribe_file(audio, EN).chunks == 40
    finally:
        eng.close()


@pytest.mark.parametrize("kind,sig", [("segv", "SIGSEGV"), ("abrt", "SIGABRT")])
def test_a_signal_while_loading_is_out_of_gpu_memory_then_the_next_load_works(
        tiny_model: Path, fault, kind: str, sig: str) -> None:
    fault(f"load:{kind}:1")
    with pytest.raises(GpuMemoryError) as info:
        IsolatedEngine(tiny_model, _settings())
    assert f"engine process killed by {sig}" in str(info.value)
    assert info.value.vram_needed_mb is not None and info.value.vram_needed_mb >= 1
    eng = IsolatedEngine(tiny_model, _settings())  # the count is spent: a fresh child loads
    eng.close()


def test_out_of_memory_lines_then_exit_are_out_of_gpu_memory(tiny_model: Path, fault) -> None:
    fault("load:oom:1")
    with pytest.raises(GpuMemoryError) as info:
        IsolatedEngine(tiny_model, _settings())
    msg = str(info.value)
    assert msg.startswith("out of GPU memory while loading") and "exited with code 1" in msg
    assert "cudaMalloc failed: out of memory" in msg and "failed to allocate CUDA0 buffer" in msg


def test_another_death_while_loading_is_a_load_error(tiny_model: Path, fault) -> None:
    fault("load:exit:1")
    with pytest.raises(ModelLoadError) as info:
        IsolatedEngine(tiny_model, _settings())
    assert not isinstance(info.value, GpuMemoryError)
    assert "exited with code 3" in str(info.value) and "exiting on purpose (test hook)" in str(info.value)


def test_a_python_load_error_keeps_its_type(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a model" * 10)
    with pytest.raises(ModelLoadError, match="bad magic"):
        IsolatedEngine(bad, _settings())


def test_death_during_a_job_keeps_the_checkpoint_and_a_new_engine_resumes(
        tiny_model: Path, tmp_path: Path, fault, decodes: DecodeLog) -> None:
    audio = noise_bursts_wav(tmp_path / "b.wav", 4)
    fault("job:abrt:1")
    cp = MemoryCheckpoint()
    eng = IsolatedEngine(tiny_model, _settings())
    try:
        with pytest.raises(EngineCrashed) as info:
            eng.transcribe_file(audio, EN, checkpoint=cp)
        assert "killed by SIGABRT" in str(info.value) and not info.value.oom
        assert not eng.alive
        with pytest.raises(EngineCrashed):  # found dead: the next job fails at once, nothing is sent
            eng.transcribe_file(audio, EN)
    finally:
        eng.close()
    assert sorted(cp.records) == [0], "the chunk reported before the death is checkpointed"
    assert decodes.chunks == [0]
    eng = IsolatedEngine(tiny_model, _settings())
    try:
        resumed = eng.transcribe_file(audio, EN, checkpoint=cp)
        whole = eng.transcribe_file(audio, EN)
    finally:
        eng.close()
    assert decodes.chunks == [0, 1, 2, 3] + [0, 1, 2, 3], "each chunk decoded once by the resumed job (then the whole run)"
    assert resumed == whole


def test_a_child_killed_while_idle_is_seen_at_once(tiny_model: Path, tmp_path: Path) -> None:
    eng = IsolatedEngine(tiny_model, _settings())
    try:
        os.kill(eng.child_pid, signal.SIGKILL)
        end = time.monotonic() + 30
        while eng.alive and time.monotonic() < end:
            time.sleep(0.05)
        assert not eng.alive
        with pytest.raises(EngineCrashed, match="killed by SIGKILL"):
            eng.transcribe_file(noise_bursts_wav(tmp_path / "b.wav", 1), EN)
    finally:
        eng.close()


def test_streams_that_fit_the_measured_need() -> None:
    # first stream 600 MB (+128 margin), each further one 460 MB
    need = VramNeed("NVIDIA H100 80GB HBM3", 600, 460)
    assert streams_that_fit(need, 20, 8) == 0
    assert streams_that_fit(need, 727, 8) == 0
    assert streams_that_fit(need, 728, 8) == 1
    assert streams_that_fit(need, 728 + 460, 8) == 2
    assert streams_that_fit(need, 80000, 8) == 8
    # further streams not measured yet: each counts as a first one
    assert streams_that_fit(VramNeed(None, 600, None), 728 + 599, 8) == 1
    assert streams_that_fit(VramNeed(None, 600, None), 728 + 600, 8) == 2


def test_the_measured_need_is_kept_per_gpu(tmp_path: Path) -> None:
    model = tmp_path / "ggml-x.bin"
    model.write_bytes(b"x")
    isolated.write_need(model, VramNeed("GPU A", 500, 300))
    assert isolated.vram_file(model).name == "ggml-x.bin.vram.json"
    assert isolated.read_need(model, "GPU A") == VramNeed("GPU A", 500, 300)
    assert isolated.read_need(model, "GPU B") is None, "measured on another GPU: measure again"
