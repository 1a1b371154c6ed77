"""Chunk planning on synthetic energy envelopes (10 ms frames)."""

from __future__ import annotations

import numpy as np
import pytest

from whisperop.inference.audio import FRAME_SAMPLES, SAMPLE_RATE
from whisperop.inference.chunking import ChunkingConfig, plan_chunks, plan_prefix, silence_threshold_db

SPEECH_DB, SILENCE_DB = -20.0, -90.0
FPS = SAMPLE_RATE // FRAME_SAMPLES


def envelope(*parts: tuple[str, float]) -> np.ndarray:
    """('s', secs) speech / ('q', secs) quiet → per-frame dB array."""
    out = [np.full(int(round(secs * FPS)), SPEECH_DB if kind == "s" else SILENCE_DB, dtype=np.float32) for kind, secs in parts]
    return np.concatenate(out)


def plan(db: np.ndarray, **cfg: float) -> list[tuple[float, float]]:
    chunks = plan_chunks(db, db.size * FRAME_SAMPLES, ChunkingConfig(**cfg))
    return [(round(c.start_secs, 2), round(c.end_secs, 2)) for c in chunks]


def test_short_audio_is_one_chunk_with_silence_trimmed() -> None:
    db = envelope(("q", 2.0), ("s", 10.0), ("q", 3.0))
    assert plan(db, max_secs=60, pad_secs=0.2) == [(1.8, 12.2)]


def test_all_silence_gives_no_chunks() -> None:
    assert plan(envelope(("q", 30.0))) == []


def test_empty_envelope_gives_no_chunks() -> None:
    assert plan_chunks(np.zeros(0, np.float32), 0) == []


def test_cuts_snap_to_the_latest_pause_in_the_window() -> None:
    # pauses at 20 s and 45 s; the 60 s window must cut in the 45 s pause, not inside speech
    db = envelope(("s", 20.0), ("q", 1.0), ("s", 24.0), ("q", 1.0), ("s", 30.0))
    chunks = plan(db, max_secs=60, pad_secs=0.2, min_secs=5)
    assert chunks == [(0.0, 45.2), (45.8, 76.0)]


def test_no_pause_means_hard_cut_at_the_limit() -> None:
    db = envelope(("s", 150.0))
    assert plan(db, max_secs=60) == [(0.0, 60.0), (60.0, 120.0), (120.0, 150.0)]


def test_pause_shorter_than_min_silence_is_not_a_cut_point() -> None:
    db = envelope(("s", 40.0), ("q", 0.1), ("s", 40.0))
    assert plan(db, max_secs=60, min_silence_secs=0.3) == [(0.0, 60.0), (60.0, 80.1)]


def test_chunks_never_exceed_max_and_never_cut_speech_when_pauses_exist() -> None:
    rng = np.random.default_rng(1)
    parts: list[tuple[str, float]] = []
    for _ in range(80):
        parts += [("s", float(rng.uniform(2, 12))), ("q", float(rng.uniform(0.4, 2.0)))]
    db = envelope(*parts)
    chunks = plan_chunks(db, db.size * FRAME_SAMPLES, ChunkingConfig(max_secs=30, min_secs=5))
    silent = db < silence_threshold_db(db)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start >= a.end, "chunks overlap"
        # every cut lies in silence: the frames at the boundary are silent
        assert silent[a.end // FRAME_SAMPLES - 1] or silent[min(a.end // FRAME_SAMPLES, silent.size - 1)]
    assert all(c.duration_secs <= 30.0 + 1e-6 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # chunks cover all speech frames
    covered = np.zeros(db.size, bool)
    for c in chunks:
        covered[c.start // FRAME_SAMPLES : c.end // FRAME_SAMPLES] = True
    assert covered[~silent].all()


def test_threshold_adapts_to_noise_floor_but_not_below_absolute_silence() -> None:
    noisy = np.concatenate([np.full(500, -50.0), np.full(500, -15.0)]).astype(np.float32)
    assert -50.0 < silence_threshold_db(noisy) < -15.0
    digital = np.concatenate([np.full(500, -100.0), np.full(500, -20.0)]).astype(np.float32)
    assert silence_threshold_db(digital) == -60.0


def test_offsets_are_absolute_samples() -> None:
    db = envelope(("q", 5.0), ("s", 3.0))
    (chunk,) = plan_chunks(db, db.size * FRAME_SAMPLES, ChunkingConfig(pad_secs=0.0))
    assert chunk.start == 5 * SAMPLE_RATE and chunk.end == 8 * SAMPLE_RATE


def _random_envelope(rng: np.random.Generator, secs: float) -> np.ndarray:
    """Speech-like 10 ms envelope: voiced stretches and pauses of random
    lengths and levels (pauses of 0.05–2 s, some under the minimum)."""
    parts: list[np.ndarray] = []
    total = int(secs * 100)
    while sum(p.size for p in parts) < total:
        parts.append(rng.normal(-20.0, 4.0, int(rng.integers(50, 2500))))  # speech
        parts.append(rng.normal(rng.uniform(-80.0, -45.0), 3.0, int(rng.integers(5, 200))))  # pause
    return np.concatenate(parts)[:total].astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_prefix_plan_with_the_files_threshold_is_the_full_plans_head(seed: int) -> None:
    """The streamed plan's rule: what a prefix decides (given the whole
    file's threshold) is exactly the full plan's first chunks, at every
    prefix length, and grows to all but the last few chunks."""
    rng = np.random.default_rng(seed)
    db = _random_envelope(rng, float(rng.uniform(60, 900)))
    cfg = ChunkingConfig(max_secs=float(rng.choice([20.0, 30.0, 60.0])), min_secs=float(rng.choice([0.0, 5.0])))
    full = plan_chunks(db, db.size * FRAME_SAMPLES, cfg)
    thr = silence_threshold_db(db)
    longest = 0
    for p in sorted(set(rng.integers(1, db.size, 60).tolist()) | {db.size}):
        head = plan_prefix(db[:p], cfg, threshold_db=thr)
        assert head == full[: len(head)], p
        assert len(head) >= longest  # a longer prefix never takes a decision back
        longest = len(head)
    # the whole envelope decides every chunk that starts a window before the last one
    assert longest >= sum(1 for c in full if c.start_secs + cfg.max_secs < full[-1].end_secs - 0.25)


def test_the_plan_is_not_causal_so_a_prefix_alone_only_guesses() -> None:
    """plan_chunks' threshold is a percentile of the whole envelope: a quiet
    pause that is silence in the whole file (loud speech later raises the
    threshold) is speech in the first minute alone, so the first chunk differs."""
    db = np.full(12_000, -20.0, np.float32)  # 120 s of speech at -20 dB
    db[3000:3050] = -30.0  # a 0.5 s pause at 30 s: silence only against the louder speech later
    db[6000:] = -5.0
    db[8000:8100] = -70.0
    cfg = ChunkingConfig(max_secs=40.0)
    full = plan_chunks(db, db.size * FRAME_SAMPLES, cfg)
    guess = plan_prefix(db[:5500], cfg)
    exact = plan_prefix(db[:5500], cfg, threshold_db=silence_threshold_db(db))
    assert exact == full[: len(exact)] and exact
    assert guess and guess[0] != full[0]
