"""Cut long audio into chunks of at most ~60 s at silences.

Works on the 10 ms energy envelope from :mod:`whisperop.inference.audio`, so
planning a 12-hour file costs milliseconds and no audio in memory. Rules:

* leading and trailing silence is trimmed;
* a chunk never ends inside speech when a pause (``min_silence_secs`` of
  frames below the silence threshold) exists in its window: it ends at the
  latest such pause, keeping chunks long (fewer whisper calls);
* silence between chunks is dropped, keeping ``pad_secs`` on either side;
* audio without any usable pause is cut hard at ``max_secs``;
* all-silent audio yields no chunks (and so a transcript with 0 segments).

Chunks carry absolute sample offsets so segment and word times are absolute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisperop.inference.audio import FRAME_SAMPLES, SAMPLE_RATE

FRAMES_PER_SEC = SAMPLE_RATE // FRAME_SAMPLES
#: Frames quieter than this are silence whatever the recording's noise floor.
ABSOLUTE_SILENCE_DB = -60.0


@dataclass(frozen=True)
class ChunkingConfig:
    max_secs: float = 60.0
    min_secs: float = 5.0
    min_silence_secs: float = 0.3
    pad_secs: float = 0.2


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first sample (absolute)
    end: int  # one past the last sample (absolute)

    @property
    def start_secs(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_secs(self) -> float:
        return self.end / SAMPLE_RATE

    @property
    def duration_secs(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def silence_threshold_db(frame_db: np.ndarray) -> float:
    """A level between the noise floor and speech, never below absolute silence.

    Adapts to the recording: 12 dB above the quietest 5 % of frames, but at
    least 20 dB under loud speech, and anything below -60 dBFS is silent.
    """
    if frame_db.size == 0:
        return ABSOLUTE_SILENCE_DB
    floor = float(np.percentile(frame_db, 5))
    loud = float(np.percentile(frame_db, 90))
    return max(min(floor + 12.0, loud - 20.0), ABSOLUTE_SILENCE_DB)


def _silence_runs(silent: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges of consecutive silent frames at least ``min_len`` long."""
    padded = np.concatenate([[False], silent, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    return [(int(s), int(e)) for s, e in zip(starts, ends) if e - s >= min_len]


def plan_chunks(frame_db: np.ndarray, n_samples: int, config: ChunkingConfig = ChunkingConfig()) -> list[Chunk]:
    if config.max_secs <= 0 or frame_db.size == 0 or n_samples == 0:
        return []
    return _plan(frame_db < silence_threshold_db(frame_db), n_samples, config)[0]


def plan_prefix(frame_db: np.ndarray, config: ChunkingConfig = ChunkingConfig(),
                threshold_db: float | None = None) -> list[Chunk]:
    """The leading chunks that the first ``frame_db.size`` frames of a file
    already decide, for decoding them while the rest is still being decoded.

    :func:`plan_chunks` is not causal: its silence threshold is a percentile
    of the *whole* file's envelope, and its end trim uses the file's last
    voiced frame. Given the whole file's threshold (``threshold_db``) the
    chunks returned here are exactly the first chunks of the full plan: a cut
    at ``pos`` looks only at pauses starting before ``pos + max_secs``, and
    only chunks whose window ends before the last voiced frame seen are
    returned (every pause starting before that frame has ended within the
    prefix). Without it (the engine, mid-decode) the prefix's own threshold
    is used, so the result is a guess that the engine checks against the
    final plan chunk by chunk (:mod:`whisperop.inference.streamplan`)."""
    if config.max_secs <= 0 or frame_db.size == 0:
        return []
    silent = frame_db < (silence_threshold_db(frame_db) if threshold_db is None else threshold_db)
    chunks, horizon = _plan(silent, frame_db.size * FRAME_SAMPLES, config)
    max_frames = int(config.max_secs * FRAMES_PER_SEC)
    out: list[Chunk] = []
    for c in chunks:
        if c.start // FRAME_SAMPLES + max_frames >= horizon:
            break
        out.append(c)
    return out


def _plan(silent: np.ndarray, n_samples: int, config: ChunkingConfig) -> tuple[list[Chunk], int]:
    """The chunks over a silence mask, and the last voiced frame (-1: none)."""
    voiced = np.flatnonzero(~silent)
    if voiced.size == 0:
        return [], -1
    pad = int(round(config.pad_secs * FRAMES_PER_SEC))
    max_frames = int(config.max_secs * FRAMES_PER_SEC)
    min_frames = min(int(config.min_secs * FRAMES_PER_SEC), max_frames // 2)
    first = max(0, int(voiced[0]) - pad)
    last = min(silent.size, int(voiced[-1]) + 1 + pad)
    runs = [r for r in _silence_runs(silent, int(round(config.min_silence_secs * FRAMES_PER_SEC))) if first < r[0] and r[1] < last]

    ranges: list[tuple[int, int]] = []
    pos = first
    while pos < last:
        limit = pos + max_frames
        if last <= limit:
            ranges.append((pos, last))
            break
        cut: tuple[int, int] | None = None
        for s, e in reversed(runs):
            keep = min(pad, (e - s) // 2)
            if s + keep <= limit and s >= pos + min_frames:
                cut = (s + keep, e - keep)
                break
        if cut is None:  # no pause in the window: hard cut at the limit
            cut = (limit, limit)
        ranges.append((pos, cut[0]))
        pos = cut[1]

    chunks = [
        Chunk(i, s * FRAME_SAMPLES, min(e * FRAME_SAMPLES, n_samples))
        for i, (s, e) in enumerate(r for r in ranges if r[1] > r[0])
    ]
    return chunks, int(voiced[-1])
