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

from abc import ABC, abstractmethod

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from whisperop.core.errors import JobCancelled, ModelLoadError
from whisperop.core.checkpoints import Checkpoint, ChunkRecord
from whisperop.core.models import DegradedChunk, Segment, Task, TranscriptionResult, Word
from whisperop.core.settings import GPU_DEFAULT_PARALLELISM, EngineSettings
from whisperop.inference.audio import SAMPLE_RATE, DecodedAudio, decode_audio
from whisperop.inference.chunking import Chunk, ChunkingConfig, plan_chunks
from whisperop.inference.normalize import SpeechMap, normalize
from whisperop.inference.whispercpp import DecodeOptions, RawSegment, WhisperContext

if TYPE_CHECKING:
    from whisperop.inference.streamplan import EarlyDecodes

log = logging.getLogger("whisperop.engine")
T = TypeVar("T")

#: Audio decodes running at once in this process. Decoding is mostly GIL-bound
#: Python and numpy: 32 jobs of 120 s submitted at once, each decoding on its
#: own thread, had their first one decoded after 0.82–1.25 s and the median
#: after 2.8–3.6 s on this project's 2-core machine (one alone: 0.16 s), and no
#: job's chunk could reach a stream before; one at a time, the first was ready
#: after 0.16 s and the streams had work while the rest decoded. Two, so a
#: long file's decode does not hold every other job back.
AUDIO_DECODE_SLOTS = 2
_DECODE_SLOTS = threading.BoundedSemaphore(AUDIO_DECODE_SLOTS)

GPU_MAX_THREADS_PER_STREAM = 4

MIN_CALL_SAMPLES = SAMPLE_RATE  # whisper.cpp refuses inputs under 100 ms; pad short chunks to 1 s
WINDOW_SECS = 30.0  # whisper's input window


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
    prompt: str | None = None  # whisper.cpp initial prompt (style, spelling, names), given to every chunk
    temperature: float | None = None  # None = engine default
    chunk_time_limit_factor: float | None = None  # None = CHUNK_TIME_LIMIT_FACTOR
    time_limit_secs: float | None = None  # None = JOB_TIME_LIMIT_SECS (0 = no job limit)


@dataclass(frozen=True)
class _Limits:
    """Time limits of one run (see :meth:`WhisperEngine.chunk_limit_secs`)."""

    factor: float
    min_secs: float
    job_deadline: float | None  # monotonic
    job_started: float = field(default_factory=time.monotonic)  # the job's place in line for a stream

    def chunk_secs(self, chunk: Chunk) -> float:
        # whisper pads every call to a 30 s window: a 3 s chunk costs about what a 30 s one does
        return self.min_secs + self.factor * max(chunk.duration_secs, WINDOW_SECS)


class ChunkScheduler:
    """The engine's decode threads, one per stream, shared by every job: a
    chunk waits in one line ordered by (job start, chunk index), so the
    streams serve the oldest job's chunks first and jobs finish in the order
    they came. Before it, each job ran its own pool of N threads on the N
    contexts (32 jobs: 256 threads in one first-come line), so every job
    advanced together and all of them finished at the very end."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._line: list[tuple[tuple[float, int], int, Future[Any], Callable[[], Any]]] = []  # a heap
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, priority: tuple[float, int], fn: Callable[[], T], workers: int) -> Future[T]:
        """Run ``fn`` on one of ``workers`` threads (started as needed) in its turn."""
        fut: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            while len(self._threads) < workers:
                th = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(th)
                th.start()
            heapq.heappush(self._line, (priority, next(self._seq), fut, fn))
            self._cond.notify()
        return fut

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._line and not self._closed:
                    self._cond.wait()
                if not self._line:
                    return
                _, _, fut, fn = heapq.heappop(self._line)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                fut.set_exception(exc)

    def close(self) -> None:
        """Cancel what waits, let running calls end, stop the threads."""
        with self._cond:
            self._closed = True
            for _, _, fut, _ in self._line:
                fut.cancel()
            self._line.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        for th in threads:
            th.join()


def finish_futures(futures: list[Future[Any]]) -> None:
    """Cancel the futures not started and wait for the running ones (a job
    that failed or was cancelled: its decodes stop at their next abort check)."""
    for fut in futures:
        fut.cancel()
    wait(futures)


class _ChunkTimeout(Exception):
    """A chunk's decode ran past its limit (or the job's) and was aborted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


class ChunkPipeline(ABC):
    """The pipeline every engine backend shares: decode the file, plan (or
    resume) the chunks, detect the language once, checkpoint and report
    progress per chunk, normalise. A backend supplies only
    :meth:`decode_chunks` ("decode these chunks, in order") and the thread
    count of one call; whisper.cpp (:class:`WhisperEngine`) and CTranslate2
    (:class:`whisperop.inference.ct2engine.CT2Engine`) both run this one path,
    so cancellation, checkpoints, time limits and language handling behave
    the same whichever engine a job gets."""

    settings: EngineSettings
    model_path: Path
    backend: str  # "CPU", "CUDA", …
    parallelism: int  # decode streams (whisper.cpp contexts; 1 for CTranslate2, which batches instead)
    #: chunks decode one call each, so the first ones can start while the file
    #: is still being decoded (:mod:`whisperop.inference.streamplan`); CTranslate2
    #: batches a job's windows and measures speech on the whole envelope
    streams_plan = False
    concurrent_jobs = True  # transcribe_file may run in several threads at once (JOB_CONCURRENCY)
    load_secs: float
    warmup_secs: float

    @abstractmethod
    def close(self) -> None:
        """Free the backend's model and threads."""

    @abstractmethod
    def _threads_per_context(self) -> int:
        """CPU threads one decode call uses."""

    def schedule(self, priority: tuple[float, int], fn: Callable[[], T]) -> Future[T]:
        """Run one decode call on the engine's shared decode threads (backends
        with ``streams_plan``); a backend without them runs it here, on the
        caller's thread, and returns its outcome as a done future."""
        fut: Future[T] = Future()
        try:
            fut.set_result(fn())
        except Exception as exc:  # noqa: BLE001 - the caller reads it from the future, as from a thread's
            fut.set_exception(exc)
        return fut

    @abstractmethod
    def decode_chunks(self, audio: DecodedAudio, chunks: list[Chunk], opts: DecodeOptions, cancel: "_ThrottledCancel",
                      limits: _Limits) -> Iterator[ChunkRecord]:
        """Decode ``chunks`` and yield one record per chunk, in the given order.
        Raise :class:`JobCancelled` once ``cancel`` turns true; a chunk over its
        time limit is retried once and then yields a failed record."""

    # ── transcription ────────────────────────────────────────────────────

    def decode_options(self, request: TranscribeRequest) -> DecodeOptions:
        s = self.settings
        return DecodeOptions(
            language=request.language,
            translate=request.task == Task.translate,
            beam_size=request.beam_size or s.beam_size,
            temperature=s.temperature if request.temperature is None else request.temperature,
            temperature_inc=s.temperature_inc,
            initial_prompt=request.prompt,
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
        checkpoint: Checkpoint | None = None,
    ) -> TranscriptionResult:
        """Transcribe an audio file. ``on_decoded(duration_secs, chunks_total)``
        is called once the audio is decoded and planned (before any inference).

        With a ``checkpoint`` the plan saved by an earlier run is reused (the
        same chunks, whatever the chunking settings are now) and its finished
        chunks are not decoded again."""
        tmp_dir = str(self.settings.tmp_dir) if self.settings.tmp_dir else None
        saved = checkpoint.plan() if checkpoint is not None else None
        early = self._early_decodes(request, should_cancel) if saved is None else None
        try:
            with _DECODE_SLOTS:  # jobs decode their audio a few at a time, in the order they came
                decoded = decode_audio(path, self.settings.max_audio_secs, tmp_dir, self.settings.max_secs_per_mb,
                                       on_block=early.on_block if early is not None else None)
            with decoded as audio:
                if saved is not None:
                    chunks = [Chunk(i, start, end) for i, (start, end) in enumerate(saved)]
                else:
                    chunks = plan_chunks(audio.frame_db, audio.n_samples, self.chunking_config())
                    if checkpoint is not None:
                        checkpoint.save_plan([(c.start, c.end) for c in chunks])
                if on_decoded:
                    on_decoded(audio.duration_secs, len(chunks))
                return self.transcribe_chunks(audio, chunks, request, on_progress, should_cancel, checkpoint, early)
        finally:
            if early is not None:
                early.close()

    def _early_decodes(self, request: TranscribeRequest, should_cancel: CancelCheck | None) -> "EarlyDecodes | None":
        """Where the backend decodes chunk by chunk (``streams_plan``), the
        first chunks start while the file is still being decoded
        (:mod:`whisperop.inference.streamplan`); the result is the same."""
        if not self.streams_plan:
            return None
        from whisperop.inference.streamplan import EarlyDecodes

        return EarlyDecodes(self, self.chunking_config(), self.decode_options(request), _ThrottledCancel(should_cancel),
                            self.limits(request))

    def limits(self, request: TranscribeRequest) -> _Limits:
        s = self.settings
        factor = request.chunk_time_limit_factor if request.chunk_time_limit_factor is not None else s.chunk_time_limit_factor
        job_secs = request.time_limit_secs if request.time_limit_secs is not None else s.job_time_limit_secs
        return _Limits(factor, s.chunk_time_limit_min_secs, time.monotonic() + job_secs if job_secs > 0 else None)

    def transcribe_chunks(
        self,
        audio: DecodedAudio,
        chunks: list[Chunk],
        request: TranscribeRequest = TranscribeRequest(),
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        checkpoint: Checkpoint | None = None,
        early: "EarlyDecodes | None" = None,
    ) -> TranscriptionResult:
        """Decode ``chunks`` (skipping those the checkpoint holds), report and
        assemble. With ``early`` (a streamed plan) the chunks it guessed right
        are taken from it and the rest decode on its threads."""
        cancel = early.cancel if early is not None else _ThrottledCancel(should_cancel)
        opts = self.decode_options(request)
        limits = early.limits if early is not None else self.limits(request)
        started = early.take(chunks) if early is not None else {}
        total = len(chunks)
        records: dict[int, ChunkRecord] = dict(checkpoint.done()) if checkpoint is not None else {}
        language = request.language
        if language is None:  # a resumed job keeps the language its first run detected
            language = next((r.language for _, r in sorted(records.items()) if r.language), None)
        done = len(records)
        if records:
            log.info("job resumed from its checkpoint", extra={"chunks_done": done, "chunks_total": total})
            if on_progress:
                on_progress(Progress(done, total))

        def finished(rec: ChunkRecord) -> None:
            nonlocal done
            records[rec.index] = rec
            if checkpoint is not None:
                checkpoint.save(rec)  # durable before progress advances
            done += 1
            if on_progress:
                on_progress(Progress(done, total))

        remaining = [c for c in chunks if c.index not in records]
        try:
            while remaining and language is None:
                # Detect once, on the first chunk, then hold the language for the
                # rest: a job gets one consistent language (and N-1 fewer detections).
                first = remaining.pop(0)
                recs = [started.pop(first.index).result()] if first.index in started else \
                    self.decode_chunks(audio, [first], opts, cancel, limits)
                for rec in recs:
                    language = rec.language
                    finished(rec)
            opts = replace(opts, language=language)
            if early is not None:
                futures = [started.get(c.index) or early.submit(audio, c, opts) for c in remaining]
                for fut in futures:
                    finished(fut.result())
            else:
                for rec in self.decode_chunks(audio, remaining, opts, cancel, limits):
                    finished(rec)
        except BaseException:
            cancel.cancelled = True  # the job's other decodes stop at their next check
            raise
        ordered = [seg for i in sorted(records) for seg in records[i].segments]
        clean = normalize(ordered, SpeechMap.from_frame_db(audio.frame_db))
        return TranscriptionResult(
            language=language,
            duration_secs=round(audio.duration_secs, 3),
            segments=clean.segments,
            chunks=total,
            removed=clean.removed,
            degraded_chunks=[r.degraded for _, r in sorted(records.items()) if r.degraded is not None],
        )


class WhisperEngine(ChunkPipeline):
    """A loaded whisper.cpp model (one or more contexts) plus the pipeline around it."""

    streams_plan = True

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
        self._scheduler = ChunkScheduler("whisper")
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

    def add_streams(self, target: int) -> bool:
        """Load further decode streams, up to ``target``, in the background, as the
        load does (issue 14: GPU memory freed up after a load that started fewer
        streams than wanted). False, and nothing done, while streams are still
        loading, after close, or when ``target`` streams are there already. A
        stream that does not fit ends the growth with the streams loaded so far."""
        with self._contexts_lock:
            if self._closed or not self._all_loaded.is_set() or target <= len(self._contexts):
                return False
            self.parallelism = target
            self._all_loaded.clear()
            loader = threading.Thread(target=self._load_extra_contexts, args=(time.perf_counter(),),
                                      name="whisper-loader", daemon=True)
            self._loader = loader
            loader.start()  # under the lock: close() joins a started thread
        return True

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
        self._scheduler.close()
        for ctx in self._contexts:
            ctx.close()

    @contextmanager
    def _context(self) -> Iterator[WhisperContext]:
        ctx = self._pool.get()
        try:
            yield ctx
        finally:
            self._pool.put(ctx)

    # ── decoding (the backend part of the pipeline) ─────────────────────

    def decode_chunks(self, audio: DecodedAudio, chunks: list[Chunk], opts: DecodeOptions, cancel: "_ThrottledCancel",
                      limits: _Limits) -> Iterator[ChunkRecord]:
        """One whisper.cpp call per chunk: in order on one context, or on N
        contexts at once (results still yielded in chunk order)."""

        def run(chunk: Chunk) -> ChunkRecord:
            if cancel(force=True):  # chunk boundary: always ask
                raise JobCancelled()
            pcm = audio.read(chunk.start, chunk.end)
            if pcm.size < MIN_CALL_SAMPLES:
                pcm = np.concatenate([pcm, np.zeros(MIN_CALL_SAMPLES - pcm.size, dtype=np.float32)])
            return self._decode_bounded(chunk, pcm, opts, cancel, limits)

        if self.parallelism == 1 or len(chunks) <= 1:
            for chunk in chunks:
                yield run(chunk)
            return
        futures = [self.schedule((limits.job_started, c.index), lambda c=c: run(c)) for c in chunks]  # type: ignore[misc]
        try:
            for fut in futures:
                yield fut.result()
        except BaseException:  # GeneratorExit included: the consumer failed or stopped
            cancel.cancelled = True
            finish_futures(futures)
            raise

    def schedule(self, priority: tuple[float, int], fn: Callable[[], T]) -> Future[T]:
        return self._scheduler.submit(priority, fn, self.parallelism)

    # ── time limits ──────────────────────────────────────────────────────

    def _decode_bounded(self, chunk: Chunk, pcm: np.ndarray, o: DecodeOptions, cancel: "_ThrottledCancel",
                        limits: _Limits) -> ChunkRecord:
        """Decode one chunk within its time limit; over it, retry once with
        :func:`retry_options`; over it again, the chunk fails (no segments, a
        :class:`DegradedChunk` with the reason) and the job goes on.

        The limit is ``CHUNK_TIME_LIMIT_MIN_SECS + CHUNK_TIME_LIMIT_FACTOR x
        max(chunk duration, 30 s)`` (60 + 5 x 30 = 210 s for any chunk up to
        30 s, 360 s for a 60 s one): whisper base on this project's 2-core CPU
        decodes a 10 s clip in 16-32 s, but a 3 s chunk took 77 s at load
        average 13 (measured here), and a looping ``task=translate`` took 88 s
        (524 s under load) for 10 s — the limit is a backstop for runaways,
        not a tight bound.
        whisper.cpp's abort callback stops the call inside the compute loop."""
        first = True
        reasons: list[str] = []
        for attempt, opts in enumerate((o, retry_options(o))):
            try:
                segs, lang = self._decode_once(chunk, pcm, opts, cancel, limits, attempt)
            except _ChunkTimeout as exc:
                reasons.append(exc.reason)
                log.warning("chunk ran over its time limit", extra={"chunk": chunk.index, "attempt": attempt + 1,
                                                                    "reason": exc.reason})
                first = False
                if limits.job_deadline is not None and time.monotonic() >= limits.job_deadline:
                    break  # the job's own limit: no retry
                continue
            degraded = None
            if not first:
                degraded = DegradedChunk(index=chunk.index, start=round(chunk.start_secs, 3), end=round(chunk.end_secs, 3),
                                         failed=False, reason=f"{reasons[0]}; retried {describe_options(opts)}: finished in time")
            return ChunkRecord(chunk.index, segs, lang, degraded)
        reason = "; ".join(reasons) + "; no text for this span"
        log.warning("chunk failed: over its time limit", extra={"chunk": chunk.index, "reason": reason})
        return ChunkRecord(chunk.index, [], opts.language,
                           DegradedChunk(index=chunk.index, start=round(chunk.start_secs, 3), end=round(chunk.end_secs, 3),
                                         failed=True, reason=reason))

    def _decode_once(self, chunk: Chunk, pcm: np.ndarray, opts: DecodeOptions, cancel: "_ThrottledCancel",
                     limits: _Limits, attempt: int) -> tuple[list[Segment], str]:
        limit = limits.chunk_secs(chunk)
        deadline = time.monotonic() + limit
        if limits.job_deadline is not None:
            deadline = min(deadline, limits.job_deadline)
        slow = self.settings.fault_slow(chunk.index, attempt)
        over = {"fired": False}
        t0 = time.monotonic()

        def abort() -> bool:
            if slow:  # test hook: this call does not end on its own (as a looping decode) until a limit or cancel stops it
                while time.monotonic() < min(deadline, t0 + SLOW_FAULT_MAX_SECS) and not cancel():
                    time.sleep(0.05)
            if cancel():
                return True
            if time.monotonic() >= deadline:
                over["fired"] = True
                return True
            return False

        with self._context() as ctx:
            raw, lang = ctx.full(pcm, opts, abort=abort)
        if cancel(force=True):
            raise JobCancelled()
        if over["fired"]:
            job_hit = limits.job_deadline is not None and deadline >= limits.job_deadline
            what = "the job's time limit" if job_hit else f"its time limit of {limit:.0f} s"
            raise _ChunkTimeout(f"attempt {attempt + 1} ({describe_options(opts)}) stopped at {time.monotonic() - t0:.0f} s: "
                                f"over {what} ({chunk.duration_secs:.1f} s of audio)")
        log.info("chunk decoded", extra={"chunk": chunk.index, "attempt": attempt + 1,
                                         "audio_secs": round(chunk.duration_secs, 3), "wall_secs": round(time.monotonic() - t0, 3)})
        return to_segments(raw, chunk), lang


def create_engine(model_path: str | Path, settings: EngineSettings | None = None,
                  parallelism: int | None = None) -> ChunkPipeline:
    """The engine factory: ``ENGINE`` picks the backend behind the one pipeline —
    whisper.cpp on a GGML file (the default) or CTranslate2 on a CTranslate2
    model directory (``base-ct2``; faster on the CPU, docs/benchmarks.md);
    ``auto``: the model's engine (a GGML file or a CTranslate2 directory,
    :meth:`whisperop.core.settings.EngineSettings.resolved`)."""
    s = (settings or EngineSettings()).resolved(Path(model_path))
    if s.engine == "ctranslate2":
        from whisperop.inference.ct2engine import CT2Engine

        return CT2Engine(model_path, s)
    if Path(model_path).is_dir():
        raise ModelLoadError(f"{model_path} is a directory (a CTranslate2 model?); ENGINE=whispercpp needs a GGML file, "
                             "ENGINE=ctranslate2 loads a CTranslate2 directory")
    return WhisperEngine(model_path, s, parallelism)


SLOW_FAULT_MAX_SECS = 3600.0  # the slow-chunk hook holds a call at most this long (a broken limit shows as a hang)


def retry_options(o: DecodeOptions) -> DecodeOptions:
    """The retry of a chunk that ran over: greedy, without temperature fallback
    (a loop that fails the fallback checks decodes the window up to 6 times
    at rising temperatures). When the first attempt already was that, the
    retry samples at temperature 0.4 instead, which breaks greedy loops."""
    if o.beam_size > 1 or o.temperature_inc > 0:
        return replace(o, beam_size=1, temperature=0.0, temperature_inc=0.0)
    return replace(o, temperature=0.4, temperature_inc=0.0)


def describe_options(o: DecodeOptions) -> str:
    how = f"beam {o.beam_size}" if o.beam_size > 1 else "greedy"
    fallback = f", fallback +{o.temperature_inc}" if o.temperature_inc > 0 else ", no fallback"
    return f"{how}, temperature {o.temperature}{fallback}"


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
