"""The whole pipeline with the tiny random-weight model: flow, progress,
cancellation and error typing (quality is covered by tests/real)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from whisperop.core.errors import AudioDecodeError, GpuMemoryError, JobCancelled, ModelLoadError
from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import SAMPLE_RATE, write_wav
from whisperop.inference.engine import Progress, TranscribeRequest, WhisperEngine
from whisperop.inference.whispercpp import _LogRouter, WhisperContext
from tests.support.audio import noise_bursts_wav


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> WhisperEngine:
    eng = WhisperEngine(tiny_model, EngineSettings(USE_GPU=False, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    yield eng
    eng.close()


def test_progress_is_reported_per_chunk_and_times_are_absolute(engine: WhisperEngine, tmp_path: Path) -> None:
    audio = noise_bursts_wav(tmp_path / "b.wav", 4)
    seen: list[Progress] = []
    decoded: list[tuple[float, int]] = []
    result = engine.transcribe_file(audio, TranscribeRequest(language="en"), on_progress=seen.append, on_decoded=lambda d, n: decoded.append((d, n)))
    assert decoded == [(pytest.approx(36.0, abs=0.01), 4)]
    assert [p.chunk for p in seen] == [1, 2, 3, 4] and seen[-1].percent == 100
    assert result.chunks == 4 and result.language == "en" and result.duration_secs == pytest.approx(36.0, abs=0.01)
    for s in result.segments:
        assert 0 <= s.start <= s.end <= 36.0
    assert [s.index for s in result.segments] == list(range(len(result.segments)))


def test_all_silence_gives_zero_segments(engine: WhisperEngine, tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(SAMPLE_RATE * 5, np.float32))
    result = engine.transcribe_file(path)
    assert result.segments == [] and result.chunks == 0 and result.duration_secs == 5.0


def test_auto_language_is_detected_and_reported(engine: WhisperEngine, tmp_path: Path) -> None:
    result = engine.transcribe_file(noise_bursts_wav(tmp_path / "b.wav", 1), TranscribeRequest(language=None))
    assert result.language and len(result.language) in (2, 3)


def test_cancel_between_chunks(engine: WhisperEngine, tmp_path: Path) -> None:
    audio = noise_bursts_wav(tmp_path / "b.wav", 5)
    done: list[int] = []
    with pytest.raises(JobCancelled):
        engine.transcribe_file(audio, TranscribeRequest(language="en"), on_progress=lambda p: done.append(p.chunk), should_cancel=lambda: len(done) >= 2)
    assert done == [1, 2]


def test_cancel_aborts_the_inflight_whisper_call(engine: WhisperEngine, tmp_path: Path) -> None:
    """The abort callback stops whisper.cpp inside a chunk. One 40 s chunk of
    noise with temperature fallback takes seconds to decode; cancelled 0.2 s
    after it starts, the call must return in well under half that time."""
    import time

    path = tmp_path / "long.wav"
    write_wav(path, (np.random.default_rng(1).standard_normal(SAMPLE_RATE * 40) * 0.2).astype(np.float32))
    slow = WhisperEngine(engine.model_path, EngineSettings(USE_GPU=False, CHUNK_MAX_SECS=60, TEMPERATURE_INC=0.2))
    try:
        t0 = time.perf_counter()
        slow.transcribe_file(path, TranscribeRequest(language="en"))
        baseline = time.perf_counter() - t0

        flag = threading.Event()
        timer = threading.Timer(0.2, flag.set)
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(JobCancelled):
            slow.transcribe_file(path, TranscribeRequest(language="en"), should_cancel=flag.is_set)
        cancelled = time.perf_counter() - t0
    finally:
        slow.close()
    assert baseline > 1.0, "the uncancelled decode must be long enough to tell an abort apart"
    assert cancelled < baseline * 0.5, f"cancel took {cancelled:.2f}s of a {baseline:.2f}s decode"


def test_decode_errors_surface_as_typed_errors(engine: WhisperEngine, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEfmt garbage" * 50)
    with pytest.raises(AudioDecodeError):
        engine.transcribe_file(junk)


def test_translate_task_runs(engine: WhisperEngine, tmp_path: Path) -> None:
    from whisperop.core.models import Task

    result = engine.transcribe_file(noise_bursts_wav(tmp_path / "b.wav", 1), TranscribeRequest(language="de", task=Task.translate))
    assert result.language == "de"


def test_gpu_memory_failures_are_told_apart(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    """whisper.cpp returns NULL on failure; the load's log lines say why."""
    import whisperop.inference.whispercpp as wc

    def fake_init(path: str, params: object) -> object:
        router = wc.log_router()
        router._callback(4, "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 150.00 MiB on device 0: cudaMalloc failed: out of memory\n")
        router._callback(4, "whisper_init_with_params_no_state: failed to load model\n")
        return object()

    monkeypatch.setattr(wc.pw, "whisper_init_from_file_with_params", fake_init)
    with pytest.raises(GpuMemoryError, match="GPU memory"):
        WhisperContext(tiny_model, use_gpu=True)

    def fake_init_other(path: str, params: object) -> object:
        wc.log_router()._callback(4, "whisper_model_load: tensor 'x' has wrong size in model file\n")
        return object()

    monkeypatch.setattr(wc.pw, "whisper_init_from_file_with_params", fake_init_other)
    with pytest.raises(ModelLoadError) as info:
        WhisperContext(tiny_model, use_gpu=True)
    assert not isinstance(info.value, GpuMemoryError)


def test_log_router_is_a_singleton() -> None:
    import whisperop.inference.whispercpp as wc

    assert isinstance(wc.log_router(), _LogRouter) and wc.log_router() is wc.log_router()
