"""Decode a file's first chunks while the rest of the file is still being decoded.

Issue 18: on the H100 our 8-stream job spent 0.67 s of a 4.09 s run decoding
the FLAC and planning chunks before any stream had work (the raw N-context
harness starts with the PCM cut). :func:`plan_chunks` cannot simply run on
the audio decoded so far: its silence threshold is a percentile of the whole
file (:func:`whisperop.inference.chunking.plan_prefix` says exactly what a
prefix decides). So the leading chunks are *guessed* from the prefix's own
threshold and decoded at once, and the final plan — the one the job would
have had anyway — is checked chunk by chunk: a guessed chunk counts only
where the final plan holds the very same chunk (index, start and end), and
the others are dropped (their decode aborted). The result is therefore the
non-streamed result, and the reports keep their order: the final plan is
saved (checkpoint) and announced (``on_decoded``) before any record or
progress, which wait here until then.

How far ahead: at most 2 × the streams in flight, so a mistaken guess costs
at most that many chunk decodes. How often: a plan of the prefix runs on the
decoding thread and costs up to ~9 ms for half an hour, so the prefix is
planned again only once it has grown by a quarter (and by one chunk's
length): on the 34-minute FLAC, planning at every 10 s block made the decode
1.65 s instead of 1.04–1.14 s (202 plans); growing by a quarter, 1.01–1.11 s
(16 plans). With the language left to detection, the first chunk detects it
and the others wait for it, as in the non-streamed path.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np

from whisperop.core.checkpoints import ChunkRecord
from whisperop.inference.audio import SAMPLE_RATE, DecodedAudio, DecodeProgress
from whisperop.inference.chunking import Chunk, ChunkingConfig, plan_prefix
from whisperop.inference.engine import ChunkPipeline, _Limits, _ThrottledCancel, finish_futures
from whisperop.inference.whispercpp import DecodeOptions

log = logging.getLogger("whisperop.engine")


class _DroppableCancel(_ThrottledCancel):
    """The job's cancel check, plus a flag that stops one guessed chunk."""

    def __init__(self, job: _ThrottledCancel) -> None:
        super().__init__(None)
        self._job = job
        self.dropped = False

    def __call__(self, force: bool = False) -> bool:
        return self.dropped or self._job(force)


@dataclass
class _Started:
    future: Future[ChunkRecord]
    cancel: _DroppableCancel


class EarlyDecodes:
    """One job's chunk decodes: the guessed ones started while the file
    decodes (:meth:`on_block`), then the final plan's (:meth:`take`,
    :meth:`submit`), all on the engine's shared decode threads
    (:meth:`ChunkPipeline.schedule`: the oldest job's chunks first)."""

    def __init__(self, pipeline: ChunkPipeline, config: ChunkingConfig, opts: DecodeOptions, cancel: _ThrottledCancel,
                 limits: _Limits) -> None:
        self.pipeline = pipeline
        self.config = config
        self.opts = opts  # language None: the first chunk detects it
        self.cancel = cancel
        self.limits = limits
        self._futures: list[Future[ChunkRecord]] = []
        self._audio: DecodedAudio | None = None
        self._started: dict[Chunk, _Started] = {}
        self._language = opts.language
        self._detect: Chunk | None = None  # the guessed chunk that detects the language
        self._max_ahead = 2 * max(1, pipeline.parallelism)
        self._next_plan = 0  # samples: the prefix is planned again from this length on
        self._head: list[Chunk] = []  # the latest guess
        self._t0 = time.monotonic()
        self.first_start_secs: float | None = None  # when the first chunk was handed to a stream
        self.guessed = self.used = self.dropped = 0

    # ── while the file decodes ──────────────────────────────────────────

    def on_block(self, progress: DecodeProgress) -> None:
        """Called by the decoder after every ~10 s block: guess the leading
        chunks from the audio so far and start the ones not started yet."""
        if self._audio is None:
            self._audio = DecodedAudio(progress.path, progress.n_samples, np.zeros(0, dtype=np.float32))
        self._audio.n_samples = progress.n_samples
        if self._ahead() >= self._max_ahead or self.cancel():
            return
        if self._language is None and self._detect is not None:
            if not self._detect_done():
                return  # the others wait for the language
        if progress.n_samples >= self._next_plan:
            self._head = plan_prefix(progress.frame_db(), self.config)
            self._next_plan = max(progress.n_samples + int(self.config.max_secs * SAMPLE_RATE), progress.n_samples * 5 // 4)
            for chunk, started in list(self._started.items()):  # a better guess replaces an earlier one
                if chunk.index < len(self._head) and self._head[chunk.index] != chunk:
                    self._drop(chunk, started)
        for chunk in self._head:
            if self._ahead() >= self._max_ahead:
                break
            if chunk in self._started:
                continue
            if self._language is None:
                if self._detect is not None:
                    break
                self._detect = chunk
            self._started[chunk] = self._start(self._audio, chunk, replace(self.opts, language=self._language))
            self.guessed += 1

    def _detect_done(self) -> bool:
        started = self._started.get(self._detect) if self._detect is not None else None
        if started is None or started.cancel.dropped:
            self._detect = None  # dropped: the next guess detects
            return True
        if not started.future.done():
            return False
        if started.future.exception() is None:
            self._language = started.future.result().language
            return True
        return False  # failed (cancelled job): nothing more to guess

    def _ahead(self) -> int:
        return sum(1 for s in self._started.values() if not s.future.done() and not s.cancel.dropped)

    def _drop(self, chunk: Chunk, started: _Started) -> None:
        started.cancel.dropped = True
        started.future.cancel()
        del self._started[chunk]
        self.dropped += 1

    def _start(self, audio: DecodedAudio, chunk: Chunk, opts: DecodeOptions) -> _Started:
        if self.first_start_secs is None:
            self.first_start_secs = time.monotonic() - self._t0
        cancel = _DroppableCancel(self.cancel)
        fut = self.pipeline.schedule((self.limits.job_started, chunk.index), lambda: self._decode(audio, chunk, opts, cancel))
        self._futures.append(fut)
        return _Started(fut, cancel)

    def _decode(self, audio: DecodedAudio, chunk: Chunk, opts: DecodeOptions, cancel: _DroppableCancel) -> ChunkRecord:
        records = list(self.pipeline.decode_chunks(audio, [chunk], opts, cancel, self.limits))
        return records[0]

    # ── once the plan is final ──────────────────────────────────────────

    def take(self, chunks: list[Chunk]) -> dict[int, Future[ChunkRecord]]:
        """The guessed decodes the final plan ``chunks`` keeps (by chunk
        index); every other one is dropped. With the language left to
        detection, none is kept unless the final plan's first chunk is the
        one that detected it (the others were decoded in its language)."""
        keep_any = self.opts.language is not None or (self._detect is not None and bool(chunks) and chunks[0] == self._detect)
        kept: dict[int, Future[ChunkRecord]] = {}
        for chunk, started in list(self._started.items()):
            if keep_any and not started.cancel.dropped and chunk.index < len(chunks) and chunks[chunk.index] == chunk:
                kept[chunk.index] = started.future
            else:
                self._drop(chunk, started)
        self.used = len(kept)
        log.info("chunk plan streamed", extra={"chunks": len(chunks), "guessed": self.guessed, "used": self.used,
                                               "dropped": self.dropped, "first_chunk_started_secs":
                                               None if self.first_start_secs is None else round(self.first_start_secs, 3)})
        return kept

    def submit(self, audio: DecodedAudio, chunk: Chunk, opts: DecodeOptions) -> Future[ChunkRecord]:
        """Decode one chunk of the final plan on the engine's shared decode threads, in this job's place in line."""
        return self._start(audio, chunk, opts).future

    def close(self) -> None:
        """Stop what still runs (a failed or cancelled job) and wait for it."""
        for started in self._started.values():
            started.cancel.dropped = True
        finish_futures(self._futures)
