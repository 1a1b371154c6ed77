"""Parallel decoding (``parallelism = N``: N whisper.cpp contexts, N chunks at
once) gives exactly the sequential result: same segments, words and times, in
the same order; progress still counts up one chunk at a time; cancellation
still stops the job.

Each context gets the same number of CPU threads in both runs
(``WHISPER_THREADS = N × 1``), so every chunk is computed the same way and any
difference would come from the orchestration under test.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from whisperop.core.errors import JobCancelled
from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import SAMPLE_RATE, decode_audio, write_wav
from whisperop.inference.engine import Progress, TranscribeRequest, WhisperEngine
from whisperop.inference.whispercpp import WhisperContext


def bursts(path: Path, n: int, speech_secs: float = 6.0, pause_secs: float = 1.0, seed: int = 0) -> Path:
    """n bursts of noise of different loudness, cut by silences: n chunks."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n):
        parts += [(rng.standard_normal(int(speech_secs * SAMPLE_RATE)) * (0.05 + 0.05 * (i % 4))).astype(np.float32),
                  np.zeros(int(pause_secs * SAMPLE_RATE), np.float32)]
    write_wav(path, np.concatenate(parts))
    return path


def settings(parallelism: int, **kw: object) -> EngineSettings:
    return EngineSettings(USE_GPU=False, WHISPER_THREADS=parallelism, PARALLELISM=parallelism, **kw)


def as_tuples(result) -> list:
    return [(s.index, s.start, s.end, s.text, [(w.text, w.start, w.end, w.probability) for w in s.words]) for s in result.segments]


class ConcurrencyProbe:
    """Wraps WhisperContext.full to count calls in flight at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.calls = 0
        original = WhisperContext.full
        probe = self

        def full(ctx: WhisperContext, *args: object, **kwargs: object):
            with probe.lock:
                probe.active += 1
                probe.calls += 1
                probe.peak = max(probe.peak, probe.active)
            try:
                return original(ctx, *args, **kwargs)
            finally:
                with probe.lock:
                    probe.active -= 1

        monkeypatch.setattr(WhisperContext, "full", full)


@pytest.fixture(scope="module")
def sequential(tiny_model: Path) -> WhisperEngine:
    eng = WhisperEngine(tiny_model, settings(1, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def parallel(tiny_model: Path) -> WhisperEngine:
    eng = WhisperEngine(tiny_model, settings(4, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    assert eng.wait_all_loaded(120)
    yield eng
    eng.close()


def test_parallel_engine_holds_one_context_per_stream(parallel: WhisperEngine, sequential: WhisperEngine) -> None:
    assert parallel.parallelism == 4 and len(parallel._contexts) == 4
    assert sequential.parallelism == 1 and len(sequential._contexts) == 1
    assert parallel._threads_per_context() == sequential._threads_per_context() == 1


@pytest.mark.parametrize("language", ["en", None])
def test_parallel_output_is_identical_to_sequential(
    sequential: WhisperEngine, parallel: WhisperEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, language: str | None
) -> None:
    audio = bursts(tmp_path / "b.wav", 9)
    seq_progress: list[Progress] = []
    par_progress: list[Progress] = []
    seq = sequential.transcribe_file(audio, TranscribeRequest(language=language), on_progress=seq_progress.append)
    probe = ConcurrencyProbe(monkeypatch)
    par = parallel.transcribe_file(audio, TranscribeRequest(language=language), on_progress=par_progress.append)

    assert seq.chunks == par.chunks == 9
    assert par.language == seq.language
    assert as_tuples(par) == as_tuples(seq)
    assert [s.index for s in par.segments] == list(range(len(par.segments)))
    starts = [s.start for s in par.segments]
    assert starts == sorted(starts), "segments must come back in audio order"
    assert [p.chunk for p in par_progress] == [p.chunk for p in seq_progress] == list(range(1, 10))
    assert probe.calls == 9
    assert probe.peak >= 2, "chunks were not decoded concurrently"


def test_parallel_beam_search_keeps_order(tiny_model: Path, tmp_path: Path) -> None:
    """Beam search runs in parallel too, in order. Its content is not compared:
    whisper.cpp's beam search on a reused state depends on what that state
    decoded before (the same engine run twice differs with random weights), so
    it is not reproducible even sequentially; greedy decoding is (above)."""
    audio = bursts(tmp_path / "b.wav", 5, seed=1)
    eng = WhisperEngine(tiny_model, settings(3, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0, BEAM_SIZE=3))
    try:
        seen: list[Progress] = []
        result = eng.transcribe_file(audio, TranscribeRequest(language="en"), on_progress=seen.append)
    finally:
        eng.close()
    assert result.chunks == 5 and [p.chunk for p in seen] == [1, 2, 3, 4, 5]
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and [s.index for s in result.segments] == list(range(len(starts)))


def test_parallelism_default_is_one_on_cpu_and_gpu_default_on_a_gpu(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from whisperop.core.settings import GPU_DEFAULT_PARALLELISM

    cpu = WhisperEngine(tiny_model, EngineSettings(USE_GPU=False, WHISPER_THREADS=2))
    try:
        assert cpu.parallelism == 1 and cpu.backend == "CPU" and cpu.flash_attn is True
    finally:
        cpu.close()
    explicit = WhisperEngine(tiny_model, EngineSettings(USE_GPU=False, PARALLELISM=3))
    try:
        assert explicit.wait_all_loaded(120)
        assert explicit.parallelism == 3 and len(explicit._contexts) == 3
    finally:
        explicit.close()
    # a context that whisper.cpp put on a GPU: the engine opens the GPU default
    monkeypatch.setattr(WhisperContext, "backend", property(lambda self: "CUDA"))
    gpu = WhisperEngine(tiny_model, EngineSettings(USE_GPU=False, WHISPER_THREADS=GPU_DEFAULT_PARALLELISM))
    try:
        assert gpu.wait_all_loaded(120)
        assert gpu.parallelism == GPU_DEFAULT_PARALLELISM == len(gpu._contexts) == 8
    finally:
        gpu.close()


def test_backend_is_read_from_the_gpu_init_line(tiny_model: Path) -> None:
    ctx = WhisperContext(tiny_model, use_gpu=False)
    try:
        ctx.load_log = ["ggml_cuda_init: found 1 CUDA devices (Total VRAM: 81079 MiB):", "whisper_backend_init_gpu: no GPU found"]
        assert ctx.backend == "CPU"  # a CUDA build logs ggml_cuda_init for CPU contexts too
        ctx.load_log = ["whisper_model_load:        CUDA0 total size =   147.37 MB", "whisper_backend_init_gpu: using CUDA0 backend"]
        assert ctx.backend == "CUDA"
        ctx.load_log = ["whisper_backend_init_gpu: using Vulkan0 backend"]
        assert ctx.backend == "Vulkan"
    finally:
        ctx.close()


def test_parallel_more_streams_than_chunks(parallel: WhisperEngine, sequential: WhisperEngine, tmp_path: Path) -> None:
    audio = bursts(tmp_path / "b.wav", 2)
    assert as_tuples(parallel.transcribe_file(audio, TranscribeRequest(language="en"))) == as_tuples(
        sequential.transcribe_file(audio, TranscribeRequest(language="en"))
    )


def test_parallel_cancel_stops_the_job(parallel: WhisperEngine, tmp_path: Path) -> None:
    audio = bursts(tmp_path / "b.wav", 12)
    done: list[int] = []
    with pytest.raises(JobCancelled):
        parallel.transcribe_file(audio, TranscribeRequest(language="en"), on_progress=lambda p: done.append(p.chunk),
                                 should_cancel=lambda: len(done) >= 2)
    assert 2 <= len(done) < 12
    # the engine is still usable afterwards (every context went back to the pool)
    assert parallel._pool.qsize() == parallel.parallelism
    assert parallel.transcribe_file(bursts(tmp_path / "c.wav", 1), TranscribeRequest(language="en")).chunks == 1


@pytest.mark.slow
def test_real_model_parallel_identical_to_sequential(base_model: Path, jfk_wav: Path, tmp_path: Path) -> None:
    """The real base model on a short multi-chunk file (jfk.wav four times,
    cut by pauses): the same words, times and order at 1 and 2 streams."""
    with decode_audio(jfk_wav) as a:
        jfk = a.read()
    gap = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    path = tmp_path / "jfk4.wav"
    write_wav(path, np.concatenate([jfk, gap, jfk[: jfk.size * 2 // 3], gap, jfk, gap, jfk]))
    out = []
    for n in (1, 2):
        eng = WhisperEngine(base_model, settings(n, CHUNK_MAX_SECS=15))
        try:
            out.append(eng.transcribe_file(path, TranscribeRequest(language=None)))
        finally:
            eng.close()
    seq, par = out
    assert seq.chunks == par.chunks >= 4
    assert seq.language == par.language == "en"
    assert as_tuples(par) == as_tuples(seq)
    assert "ask not what your country can do for you" in " ".join(s.text for s in par.segments).lower()


class SlowExtraLoads:
    """Makes every context after the first take ``delay`` s longer to load (or wait for ``gate``),
    and the ``fail_at``-th (1-based) fail as if the GPU were full."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float, fail_at: int | None = None,
                 gate: threading.Event | None = None) -> None:
        from whisperop.core.errors import GpuMemoryError

        self.count = 0
        original = WhisperContext.__init__
        probe = self

        def init(ctx: WhisperContext, *args: object, **kwargs: object) -> None:
            probe.count += 1
            n = probe.count
            if n > 1:
                time.sleep(delay)
                if gate is not None:
                    gate.wait(30)
            if fail_at is not None and n == fail_at:
                raise GpuMemoryError("not enough GPU memory to load the model (test)")
            original(ctx, *args, **kwargs)

        monkeypatch.setattr(WhisperContext, "__init__", init)


def test_engine_is_ready_on_one_stream_while_the_others_load(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scale-from-zero pays one context's load + warm-up, not N: the engine is
    usable as soon as the first stream is warm; the rest join the pool later."""
    gate = threading.Event()  # the extra streams load only once the test opens it: no wall-clock bound
    SlowExtraLoads(monkeypatch, delay=0.0, gate=gate)
    t0 = time.perf_counter()
    eng = WhisperEngine(tiny_model, settings(4, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    try:
        # a constructor that waited for the extra streams would have sat out the gate's 30 s
        # and come back with all four loaded
        assert eng.streams_loaded == 1 and not eng.wait_all_loaded(0), "the constructor waited for the extra streams"
        first = eng.transcribe_file(bursts(tmp_path / "a.wav", 2), TranscribeRequest(language="en"))
        assert first.chunks == 2 and eng.streams_loaded == 1  # served by the one warm stream
        held = time.perf_counter() - t0
        gate.set()
        assert eng.wait_all_loaded(60)
        assert eng.streams_loaded == 4 == eng.parallelism and eng._pool.qsize() == 4
        assert eng.all_loaded_secs is not None and eng.all_loaded_secs >= held - 0.1
    finally:
        eng.close()


def test_engine_keeps_the_streams_it_could_load_when_the_gpu_is_full(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SlowExtraLoads(monkeypatch, delay=0.0, fail_at=3)
    eng = WhisperEngine(tiny_model, settings(4, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    try:
        assert eng.wait_all_loaded(60)
        assert eng.streams_loaded == 2 == eng.parallelism
        result = eng.transcribe_file(bursts(tmp_path / "b.wav", 5), TranscribeRequest(language="en"))
        assert result.chunks == 5 and eng._pool.qsize() == 2
    finally:
        eng.close()


def test_close_while_streams_are_loading_frees_everything(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SlowExtraLoads(monkeypatch, delay=0.3)
    eng = WhisperEngine(tiny_model, settings(4, TEMPERATURE_INC=0.0))
    eng.close()  # the loader finishes the load in flight, then stops
    assert eng.wait_all_loaded(10)
    assert eng.streams_loaded <= 2
    assert all(ctx._ctx is None for ctx in eng._contexts)


def test_threads_per_stream_policy(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU, several streams, WHISPER_THREADS unset: 2 × cores / streams, at most
    4 (measured faster than an even split, docs/benchmarks-gpu.md); set: an
    even split; CPU: the cores split evenly."""
    import whisperop.inference.engine as engine_mod

    eng = WhisperEngine(tiny_model, EngineSettings(USE_GPU=False, PARALLELISM=1))
    try:
        monkeypatch.setattr(engine_mod.os, "cpu_count", lambda: 16)
        assert eng._threads_per_context() == 16  # CPU, one stream: every core
        eng.parallelism = 8
        assert eng._threads_per_context() == 2  # CPU: an even split
        eng.backend = "CUDA"
        assert eng._threads_per_context() == 4  # GPU: 2 × 16 / 8
        eng.parallelism = 16
        assert eng._threads_per_context() == 2
        eng.parallelism = 2
        assert eng._threads_per_context() == engine_mod.GPU_MAX_THREADS_PER_STREAM == 4
        monkeypatch.setattr(engine_mod.os, "cpu_count", lambda: 4)
        eng.parallelism = 8
        assert eng._threads_per_context() == 1
        eng.settings = EngineSettings(USE_GPU=False, WHISPER_THREADS=16)
        eng.parallelism = 8
        assert eng._threads_per_context() == 2  # explicit: an even split, GPU or not
    finally:
        eng.parallelism = 1
        eng.close()
