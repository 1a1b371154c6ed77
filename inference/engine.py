"""The transcription engine: audio file in, normalised transcript out.

decode (streaming, :mod:`.audio`) → plan chunks at silences (:mod:`.chunking`)
→ whisper.cpp per chunk (:mod:`.whispercpp`) → absolute segments and words →
normalise (:mod:`.normalize`). This is the one pipeline the CLI, the local
server and the cluster worker all run; the HTTP layer never imports it
directly but goes through the ``ModelRuntime`` port.

Parallel decoding: with ``parallelism = N`` the engine holds N whisper
contexts (N copies of the weights, each with its own state) and decodes N
chunks at once; whisper.cpp releases the GIL while it computes. Chunks are
independent (no prompt carried across chunks), so with greedy decoding the
result is identical to the sequential path, in the same order. (Beam search
is not bit-reproducible even sequentially: whisper.cpp's reused state makes a
chunk's beams depend on what that context decoded before.) Unset, N is
``GPU_DEFAULT_PARALLELISM`` on a GPU and 1 on the CPU (docs/benchmarks-gpu.md).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from whisperop.core.errors import JobCancelled
from whisperop.core.models import Segment, Task, TranscriptionResult, Word
from whisperop.core.settings import GPU_DEFAULT_PARALLELISM, EngineSettings
from whisperop.inference.audio import SAMPLE_RATE, DecodedAudio, decode_audio
from whisperop.inference.chunking import Chunk, ChunkingConfig, plan_chunks
from whisperop.inference.normalize import SpeechMap, normalize
from whisperop.inference.whispercpp import DecodeOptions, RawSegment, WhisperContext

log = logging.getLogger("whisperop.engine")

GPU_MAX_THREADS_PER_STREAM = 4

MIN_CALL_SAMPLES = SAMPLE_RATE  # whisper.cpp refuses inputs under 100 ms; pad short chunks to 1 s


@dataclass(frozen=True)
class Progress:
    chunk: int  # chunks done
    chunks_total: int

    @property
    def percent(self) -> int:
        return 100 if self.chunks_total == 0 else int(100 * self.chunk / self.chunks_total)


@dataclass(frozen=True)
class TranscribeRequest:
    language: str | None = None  # None = auto-detect
    task: Task = Task.transcribe
    beam_size: int | None = None  # None = engine default


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


class _ThrottledCancel:
    """The abort callback runs inside ggml's compute loop; the user's check may
    be a database read, so it is consulted at most every ``interval`` s."""

    def __init__(self, check: CancelCheck | None, interval: float = 0.25) -> None:
        self._check = check
        self._interval = interval
        self._next = 0.0
        self.cancelled = False

    def __call__(self, force: bool = False) -> bool:
        if self._check is None or self.cancelled:
            return self.cancelled
        now = time.monotonic()
        if force or now >= self._next:
            self._next = now + self._interval
            self.cancelled = bool(self._check())
        return self.cancelled


class WhisperEngine:
    """A loaded whisper model (one or more contexts) plus the pipeline around it."""

    def __init__(self, model_path: str | Path, settings: EngineSettings | None = None, parallelism: int | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.model_path = Path(model_path)
        s = self.settings
        t0 = time.perf_counter()
        # Flash attention unset: on, GPU and CPU alike. On the GPU it is faster
        # and smaller; on this project's 2-core CPU it cut whisper base's
        # encoder pass by 25 % (1.55 s → 1.17 s per 30 s window, q8_0) and sped
        # a 5-minute job up 19 % at +0.2 WER points (docs/benchmarks.md).
        self.flash_attn = True if s.flash_attn is None else s.flash_attn
        first = WhisperContext(self.model_path, s.use_gpu, s.cuda_device, self.flash_attn)
        self.backend = first.backend
        # PARALLELISM unset (0): several decoders on a GPU, one on the CPU
        # (where the threads are better spent inside one decode).
        wanted = parallelism or s.parallelism
        self.parallelism = max(1, wanted) if wanted else (GPU_DEFAULT_PARALLELISM if self.backend != "CPU" else 1)
        self.load_secs = time.perf_counter() - t0
        self._contexts_lock = threading.Lock()
        self._contexts: list[WhisperContext] = [first]
        self._pool: queue.Queue[WhisperContext] = queue.Queue()
        self._closed = False
        self._all_loaded = threading.Event()
        t1 = time.perf_counter()
        try:
            self._warm_up(first)
        except BaseException:
            first.close()
            raise
        self.warmup_secs = time.perf_counter() - t1
        self._pool.put(first)
        # The engine is ready now, on one context: that is the scale-from-zero
        # cost. The other N-1 contexts load behind it and join the pool as they
        # come (jobs already running pick them up at their next chunk), so N
        # streams do not make the first job wait N loads.
        self.all_loaded_secs: float | None = None
        self._loader: threading.Thread | None = None
        if self.parallelism > 1:
            self._loader = threading.Thread(target=self._load_extra_contexts, args=(t0,), name="whisper-loader", daemon=True)
            self._loader.start()
        else:
            self._mark_all_loaded(t0)
        log.info(
            "model loaded",
            extra={"model": str(self.model_path), "backend": self.backend, "load_secs": round(self.load_secs, 3),
                   "warmup_secs": round(self.warmup_secs, 3), "parallelism": self.parallelism, "flash_attn": self.flash_attn},
        )

    def _mark_all_loaded(self, t0: float) -> None:
        self.all_loaded_secs = time.perf_counter() - t0
        self._all_loaded.set()

    def _load_extra_contexts(self, t0: float) -> None:
        """Load and warm contexts 2..N one after another, in the background.

        Running out of GPU memory for an extra stream is not an error: the
        engine keeps the streams it has (``parallelism`` drops to that number)
        and says so in the log. Only the first context's failure fails a load."""
        s = self.settings
        try:
            while True:
                with self._contexts_lock:
                    if self._closed or len(self._contexts) >= self.parallelism:
                        return
                try:
                    ctx = WhisperContext(self.model_path, s.use_gpu, s.cuda_device, self.flash_attn)
                    self._warm_up(ctx)
                except Exception as exc:  # noqa: BLE001 - degrade to the streams loaded so far
                    with self._contexts_lock:
                        loaded = len(self._contexts)
                        self.parallelism = loaded
                    log.warning("extra decode stream not loaded; continuing with fewer",
                                extra={"streams": loaded, "error": str(exc)})
                    return
                with self._contexts_lock:
                    if self._closed:
                        ctx.close()
                        return
                    self._contexts.append(ctx)
                    self._pool.put(ctx)
        finally:
            self._mark_all_loaded(t0)
            log.info("decode streams loaded", extra={"streams": len(self._contexts),
                                                     "all_loaded_secs": round(self.all_loaded_secs or 0.0, 3)})

    def wait_all_loaded(self, timeout: float | None = None) -> bool:
        """Block until every decode stream is loaded (or the loader gave up)."""
        return self._all_loaded.wait(timeout)

    @property
    def streams_loaded(self) -> int:
        with self._contexts_lock:
            return len(self._contexts)

    # ── lifecycle ────────────────────────────────────────────────────────

    def _threads_per_context(self) -> int:
        """CPU threads per whisper.cpp call. ``WHISPER_THREADS`` set: split
        evenly over the streams. Unset on a GPU with several streams: twice the
        cores over the streams, at most 4 each (the threads only feed the GPU —
        mel, sampling, kernel launches — and wait on it, so 2× oversubscription
        keeps it busier: +20–24 % at 8 streams on 16 cores, docs/benchmarks-gpu.md)."""
        if self.settings.threads:
            return max(1, self.settings.threads // self.parallelism)
        cores = os.cpu_count() or 1
        if self.backend != "CPU" and self.parallelism > 1:
            return max(1, min(GPU_MAX_THREADS_PER_STREAM, 2 * cores // self.parallelism))
        return max(1, cores // self.parallelism)

    def _warm_up(self, ctx: WhisperContext) -> None:
        """One inference right after a context loads: the first real job then
        runs on initialised buffers (the original saw 0-segment first jobs)."""
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        opts = DecodeOptions(language="en", n_threads=self._threads_per_context(), word_timestamps=False, temperature_inc=0.0)
        ctx.full(noise, opts)

    def close(self) -> None:
        # only reachable on a constructed engine: __init__ either returns one or raises
        with self._contexts_lock:
            if self._closed:
                return
            self._closed = True
        if self._loader is not None:
            self._loader.join()  # at most the one load in flight
        for ctx in self._contexts:
            ctx.close()

    @contextmanager
    def _context(self) -> Iterator[WhisperContext]:
        ctx = self._pool.get()
        try:
            yield ctx
        finally:
            self._pool.put(ctx)

    # ── transcription ────────────────────────────────────────────────────

    def decode_options(self, request: TranscribeRequest) -> DecodeOptions:
        s = self.settings
        return DecodeOptions(
            language=request.language,
            translate=request.task == Task.translate,
            beam_size=request.beam_size or s.beam_size,
            temperature=s.temperature,
            temperature_inc=s.temperature_inc,
            word_timestamps=s.word_timestamps,
            n_threads=self._threads_per_context(),
        )

    def chunking_config(self) -> ChunkingConfig:
        s = self.settings
        return ChunkingConfig(max_secs=s.chunk_max_secs, min_secs=s.chunk_min_secs, min_silence_secs=s.min_silence_secs)

    def transcribe_file(
        self,
        path: str | os.PathLike[str],
        request: TranscribeRequest = TranscribeRequest(),
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_decoded: Callable[[float, int], None] | None = None,
    ) -> TranscriptionResult:
        """Transcribe an audio file. ``on_decoded(duration_secs, chunks_total)``
        is called once the audio is decoded and planned (before any inference)."""
        tmp_dir = str(self.settings.tmp_dir) if self.settings.tmp_dir else None
        with decode_audio(path, self.settings.max_audio_secs, tmp_dir) as audio:
            chunks = plan_chunks(audio.frame_db, audio.n_samples, self.chunking_config())
            if on_decoded:
                on_decoded(audio.duration_secs, len(chunks))
            return self.transcribe_chunks(audio, chunks, request, on_progress, should_cancel)

    def transcribe_chunks(
        self,
        audio: DecodedAudio,
        chunks: list[Chunk],
        request: TranscribeRequest = TranscribeRequest(),
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> TranscriptionResult:
        cancel = _ThrottledCancel(should_cancel)
        opts = self.decode_options(request)
        total = len(chunks)
        results: dict[int, list[Segment]] = {}
        language = request.language
        done = 0

        def run(chunk: Chunk, o: DecodeOptions) -> tuple[list[Segment], str]:
            if cancel(force=True):  # chunk boundary: always ask
                raise JobCancelled()
            pcm = audio.read(chunk.start, chunk.end)
            if pcm.size < MIN_CALL_SAMPLES:
                pcm = np.concatenate([pcm, np.zeros(MIN_CALL_SAMPLES - pcm.size, dtype=np.float32)])
            with self._context() as ctx:
                raw, lang = ctx.full(pcm, o, abort=cancel)
            if cancel(force=True):
                raise JobCancelled()
            return to_segments(raw, chunk), lang

        def finished(chunk: Chunk, segs: list[Segment]) -> None:
            nonlocal done
            results[chunk.index] = segs
            done += 1
            if on_progress:
                on_progress(Progress(done, total))

        remaining = list(chunks)
        if remaining and language is None:
            # Detect once, on the first chunk, then hold the language for the
            # rest: a job gets one consistent language (and N-1 fewer detections).
            first = remaining.pop(0)
            segs, language = run(first, opts)
            finished(first, segs)
        opts = replace(opts, language=language)
        if self.parallelism == 1 or len(remaining) <= 1:
            for chunk in remaining:
                segs, _ = run(chunk, opts)
                finished(chunk, segs)
        else:
            with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="whisper") as pool:
                futures = [(chunk, pool.submit(run, chunk, opts)) for chunk in remaining]
                try:
                    for chunk, fut in futures:
                        segs, _ = fut.result()
                        finished(chunk, segs)
                except BaseException:
                    cancel.cancelled = True
                    for _, fut in futures:
                        fut.cancel()
                    raise
        ordered = [seg for i in sorted(results) for seg in results[i]]
        clean = normalize(ordered, SpeechMap.from_frame_db(audio.frame_db))
        return TranscriptionResult(
            language=language,
            duration_secs=round(audio.duration_secs, 3),
            segments=clean.segments,
            chunks=total,
            removed=clean.removed,
        )


def to_segments(raw: list[RawSegment], chunk: Chunk) -> list[Segment]:
    """Whisper's chunk-relative centiseconds → absolute seconds, clamped to the chunk,
    with tokens merged into words (a word starts at a token beginning with a space)."""
    offset = chunk.start_secs
    lo, hi = chunk.start_secs, chunk.end_secs

    def t(cs: int) -> float:
        return round(min(max(offset + cs / 100.0, lo), hi), 3)

    out: list[Segment] = []
    for seg in raw:
        text = seg.text.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        words: list[Word] = []
        buf = b""
        start = end = 0
        probs: list[float] = []

        def flush() -> None:
            word = buf.decode("utf-8", errors="replace").strip()
            if word:
                words.append(Word(text=word, start=t(start), end=t(max(end, start)), probability=round(float(np.mean(probs)), 4)))

        for tok in seg.tokens:
            starts_word = tok.text.startswith(b" ") or not buf
            if starts_word and buf.strip():
                flush()
                buf, probs = b"", []
            if not buf:
                start = tok.t0
            buf += tok.text
            end = tok.t1
            probs.append(min(max(tok.p, 0.0), 1.0))
        if buf.strip():
            flush()
        out.append(Segment(index=0, start=t(seg.t0), end=t(max(seg.t1, seg.t0)), text=text, words=words))
    return out
