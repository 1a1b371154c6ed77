"""The CTranslate2 backend (``ENGINE=ctranslate2``): batched windows through
``ctranslate2.models.Whisper``.

Why a second backend: on this project's 2-core CPU whisper.cpp's ggml encoder
ran whisper base at 10.2x real time while faster-whisper (CTranslate2 int8)
ran the same file at 19.1x (docs/benchmarks.md). CTranslate2's int8 GEMMs are
the difference, and batching adds to it: the chunk plan cuts the audio into
independent windows of at most 30 s (at silences), so several windows can be
encoded and decoded in one call, which keeps the GEMMs large — faster-whisper's
sequential pipeline decodes one window at a time.

Only the decoding is here. The pipeline around it — audio decode, chunk plan,
checkpoints, progress, language held per job, time limits, normalisation — is
:class:`whisperop.inference.engine.ChunkPipeline`, shared with whisper.cpp.

Per batch: log-mel features (our numpy code, :func:`log_mel`) → ``encode`` once
→ ``detect_language`` (only when the job's language is not known yet) →
``generate`` (greedy or beam) → temperature fallback for
the windows that fail whisper's checks (compression ratio > 2.4 or average
log-probability < -1.0; a window whose no-speech probability is > 0.6 with a
low log-probability is silence: no text), re-decoded together at 0.2, 0.4, …
→ ``align`` (cross-attention DTW) for word timestamps, as faster-whisper does.

Timestamps: with word timestamps on (the default) a window is decoded
*without* timestamp tokens (``<|notimestamps|>``, as faster-whisper's batched
pipeline does) and its segments are cut from the aligned words
(:func:`_sentences`: at sentence ends, pauses, and at most
``SEGMENT_MAX_SECS``). In timestamp mode whisper ends a window early whenever
its last segment is unfinished, and the rest is decoded again from that
point (another encoder pass, ~20 % of windows); the cut loses or repeats
words. Measured on bench/gpu.py's 34-minute speech, int8 on this 2-core CPU,
same chunk plan: WER 9.71 % with timestamp tokens, 6.47 % without, at the same
speed (8.57x / 8.60x; faster-whisper's batched pipeline had 6.03 % on the
H100). With word timestamps off there is no
alignment to take times from, so the window is decoded with timestamp tokens
and seeks as before.

Cross-job batching: the windows of every job the engine runs at once
(``JOB_CONCURRENCY``) go to one queue (:class:`_Batcher`); one thread decodes
them in batches of up to ``CT2_BATCH_SIZE`` windows, a batch that is not full
waiting up to ``CT2_BATCH_WAIT_MS`` for another running job's windows (never
for a job alone). Each job still cuts, checkpoints and reports its own chunks.

Cancellation and time limits: CTranslate2's Whisper has no abort hook, so a
job waits for its windows' results while polling its cancel flag and the
batch's deadline. A cancel is honoured within ~0.1 s (the batch in flight
finishes in the background, at most one batch; the job's windows not yet in
a batch are dropped, other jobs' windows are untouched); a batch over its
limit (the sum of its windows' limits) is abandoned and its windows are
retried one by one with the whisper.cpp path's retry options.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from whisperop.core.checkpoints import Checkpoint, ChunkRecord
from whisperop.core.errors import GpuMemoryError, JobCancelled, ModelLoadError, ModelNotFoundError
from whisperop.core.gpu import gpu_memory
from whisperop.core.models import DegradedChunk, Segment, TranscriptionResult, Word
from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import SAMPLE_RATE, DecodedAudio
from whisperop.inference.chunking import Chunk
from whisperop.inference.normalize import SpeechMap
from whisperop.inference.engine import (
    SLOW_FAULT_MAX_SECS,
    WINDOW_SECS,
    CancelCheck,
    ChunkPipeline,
    ChunkingConfig,
    ProgressCallback,
    TranscribeRequest,
    _ChunkTimeout,
    _Limits,
    _ThrottledCancel,
    describe_options,
    retry_options,
)
from whisperop.inference.whispercpp import DecodeOptions
from whisperop.modelstore.mel import mel_filters

log = logging.getLogger("whisperop.ct2engine")

N_FFT = 400
HOP = 160
N_FRAMES = 3000  # mel frames of one 30 s window
WINDOW_SAMPLES = N_FRAMES * HOP
SECS_PER_TIMESTAMP = 0.02  # whisper's timestamp tokens and the encoder's frames (1500 per 30 s)
CPU_DEFAULT_BATCH = 4  # b2/b4/b8 decode at the same speed on 2 cores; RSS 435/629/935 MB (docs/benchmarks.md)
GPU_DEFAULT_BATCH = 16
COMPRESSION_RATIO_MAX = 2.4  # whisper's fallback thresholds (OpenAI's transcribe defaults)
LOGPROB_MIN = -1.0
NO_SPEECH_MIN = 0.6
MAX_SEEKS = 4  # rounds per window: whisper stops early on a window (a long pause, a cut) and seeks on
MIN_REST_SAMPLES = SAMPLE_RATE  # a rest under 1 s is not decoded again (whisper.cpp refuses < 100 ms)
MIN_REST_SPEECH_SECS = 0.3  # … nor one with less speech energy than this
BEST_OF = 5  # samples per window at a fallback temperature (as whisper.cpp's best_of)
POLL_SECS = 0.05
SEGMENT_MAX_SECS = 12.0  # segments cut from aligned words: at most this long (whisper's own are mostly 2-10 s)
PAUSE_SECS = 1.0  # … and a pause this long between two words ends a segment
_SENTENCE_END = (".", "?", "!", "。", "？", "！")
# languages written without spaces: every token is a word there (word timestamps)
_NO_SPACE_LANGS = {"zh", "ja", "th", "lo", "my", "yue"}


def gpu_oom(exc: BaseException, what: str, device: int = 0) -> GpuMemoryError | None:
    """CTranslate2's CUDA out-of-memory error as the lifecycle's :class:`GpuMemoryError`
    (``waiting_for_gpu``, retried every poll interval; during a job the executor hands the
    job back and the engine is loaded again); None for any other error.

    Why by message: CTranslate2 raises a plain ``RuntimeError`` (``CUDA failed with error
    out of memory``, or cuBLAS/cuDNN's ``…_STATUS_ALLOC_FAILED``) on load and in any call,
    never a typed error, and it does not abort the process as ggml does (issue 14)."""
    text = str(exc).lower()
    if not isinstance(exc, RuntimeError) or not any(m in text for m in ("out of memory", "alloc_failed")):
        return None
    mem = gpu_memory(device)
    return GpuMemoryError(f"out of GPU memory {what}: {exc}", vram_free_mb=mem.free_mb if mem else None)


def gpu_preflight(model_path: Path, device: int = 0) -> None:
    """Before a CUDA load: :class:`GpuMemoryError` when NVML's free memory cannot even hold
    the weights file (a floor, not the need: the CUDA context and the batch's buffers come
    on top; the real out-of-memory error is the backstop). No NVML: no opinion."""
    mem = gpu_memory(device)
    weights = (model_path / "model.bin").stat().st_size >> 20
    if mem is not None and mem.free_mb < weights:
        raise GpuMemoryError(f"not enough GPU memory to load {model_path.name}: {mem.free_mb} MB free, its weights "
                             f"alone take {weights} MB", vram_needed_mb=weights, vram_free_mb=mem.free_mb)


def log_mel(pcm: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """OpenAI whisper's log-mel spectrogram of one window (≤ 30 s of 16 kHz
    audio, zero-padded to 30 s): periodic Hann STFT (400/160, centred with
    reflection), power, mel filterbank, log10 clamped to 8 dB under the peak,
    scaled as ``(x + 4) / 4``. Returns ``(80, 3000)`` float32; ~15 ms here."""
    audio = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    n = min(pcm.size, WINDOW_SAMPLES)
    audio[:n] = pcm[:n]
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:N_FRAMES]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)).astype(np.float32) ** 2
    mel = filters @ power.T
    logspec = np.log10(np.maximum(mel, 1e-10))
    logspec = np.maximum(logspec, logspec.max() - 8.0)
    return ((logspec + 4.0) / 4.0).astype(np.float32)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


@dataclass(frozen=True)
class _Decoded:
    """One window's best hypothesis."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    temperature: float

    def silent(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_MIN and self.avg_logprob < LOGPROB_MIN


class _Tokens:
    """The ids the decoder needs, from the export's ``tokenizer.json``."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        ids = self.tok.token_to_id
        self.eot = self._id("<|endoftext|>")
        self.sot = self._id("<|startoftranscript|>")
        self.sot_prev = self._id("<|startofprev|>")
        self.transcribe = self._id("<|transcribe|>")
        self.translate = self._id("<|translate|>")
        self.no_timestamps = self._id("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1
        self._ids = ids

    def _id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise ModelLoadError(f"tokenizer.json has no {token}")
        return int(i)

    def language(self, code: str) -> int:
        i = self.tok.token_to_id(f"<|{code}|>")
        if i is None:
            raise ModelLoadError(f"the model does not know the language {code!r}")
        return int(i)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self.tok.decode(list(ids), skip_special_tokens=False).encode("utf-8", errors="replace")

    def text(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode([i for i in ids if i < self.eot]))


class CT2Engine(ChunkPipeline):
    """A loaded CTranslate2 whisper model plus the shared pipeline."""

    def __init__(self, model_path: str | Path, settings: EngineSettings | None = None) -> None:
        import ctranslate2

        self.settings = settings or EngineSettings()
        s = self.settings
        self.model_path = Path(model_path)
        if not (self.model_path / "model.bin").is_file():
            raise ModelNotFoundError(
                f"{self.model_path} is not a CTranslate2 model directory (no model.bin); ENGINE=ctranslate2 needs one, "
                "e.g. WHISPER_MODEL=base-ct2 (whisperop model fetch base-ct2)")
        t0 = time.perf_counter()
        cuda = s.use_gpu and ctranslate2.get_cuda_device_count() > 0
        self.backend = "CUDA" if cuda else "CPU"
        self.compute_type = s.ct2_compute_type or ("float16" if cuda else "int8")
        self.batch_size = s.ct2_batch_size or (GPU_DEFAULT_BATCH if cuda else CPU_DEFAULT_BATCH)
        self.batch_wait_secs = s.ct2_batch_wait_ms / 1000.0
        self.parallelism = 1
        if cuda:
            gpu_preflight(self.model_path, s.cuda_device)
        self._batcher = _Batcher(self)
        try:
            self.model = ctranslate2.models.Whisper(
                str(self.model_path), device="cuda" if cuda else "cpu", device_index=s.cuda_device,
                compute_type=self.compute_type, intra_threads=self._threads_per_context(), inter_threads=1)
        except (RuntimeError, ValueError) as exc:
            raise gpu_oom(exc, f"loading {self.model_path.name}", s.cuda_device) or ModelLoadError(
                f"CTranslate2 could not load {self.model_path}: {exc}") from exc
        self.tokens = _Tokens(self.model_path)
        config = json.loads((self.model_path / "config.json").read_text()) if (self.model_path / "config.json").is_file() else {}
        self.n_mels = int(config.get("num_mels", 80))
        self.filters = mel_filters(SAMPLE_RATE, N_FFT, self.n_mels)
        self.load_secs = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            self._warm_up()
        except RuntimeError as exc:  # the warm-up's buffers are the first allocations past the weights
            self.close()
            raise gpu_oom(exc, f"warming up {self.model_path.name}", s.cuda_device) or exc
        self.warmup_secs = time.perf_counter() - t1
        log.info("model loaded", extra={"model": str(self.model_path), "engine": "ctranslate2", "backend": self.backend,
                                        "compute_type": self.compute_type, "batch_size": self.batch_size,
                                        "load_secs": round(self.load_secs, 3), "warmup_secs": round(self.warmup_secs, 3)})

    # ── lifecycle ────────────────────────────────────────────────────────

    def _threads_per_context(self) -> int:
        return self.settings.threads or (os.cpu_count() or 1)

    def _warm_up(self) -> None:
        """One tiny encode + decode right after the load, so the first job does
        not pay CTranslate2's first-call setup. On 2 s of features (200 frames,
        the encoder accepts them) it costs ~0.06 s; a full 30 s window would
        cost a whole encoder pass (1-2 s on this 2-core CPU)."""
        import ctranslate2

        feats = np.zeros((1, self.n_mels, 200), dtype=np.float32)
        enc = self.model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=False)
        self.model.generate(enc, [self._prompt("en", DecodeOptions())], beam_size=1, max_length=4)

    @property
    def batch_stats(self) -> BatchStats:
        return self._batcher.stats

    def transcribe_file(self, path: str | os.PathLike[str], request: TranscribeRequest = TranscribeRequest(),
                        on_progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                        on_decoded: Callable[[float, int], None] | None = None,
                        checkpoint: Checkpoint | None = None) -> TranscriptionResult:
        """The shared pipeline, with the job counted as running from its start (audio decode
        included): a batch waits (``CT2_BATCH_WAIT_MS``) only for jobs that are running."""
        job = threading.get_ident()
        self._batcher.job_started(job)
        try:
            return super().transcribe_file(path, request, on_progress, should_cancel, on_decoded, checkpoint)
        finally:
            self._batcher.job_ended(job)

    def close(self) -> None:
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            batcher.close()
        model = getattr(self, "model", None)
        if model is not None:
            model.unload_model()

    def chunking_config(self) -> ChunkingConfig:
        """Windows of at most 30 s: CTranslate2 decodes one whisper window per
        batch item (no seeking inside a call), so a chunk must fit one."""
        base = super().chunking_config()
        return replace(base, max_secs=min(base.max_secs, WINDOW_SECS), min_secs=min(base.min_secs, WINDOW_SECS / 2))

    # ── decoding ─────────────────────────────────────────────────────────

    def decode_chunks(self, audio: DecodedAudio, chunks: list[Chunk], opts: DecodeOptions, cancel: _ThrottledCancel,
                      limits: _Limits) -> Iterator[ChunkRecord]:
        """Batches of ``batch_size`` windows, yielded in chunk order after each
        batch (so checkpoints and progress advance per batch). A chunk longer
        than 30 s (a plan saved by a whisper.cpp run and resumed here) is cut
        into 30 s windows whose segments make one record."""
        windows: list[tuple[Chunk, int, int]] = []  # (chunk, start, end) per ≤30 s window
        for chunk in chunks:
            for start in range(chunk.start, max(chunk.end, chunk.start + 1), WINDOW_SAMPLES):
                windows.append((chunk, start, min(chunk.end, start + WINDOW_SAMPLES)))
        pending: dict[int, list[Segment]] = {}
        pending_windows = {c.index: sum(1 for w in windows if w[0].index == c.index) for c in chunks}
        degraded: dict[int, DegradedChunk] = {}
        languages: dict[int, str | None] = {}
        next_chunk = 0  # records go out in chunk order
        speech = SpeechMap.from_frame_db(audio.frame_db)
        for b in range(0, len(windows), self.batch_size):
            if cancel(force=True):  # batch boundary: always ask
                raise JobCancelled()
            batch = windows[b: b + self.batch_size]
            try:
                results = self._decode_bounded(audio, batch, opts, cancel, limits, speech)
            except RuntimeError as exc:  # CUDA out of memory mid-job: the job goes back, the model waits for the GPU
                raise gpu_oom(exc, f"decoding chunks {batch[0][0].index}-{batch[-1][0].index}",
                              self.settings.cuda_device) or exc
            for (chunk, _, _), (segs, lang, deg) in zip(batch, results):
                pending.setdefault(chunk.index, []).extend(segs)
                if lang:
                    languages.setdefault(chunk.index, lang)
                if deg is not None and chunk.index not in degraded:
                    degraded[chunk.index] = deg
                pending_windows[chunk.index] -= 1
            while next_chunk < len(chunks) and pending_windows[chunks[next_chunk].index] == 0:
                chunk = chunks[next_chunk]
                next_chunk += 1
                yield ChunkRecord(chunk.index, pending.pop(chunk.index, []), languages.get(chunk.index, opts.language),
                                  degraded.get(chunk.index))

    def _decode_bounded(self, audio: DecodedAudio, batch: list[tuple[Chunk, int, int]], opts: DecodeOptions,
                        cancel: _ThrottledCancel, limits: _Limits,
                        speech: SpeechMap) -> list[tuple[list[Segment], str | None, DegradedChunk | None]]:
        """Decode a batch within its time limit; the windows of a batch that ran
        over are retried one by one (:func:`retry_options`); a window over its
        limit again gets no text and a failed :class:`DegradedChunk`."""
        try:
            return [(segs, lang, None) for segs, lang in self._decode_batch(audio, batch, opts, cancel, limits, speech, attempt=0)]
        except _ChunkTimeout as exc:
            first_reason = exc.reason
        log.warning("batch ran over its time limit", extra={"chunks": [c.index for c, _, _ in batch], "reason": first_reason})
        out: list[tuple[list[Segment], str | None, DegradedChunk | None]] = []  # language None: not known (a failed window)
        retry = retry_options(opts)
        for item in batch:
            chunk = item[0]

            def degraded(failed: bool, reason: str, chunk: Chunk = chunk) -> DegradedChunk:
                return DegradedChunk(index=chunk.index, start=round(chunk.start_secs, 3), end=round(chunk.end_secs, 3),
                                     failed=failed, reason=reason)

            if limits.job_deadline is not None and time.monotonic() >= limits.job_deadline:
                out.append(([], opts.language, degraded(True, f"{first_reason}; no text for this span")))
                continue
            try:
                [(segs, lang)] = self._decode_batch(audio, [item], retry, cancel, limits, speech, attempt=1)
            except _ChunkTimeout as again:
                reason = f"{first_reason}; {again.reason}; no text for this span"
                log.warning("chunk failed: over its time limit", extra={"chunk": chunk.index, "reason": reason})
                out.append(([], opts.language, degraded(True, reason)))
                continue
            reason = f"{first_reason}; retried {describe_options(retry)}: finished in time"
            out.append((segs, lang, degraded(False, reason)))
        return out

    def _batch_deadline(self, batch: list[tuple[Chunk, int, int]], limits: _Limits) -> tuple[float, float]:
        limit = limits.min_secs + limits.factor * sum(max((e - s) / SAMPLE_RATE, WINDOW_SECS) for _, s, e in batch)
        deadline = time.monotonic() + limit
        if limits.job_deadline is not None:
            deadline = min(deadline, limits.job_deadline)
        return deadline, limit

    def _wait(self, pending: list[Any], cancel: _ThrottledCancel, deadline: float, slow: bool, what: str,
              limit: float, limits: _Limits, t0: float) -> list[Any]:
        """Results of this job's windows from the batcher, polling the cancel
        flag and the deadline meanwhile (CTranslate2 cannot abort a call)."""
        while True:
            if cancel():
                raise JobCancelled()
            now = time.monotonic()
            held = slow and now < t0 + SLOW_FAULT_MAX_SECS
            if not held and all(r.done() for r in pending):
                return [r.result() for r in pending]
            if now >= deadline:
                job_hit = limits.job_deadline is not None and deadline >= limits.job_deadline
                over = "the job's time limit" if job_hit else f"its time limit of {limit:.0f} s"
                raise _ChunkTimeout(f"{what} stopped at {now - t0:.0f} s: over {over}")
            time.sleep(POLL_SECS)

    def _decode_batch(self, audio: DecodedAudio, batch: list[tuple[Chunk, int, int]], opts: DecodeOptions,
                      cancel: _ThrottledCancel, limits: _Limits, speech: SpeechMap, attempt: int) -> list[tuple[list[Segment], str]]:
        """Decode the windows of a batch; a window whose text ended before its
        audio did (whisper's last timestamp pair is not at the end) has its
        rest decoded in a follow-up round, as whisper's own seek does — the
        rounds are batched too (only the windows that have a rest). A rest
        without speech energy (:class:`SpeechMap`, the normaliser's) is not
        decoded: each round is a whole encoder pass, ~1.6 s a window here."""
        t0 = time.monotonic()
        deadline, limit = self._batch_deadline(batch, limits)
        slow = any(self.settings.fault_slow(c.index, attempt) for c, _, _ in batch)
        what = f"attempt {attempt + 1} ({describe_options(opts)}, {len(batch)} windows)"
        segments: list[list[Segment]] = [[] for _ in batch]
        langs: list[str | None] = [opts.language] * len(batch)
        starts = [s for _, s, _ in batch]
        todo = list(range(len(batch)))
        for _ in range(MAX_SEEKS):
            windows = [(batch[i][0], starts[i], batch[i][2]) for i in todo]
            rounds = self._decode_round(audio, windows, opts, [langs[i] for i in todo], cancel, (deadline, limit, limits, t0, slow, what))
            nxt: list[int] = []
            for i, (segs, lang, seek) in zip(todo, rounds):
                segments[i].extend(segs)
                langs[i] = lang
                if seek is not None and batch[i][2] - (starts[i] + seek) >= MIN_REST_SAMPLES:
                    starts[i] += seek
                    if speech.speech_secs(starts[i] / SAMPLE_RATE, batch[i][2] / SAMPLE_RATE) >= MIN_REST_SPEECH_SECS:
                        nxt.append(i)
            todo = nxt
            if not todo:
                break
        log.info("batch decoded", extra={"chunks": [c.index for c, _, _ in batch], "attempt": attempt + 1,
                                         "audio_secs": round(sum(e - s for _, s, e in batch) / SAMPLE_RATE, 3),
                                         "wall_secs": round(time.monotonic() - t0, 3)})
        return [(segs, lang or "") for segs, lang in zip(segments, langs)]

    def _decode_round(self, audio: DecodedAudio, windows: list[tuple[Chunk, int, int]], opts: DecodeOptions,
                      langs: list[str | None], cancel: _ThrottledCancel,
                      bounds: tuple[float, float, _Limits, float, bool, str]) -> list[tuple[list[Segment], str, int | None]]:
        """One encode + generate (+ fallback, + align) over ``windows``; per
        window its segments, language and where whisper stopped (samples into
        the window, None when it used the whole window).

        The windows go to the engine's :class:`_Batcher` (features computed
        here, in the job's thread), which may decode them together with
        windows of other running jobs; this job waits for its own results
        only, polling its cancel flag and its deadline meanwhile."""
        deadline, limit, limits, t0, slow, what = bounds
        # all of this round's features first, then one submit: the batcher never sees half of
        # them, so a job running alone gets the same batches on every run (greedy output is
        # repeatable; float16/int8 results depend on what shares a batch)
        feats = [(log_mel(audio.read(s, e), self.filters), e - s, lang) for (_, s, e), lang in zip(windows, langs)]
        futures = self._batcher.submit(threading.get_ident(), feats, opts)
        try:
            results = self._wait(futures, cancel, deadline, slow, what, limit, limits, t0)
        except BaseException:
            for f in futures:
                f.cancel()  # not started yet: never decoded; started: finishes in the background, dropped
            raise
        return [([_absolute(seg, chunk, s) for seg in segs if seg.text], lang, seek)
                for (chunk, s, _), (segs, lang, seek) in zip(windows, results)]

    def _run_round(self, tasks: list["_Task"]) -> list[tuple[list[_RawSeg], str, int | None]]:
        """What the batcher runs: one encode + generate (+ fallback, + align) over the windows
        of ``tasks`` (of one or several jobs; their decoding options match, :meth:`_Task.key`)."""
        import ctranslate2

        opts = tasks[0].opts
        enc = self._encode_features([t.feats for t in tasks])
        langs = [t.lang for t in tasks]
        if not self.model.is_multilingual:  # an English-only export: nothing to detect
            langs = ["en"] * len(langs)
        if any(lang is None for lang in langs):
            detected = [max(probs, key=lambda p: p[1])[0].strip("<|>") for probs in self.model.detect_language(enc)]
            langs = [lang or det for lang, det in zip(langs, detected)]
        known = [lang or "en" for lang in langs]
        from_words = opts.word_timestamps  # segment times from the alignment: no timestamp tokens (module docstring)
        prompts = [self._prompt(lang, t.opts, timestamps=not from_words) for lang, t in zip(known, tasks)]
        best: list[_Decoded | None] = [None] * len(tasks)
        todo = list(range(len(tasks)))
        temperatures = [opts.temperature]
        if opts.temperature_inc > 0:
            t = opts.temperature + opts.temperature_inc
            while t <= 1.0 + 1e-6:
                temperatures.append(round(t, 2))
                t += opts.temperature_inc
        for temp in temperatures:
            sub = enc if len(todo) == len(tasks) else _rows(enc, todo, ctranslate2)
            kwargs: dict[str, Any] = dict(beam_size=opts.beam_size, patience=1.0, num_hypotheses=1, sampling_topk=1)
            if temp > 0:
                kwargs = dict(beam_size=1, num_hypotheses=BEST_OF, sampling_topk=0, sampling_temperature=temp)
            results = self.model.generate(sub, [prompts[i] for i in todo], return_scores=True,
                                          return_no_speech_prob=True, suppress_blank=True, max_length=448, **kwargs)
            retry: list[int] = []
            for i, res in zip(todo, results):
                d = self._pick(res, temp)
                best[i] = d
                failed = compression_ratio(self.tokens.text(d.tokens)) > COMPRESSION_RATIO_MAX or d.avg_logprob < LOGPROB_MIN
                if failed and not d.silent():
                    retry.append(i)
            todo = retry
            if not todo:
                break
        raw: list[list[_RawSeg]] = []
        seeks: list[int | None] = []
        for chosen, task in zip(best, tasks):
            if chosen is None or chosen.silent():
                raw.append([])
                seeks.append(None)
                continue
            segs, seek = self._segments(chosen, task.n_samples)
            raw.append(segs)
            seeks.append(None if seek is None else int(round(seek * SAMPLE_RATE)))
        if opts.word_timestamps:
            self._add_words(enc, raw, [t.n_samples for t in tasks], known, opts, ctranslate2)
        if from_words:
            raw = [[part for seg in segs for part in _sentences(seg, self.tokens.text)] for segs in raw]
        return list(zip(raw, known, seeks))

    def _encode_features(self, feats: list[np.ndarray]) -> Any:
        """Encoder outputs of the windows, as one ``[batch, 1500, d]`` value.

        On the CPU each window is encoded alone and the outputs are stacked:
        a batched encoder pass was slower per window here (4 windows: 15.4 s
        against 4 x 1.6-2.2 s one by one, int8, 2 threads — the 1500 x 1500
        attention maps of a batch outgrow the caches). The decoder is where
        batching pays on the CPU; on a GPU the whole batch is encoded at once."""
        import ctranslate2

        if self.backend != "CPU":
            return self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(feats))), to_cpu=False)
        outs = [np.asarray(self.model.encode(ctranslate2.StorageView.from_array(f[None]), to_cpu=True)) for f in feats]
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(outs)))

    def _prompt(self, language: str, opts: DecodeOptions, timestamps: bool = True) -> list[int]:
        t = self.tokens
        seq = [t.sot, t.language(language), t.translate if opts.translate else t.transcribe]
        if not self.model.is_multilingual:
            seq = [t.sot]  # English-only whisper models take no language or task token
        if not timestamps:
            seq.append(t.no_timestamps)
        if opts.initial_prompt:
            prev = t.encode(" " + opts.initial_prompt.strip())[-(448 // 2 - 1):]
            seq = [t.sot_prev, *prev, *seq]
        return seq

    def _pick(self, res: Any, temperature: float) -> _Decoded:
        """The hypothesis with the best average log-probability (one when greedy)."""
        best: _Decoded | None = None
        for ids, score in zip(res.sequences_ids, res.scores):
            n = len(ids)
            # scores are length-normalised (length_penalty 1): back to the sum, then over n + 1 (the EOT), as whisper does
            avg = score * n / (n + 1) if n else score
            d = _Decoded(list(ids), float(avg), float(res.no_speech_prob), temperature)
            if best is None or d.avg_logprob > best.avg_logprob:
                best = d
        assert best is not None
        return best

    def _segments(self, d: _Decoded, n_samples: int) -> tuple[list[_RawSeg], float | None]:
        """Split a window's tokens at whisper's timestamp pairs (as OpenAI's
        transcribe does). Times are window-relative seconds. The second value
        is where to seek for the rest of the window (the last timestamp pair,
        when the text did not end with a single timestamp), or None when the
        window is done; the tokens after that pair are dropped (re-decoded)."""
        tb = self.tokens.timestamp_begin
        toks = d.tokens
        dur = n_samples / SAMPLE_RATE
        out: list[_RawSeg] = []
        consecutive = [i for i in range(1, len(toks)) if toks[i] >= tb and toks[i - 1] >= tb]
        single_ending = len(toks) >= 2 and toks[-2] < tb <= toks[-1]
        if not consecutive:  # also every window decoded without timestamp tokens: one segment, no seek
            self._append(out, toks, dur)
            return out, None
        cuts = consecutive + ([len(toks)] if single_ending else [])
        last = 0
        for cut in cuts:
            self._append(out, toks[last:cut], dur)
            last = cut
        if single_ending:
            return out, None
        seek = (toks[consecutive[-1] - 1] - tb) * SECS_PER_TIMESTAMP
        return out, (seek if 0 < seek < dur else None)

    def _append(self, out: list[_RawSeg], piece: list[int], dur: float) -> None:
        tb = self.tokens.timestamp_begin
        text = [t for t in piece if t < self.tokens.eot]
        if not text:
            return
        stamps = [(t - tb) * SECS_PER_TIMESTAMP for t in piece if t >= tb]
        start = stamps[0] if stamps and piece[0] >= tb else (out[-1].end if out else 0.0)
        end = stamps[-1] if stamps and piece[-1] >= tb and stamps[-1] > start else dur
        out.append(_RawSeg(min(start, dur), min(max(end, start), dur), text, text=self.tokens.text(text).strip()))

    def _add_words(self, enc: Any, segments: list[list[_RawSeg]], n_samples: list[int], langs: list[str], opts: DecodeOptions,
                   ct2: Any) -> None:
        """Word timestamps by ``align`` (DTW over the alignment heads' cross
        attention), batched over the windows that have text — one call per
        language (``align`` takes one start sequence; a cross-job batch may
        hold several languages)."""
        with_text = [i for i, segs in enumerate(segments) if segs]
        for lang in dict.fromkeys(langs[i] for i in with_text):
            self._align(enc, segments, n_samples, langs, [i for i in with_text if langs[i] == lang], opts, ct2)

    def _align(self, enc: Any, segments: list[list[_RawSeg]], n_samples: list[int], langs: list[str], idx: list[int],
               opts: DecodeOptions, ct2: Any) -> None:
        sub = enc if len(idx) == len(segments) else _rows(enc, idx, ct2)
        text_tokens = [[t for seg in segments[i] for t in seg.tokens] for i in idx]
        frames = [min(N_FRAMES, max(1, n_samples[i] // HOP)) for i in idx]
        start = self._prompt(langs[idx[0]], replace(opts, initial_prompt=None))  # one start sequence per call
        results = self.model.align(sub, start, text_tokens, frames, median_filter_width=7)
        for i, res, toks in zip(idx, results, text_tokens):
            starts, ends = _token_times(res.alignments, len(toks))
            probs = list(res.text_token_probs)
            k = 0
            for seg in segments[i]:
                n = len(seg.tokens)
                seg.words, seg.word_tokens = self._words(seg.tokens, starts[k:k + n], ends[k:k + n], probs[k:k + n], langs[i])
                k += n

    def _words(self, toks: list[int], starts: list[float], ends: list[float], probs: list[float],
               lang: str) -> tuple[list[tuple[str, float, float, float]], list[list[int]]]:
        """Tokens → words: a word starts at a token beginning with a space (or
        at every token in languages written without spaces). Also each word's
        tokens (a segment cut at words keeps its text as decoded)."""
        groups: list[list[int]] = []
        for j, tok in enumerate(toks):
            piece = self.tokens.tok.id_to_token(tok) or ""
            if not groups or piece.startswith("Ġ") or lang in _NO_SPACE_LANGS:
                groups.append([])
            groups[-1].append(j)
        words = [(self._word(toks, g, starts, ends, probs), [toks[j] for j in g]) for g in groups]
        kept = [(w, g) for w, g in words if w[0]]
        return [w for w, _ in kept], [g for _, g in kept]

    def _word(self, toks: list[int], group: list[int], starts: list[float], ends: list[float], probs: list[float]) -> tuple[str, float, float, float]:
        text = self.tokens.text([toks[j] for j in group]).strip()
        p = float(np.mean([probs[j] for j in group])) if probs else 0.0
        return text, starts[group[0]], ends[group[-1]], p


@dataclass
class _Task:
    """One window of one job, waiting for (or in) a batch."""

    job: int  # which job run it belongs to (batches count the jobs they mix)
    feats: np.ndarray  # log-mel features, computed in the job's thread
    n_samples: int
    lang: str | None
    opts: DecodeOptions
    future: "Future[tuple[list[_RawSeg], str, int | None]]"

    def key(self) -> tuple[object, ...]:
        """Windows decode together only with the same decoding options (``generate`` takes one
        beam size / temperature per call; ``align`` one task); the language and the initial
        prompt are per window (the prompt)."""
        o = self.opts
        return (o.beam_size, o.temperature, o.temperature_inc, o.word_timestamps, o.translate)


@dataclass
class BatchStats:
    """What the batcher did (tests and benchmarks read it; each batch is also logged)."""

    batches: int = 0
    windows: int = 0
    multi_job_batches: int = 0  # batches that held windows of more than one job
    max_jobs_in_batch: int = 0
    jobs_seen: set[int] = field(default_factory=set)


class _Batcher:
    """One queue of windows for every job the engine runs, one thread decoding them in batches.

    Why: on a GPU one job's windows rarely fill a batch (a 2-minute job is 4-5
    windows; the GPU default batch is 16), so many short jobs decoded one by
    one leave the GPU idle between small calls. Here the windows of all
    running jobs (``JOB_CONCURRENCY``) wait in one FIFO; a batch takes up to
    ``CT2_BATCH_SIZE`` of them (same decoding options, :meth:`_Task.key`) and
    waits at most ``CT2_BATCH_WAIT_MS`` for more — and only while some running
    job has no window queued yet (it may be about to add one): a lone job
    never waits. The jobs keep their own progress, checkpoints, cancel and
    time limits: each waits only for its own windows' futures, and a
    cancelled job's windows not yet in a batch are dropped.
    """

    def __init__(self, engine: "CT2Engine") -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._pending: list[_Task] = []
        self._active: dict[int, int] = {}  # job → nested transcriptions running (jobs that may still submit)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.stats = BatchStats()

    # the jobs' side

    def job_started(self, job: int) -> None:
        with self._cond:
            self._active[job] = self._active.get(job, 0) + 1

    def job_ended(self, job: int) -> None:
        with self._cond:
            left = self._active.get(job, 1) - 1
            if left > 0:
                self._active[job] = left
            else:
                self._active.pop(job, None)
            self._cond.notify_all()  # a batch waiting for this job's windows goes now

    def submit(self, job: int, windows: list[tuple[np.ndarray, int, str | None]],
               opts: DecodeOptions) -> "list[Future[tuple[list[_RawSeg], str, int | None]]]":
        """Queue one job's windows (features, samples, language) at once: they are never split by
        the timing of the job's own feature computation, only by the batch size."""
        futures: list[Future[tuple[list[_RawSeg], str, int | None]]] = [Future() for _ in windows]
        with self._cond:
            if self._closed:
                raise ModelLoadError("the CTranslate2 engine is closed")
            self._pending.extend(_Task(job, feats, n, lang, opts, fut) for (feats, n, lang), fut in zip(windows, futures))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ct2-batcher", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return futures

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    # the batcher's thread

    def _next_batch(self) -> list[_Task] | None:
        """The next batch (None once closed): FIFO from the first window, same key, bounded."""
        size, wait = self._engine.batch_size, self._engine.batch_wait_secs
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                for t in self._pending:
                    t.future.cancel()
                self._pending.clear()
                return None
            deadline = time.monotonic() + wait
            while True:
                key = self._pending[0].key()
                batch = [t for t in self._pending if t.key() == key][:size]
                queued_jobs = {t.job for t in self._pending}
                others_may_submit = any(job not in queued_jobs for job in self._active)
                left = deadline - time.monotonic()
                if len(batch) >= size or not others_may_submit or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            taken = {id(t) for t in batch}
            self._pending = [t for t in self._pending if id(t) not in taken]
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            batch = [t for t in batch if t.future.set_running_or_notify_cancel()]  # cancelled jobs' windows: dropped
            if not batch:
                continue
            t0 = time.monotonic()
            try:
                results = self._engine._run_round(batch)
            except BaseException as exc:  # noqa: BLE001 - every job of the batch hears it (OOM, a broken model)
                for t in batch:
                    t.future.set_exception(exc)
                continue
            for t, r in zip(batch, results):
                t.future.set_result(r)
            self._count(batch, time.monotonic() - t0)

    def _count(self, batch: list[_Task], wall: float) -> None:
        jobs = {t.job for t in batch}
        st = self.stats
        st.batches += 1
        st.windows += len(batch)
        st.multi_job_batches += len(jobs) > 1
        st.max_jobs_in_batch = max(st.max_jobs_in_batch, len(jobs))
        st.jobs_seen |= jobs
        log.info("batch run", extra={"windows": len(batch), "jobs": len(jobs), "wall_secs": round(wall, 3),
                                     "batches": st.batches, "multi_job_batches": st.multi_job_batches})


@dataclass
class _RawSeg:
    start: float  # window-relative seconds
    end: float
    tokens: list[int]
    words: list[tuple[str, float, float, float]] | None = None
    text: str = ""
    word_tokens: list[list[int]] | None = None  # each word's tokens (set with ``words``)


def _sentences(seg: _RawSeg, text: Callable[[list[int]], str] | None = None) -> list[_RawSeg]:
    """A window decoded without timestamp tokens, cut into segments at its aligned words: after a
    word that ends a sentence, before a pause of ``PAUSE_SECS``, and before a segment would pass
    ``SEGMENT_MAX_SECS``. Each segment's times are its first word's start and last word's end; its
    text is its words' text as decoded. A window without words (alignment off or empty) stays whole."""
    words, groups = seg.words or [], seg.word_tokens or []
    if not words or len(groups) != len(words):
        return [seg]
    out: list[_RawSeg] = []
    first = 0
    for k, (w, _, end, _) in enumerate(words):
        last = k == len(words) - 1
        nxt = None if last else words[k + 1]
        cut = last or w.endswith(_SENTENCE_END) or (nxt is not None and nxt[1] - end >= PAUSE_SECS) \
            or (nxt is not None and nxt[2] - words[first][1] > SEGMENT_MAX_SECS)
        if cut:
            part = words[first:k + 1]
            toks = [t for g in groups[first:k + 1] for t in g]
            body = " ".join(x[0] for x in part) if text is None else text(toks).strip()
            out.append(_RawSeg(part[0][1], max(part[-1][2], part[0][1]), toks, list(part), body, groups[first:k + 1]))
            first = k + 1
    return out


def _token_times(alignments: Sequence[Sequence[int]], n_tokens: int) -> tuple[list[float], list[float]]:
    """Per text token, the time its DTW path enters (start) and the time the
    next token's path enters (end), in seconds (50 frames per second)."""
    if not alignments:
        return [0.0] * n_tokens, [0.0] * n_tokens
    pairs = np.asarray(alignments, dtype=np.int64)
    text_idx, time_idx = pairs[:, 0], pairs[:, 1]
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] * SECS_PER_TIMESTAMP
    # one entry per token plus the end (the EOT position) when the path reaches it
    entries = list(jump_times[: n_tokens + 1])
    while len(entries) < n_tokens + 1:
        entries.append(entries[-1] if entries else 0.0)
    starts = [float(x) for x in entries[:n_tokens]]
    ends = [float(max(entries[j + 1], entries[j])) for j in range(n_tokens)]
    return starts, ends


def _rows(enc: Any, rows: list[int], ct2: Any) -> Any:
    """Some rows of an encoder output (a CPU StorageView; CUDA goes through the host)."""
    arr = np.asarray(enc) if enc.device == "cpu" else np.asarray(enc.to_device(ct2.Device.cpu))
    return ct2.StorageView.from_array(np.ascontiguousarray(arr[rows]))


def _absolute(seg: _RawSeg, chunk: Chunk, window_start: int) -> Segment:
    """Window-relative seconds → absolute seconds, clamped to the chunk."""
    offset = window_start / SAMPLE_RATE
    lo, hi = chunk.start_secs, chunk.end_secs

    def t(x: float) -> float:
        return round(min(max(offset + x, lo), hi), 3)

    text = seg.text
    words = [Word(text=w, start=t(s), end=t(max(e, s)), probability=round(min(max(p, 0.0), 1.0), 4)) for w, s, e, p in seg.words or []]
    return Segment(index=0, start=t(seg.start), end=t(max(seg.end, seg.start)), text=text, words=words)
