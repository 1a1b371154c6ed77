"""``ENGINE=ctranslate2`` on the real whisper base weights (the CTranslate2
export the offline packages ship, int8 on this CPU), through the same
pipeline as whisper.cpp: transcript, word timings, language detection,
progress, cancel, time limits and resume from a checkpoint.

CTranslate2 decodes jfk.wav in ~1 s here, so these run in the default suite;
the speech files are espeak-ng renderings (tests/support/audio.py)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from whisperop.core.errors import AudioDecodeError, JobCancelled, ModelLoadError, ModelNotFoundError
from whisperop.core.models import TranscriptionResult
from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import SAMPLE_RATE, decode_audio, write_wav
from whisperop.inference.ct2engine import CT2Engine, log_mel
from whisperop.inference.engine import ChunkPipeline, Progress, TranscribeRequest, WhisperEngine, create_engine
from whisperop.modelstore.cache import resolve_model
from whisperop.modelstore.mel import mel_filters
from whisperop.testing.speech import word_error_rate
from tests.engine.test_limits_checkpoints import MemoryCheckpoint
from tests.support import audio as audio_mod
from tests.support.audio import noise_bursts_wav

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small boat drifted slowly across the quiet lake at dawn.",
    "Children were playing football in the park after school today.",
    "The old library downtown keeps thousands of rare books and maps.",
    "Fresh bread from the bakery smells wonderful early in the morning.",
    "Heavy rain is expected tomorrow so bring an umbrella with you.",
]


@pytest.fixture(scope="module")
def ct2_model() -> Path:
    return resolve_model("base-ct2", EngineSettings().model_cache_dir)


def _settings(**env: Any) -> EngineSettings:
    base: dict[str, Any] = {"USE_GPU": False, "ENGINE": "ctranslate2"}
    return EngineSettings(**{**base, **env})


@pytest.fixture(scope="module")
def engine(ct2_model: Path) -> Iterator[ChunkPipeline]:
    eng = create_engine(ct2_model, _settings())
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def six_sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~25 s of speech with 1.2 s pauses, cut into one chunk per sentence
    (CHUNK_MAX_SECS=5 in the tests that use it)."""
    d = tmp_path_factory.mktemp("speech")
    parts = [audio_mod.speech_wav(d / f"s{i}.wav", text) for i, text in enumerate(SENTENCES)]
    out = d / "six.wav"
    inputs: list[str] = []
    for p in parts:
        inputs += ["-i", str(p)]
    n = len(parts)
    pads = "".join(f"[{i}:a]aresample=16000,apad=pad_dur=1.2[a{i}];" for i in range(n))
    concat = "".join(f"[a{i}]" for i in range(n)) + f"concat=n={n}:v=0:a=1,aformat=sample_fmts=s16:channel_layouts=mono"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *inputs, "-filter_complex", pads + concat,
                    "-ar", "16000", str(out)], check=True)
    return out


def _words(result: TranscriptionResult) -> list[str]:
    return audio_mod.normalize_words(" ".join(s.text for s in result.segments))


def test_the_factory_picks_the_backend_by_engine(engine: ChunkPipeline, ct2_model: Path, tiny_model: Path) -> None:
    assert isinstance(engine, CT2Engine)
    assert engine.compute_type == "int8" and engine.backend == "CPU"
    cpp = create_engine(tiny_model, EngineSettings(USE_GPU=False))
    try:
        assert isinstance(cpp, WhisperEngine)
    finally:
        cpp.close()
    with pytest.raises(ModelLoadError, match="ENGINE=ctranslate2"):
        create_engine(ct2_model, EngineSettings(USE_GPU=False, ENGINE="whispercpp"))  # the default (auto) loads it
    with pytest.raises(ModelNotFoundError, match="base-ct2"):
        create_engine(tiny_model, _settings())


def test_cold_start_is_load_plus_a_tiny_warm_up(engine: ChunkPipeline) -> None:
    # the warm-up decodes 2 s of features, not a 30 s window: a small share of the load
    assert engine.warmup_secs < max(1.0, engine.load_secs), (engine.load_secs, engine.warmup_secs)


def test_log_mel_matches_faster_whispers_features() -> None:
    """Our features are whisper's: the same as faster-whisper's extractor (numpy, on the same padded window)."""
    fe = pytest.importorskip("faster_whisper.feature_extractor")
    with decode_audio(audio_mod.JFK_WAV) as a:
        pcm = a.read()
    ours = log_mel(pcm, mel_filters(SAMPLE_RATE, 400, 80))
    padded = np.zeros(30 * SAMPLE_RATE, dtype=np.float32)
    padded[: pcm.size] = pcm
    theirs = fe.FeatureExtractor(feature_size=80)(padded, padding=0)[:, :3000]
    assert ours.shape == (80, 3000)
    assert np.abs(ours - theirs).max() < 2e-3


def test_jfk_word_for_word_with_monotonic_word_times(engine: ChunkPipeline) -> None:
    result = engine.transcribe_file(audio_mod.JFK_WAV, TranscribeRequest())
    assert result.language == "en"  # detected
    assert _words(result) == audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    words = [w for s in result.segments for w in s.words]
    assert audio_mod.normalize_words(" ".join(w.text for w in words)) == _words(result)
    for s in result.segments:
        assert s.words and s.start <= s.words[0].start + 0.5 and s.words[-1].end <= s.end + 0.5
    for a, b in zip(words, words[1:]):
        assert a.start <= a.end <= b.start + 1e-6 <= b.end + 1e-6, (a, b)
    # the speech starts at ~0.3 s and ends at ~10.6 s; words are spread over it, not bunched
    assert words[0].start < 1.0 and words[-1].end > 9.5
    assert all(0.0 <= w.probability <= 1.0 for w in words)


def test_the_language_is_detected(engine: ChunkPipeline, tmp_path: Path) -> None:
    wav = audio_mod.speech_wav(tmp_path / "de.wav", "Guten Morgen, wie geht es dir heute? Das Wetter ist sehr schön.", voice="de")
    result = engine.transcribe_file(wav, TranscribeRequest())
    assert result.language == "de"
    assert result.segments


def test_progress_per_chunk_in_batches(ct2_model: Path, six_sentences: Path) -> None:
    eng = create_engine(ct2_model, _settings(CHUNK_MAX_SECS=5, CHUNK_MIN_SECS=1, CT2_BATCH_SIZE=4))
    seen: list[Progress] = []
    planned: list[int] = []
    try:
        result = eng.transcribe_file(six_sentences, TranscribeRequest(language="en"), on_progress=seen.append,
                                     on_decoded=lambda secs, n: planned.append(n))
    finally:
        eng.close()
    assert planned == [result.chunks] and result.chunks >= 5
    assert [p.chunk for p in seen] == list(range(1, result.chunks + 1))
    # one segment per sentence; espeak's voice on 5 s windows is hard for base (26 % WER measured)
    assert len(result.segments) == len(SENTENCES), [s.text for s in result.segments]
    assert word_error_rate(" ".join(SENTENCES), " ".join(s.text for s in result.segments)) < 0.4


def test_a_window_is_decoded_without_timestamps_and_cut_at_its_aligned_words(engine: ChunkPipeline,
                                                                           six_sentences: Path) -> None:
    """Six sentences (~25 s) are one window: decoded without timestamp tokens, cut into one
    segment per sentence, each spanning exactly its first word's start to its last word's end
    (in timestamp mode the times were whisper's timestamp tokens, not the words')."""
    result = engine.transcribe_file(six_sentences, TranscribeRequest(language="en"))
    assert result.chunks == 1
    assert len(result.segments) == len(SENTENCES), [s.text for s in result.segments]
    for seg in result.segments:
        assert seg.words and (seg.start, seg.end) == (seg.words[0].start, seg.words[-1].end), seg
    for a, b in zip(result.segments, result.segments[1:]):
        assert a.end <= b.start
    assert word_error_rate(" ".join(SENTENCES), " ".join(s.text for s in result.segments)) < 0.25


def test_segments_from_words_cut_at_sentence_ends_pauses_and_length() -> None:
    from whisperop.inference.ct2engine import SEGMENT_MAX_SECS, _RawSeg, _sentences

    def seg(words: list[tuple[str, float, float]]) -> _RawSeg:
        ws = [(w, s, e, 0.9) for w, s, e in words]
        return _RawSeg(0.0, 30.0, list(range(len(ws))), ws, "", [[i] for i in range(len(ws))])

    def texts(parts: list[_RawSeg]) -> list[tuple[str, float, float]]:
        return [(p.text, p.start, p.end) for p in parts]

    # a sentence end, then a pause of 1.5 s inside the second sentence
    parts = _sentences(seg([("Hello", 0.2, 0.6), ("there.", 0.6, 1.0), ("How", 1.1, 1.3), ("are", 1.3, 1.5),
                            ("you", 3.0, 3.2), ("today?", 3.2, 3.7)]))
    assert texts(parts) == [("Hello there.", 0.2, 1.0), ("How are", 1.1, 1.5), ("you today?", 3.0, 3.7)]
    # no punctuation, no pause: cut before the segment would pass SEGMENT_MAX_SECS
    words = [(f"w{i}", i * 0.5, i * 0.5 + 0.4) for i in range(60)]
    parts = _sentences(seg(words))
    assert all(p.end - p.start <= SEGMENT_MAX_SECS for p in parts) and len(parts) == 3
    assert [w for p in parts for w, *_ in p.words or []] == [w for w, *_ in words]
    # a window without words (alignment off) stays one segment
    whole = _RawSeg(0.0, 30.0, [1, 2], None, "text")
    assert _sentences(whole) == [whole]


def test_cancel_stops_at_the_next_batch(ct2_model: Path, six_sentences: Path) -> None:
    eng = create_engine(ct2_model, _settings(CHUNK_MAX_SECS=5, CHUNK_MIN_SECS=1, CT2_BATCH_SIZE=1))
    seen: list[Progress] = []
    try:
        with pytest.raises(JobCancelled):
            eng.transcribe_file(six_sentences, TranscribeRequest(language="en"), on_progress=seen.append,
                                should_cancel=lambda: len(seen) >= 2)
    finally:
        eng.close()
    assert 2 <= len(seen) < seen[0].chunks_total


def test_resume_from_a_checkpoint_gives_the_same_transcript(ct2_model: Path, six_sentences: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(CHUNK_MAX_SECS=5, CHUNK_MIN_SECS=1, CT2_BATCH_SIZE=2)
    eng = create_engine(ct2_model, settings)
    try:
        whole = eng.transcribe_file(six_sentences, TranscribeRequest())
        ckpt = MemoryCheckpoint()
        with pytest.raises(JobCancelled):
            eng.transcribe_file(six_sentences, TranscribeRequest(), checkpoint=ckpt, should_cancel=lambda: len(ckpt.records) >= 3)
        done_first = set(ckpt.records)
        assert 3 <= len(done_first) < whole.chunks
        caplog.set_level(logging.INFO, logger="whisperop.ct2engine")
        caplog.clear()
        resumed = eng.transcribe_file(six_sentences, TranscribeRequest(), checkpoint=ckpt)
    finally:
        eng.close()
    decoded = [c for r in caplog.records if r.getMessage() == "batch decoded" for c in r.__dict__["chunks"]]
    assert sorted(decoded) == sorted(set(range(whole.chunks)) - done_first)  # only the rest
    assert resumed.language == whole.language == "en"
    assert [s.text for s in resumed.segments] == [s.text for s in whole.segments]
    assert [(w.start, w.end) for s in resumed.segments for w in s.words] == [(w.start, w.end) for s in whole.segments for w in s.words]


def test_a_batch_over_its_limit_is_retried_per_window(ct2_model: Path, six_sentences: Path) -> None:
    """The slow-chunk hook holds the first attempt of chunk 0 past its limit
    (CTranslate2 cannot abort a call: the engine stops waiting on it)."""
    eng = create_engine(ct2_model, _settings(CHUNK_MAX_SECS=5, CHUNK_MIN_SECS=1, CT2_BATCH_SIZE=2,
                                             CHUNK_TIME_LIMIT_MIN_SECS=0, WHISPEROP_FAULT_SLOW_CHUNK="0:1"))
    try:
        result = eng.transcribe_file(six_sentences, TranscribeRequest(language="en", chunk_time_limit_factor=0.4))
    finally:
        eng.close()
    assert [d.index for d in result.degraded_chunks] == [0, 1]  # the batch of chunks 0 and 1
    assert all(not d.failed and "finished in time" in d.reason for d in result.degraded_chunks)
    assert "fox" in _words(result)  # chunk 0's text came back on the retry


def test_ct2_model_in_the_store_is_the_export_as_ctranslate2_loads_it(ct2_model: Path) -> None:
    assert (ct2_model / "model.bin").stat().st_size > 100_000_000
    assert not list(ct2_model.glob("model.bin.part*"))
    config = json.loads((ct2_model / "config.json").read_text())
    assert config["alignment_heads"]  # what word timestamps (align) need


# ── the shared pipeline, the same assertions on both engines ────────────────


@pytest.fixture(scope="module", params=["whispercpp", "ctranslate2"])
def any_engine(request: pytest.FixtureRequest, tiny_model: Path, ct2_model: Path) -> Iterator[ChunkPipeline]:
    """whisper.cpp on the tiny random-weight model (fast), CTranslate2 on base."""
    if request.param == "whispercpp":
        eng = create_engine(tiny_model, EngineSettings(USE_GPU=False, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    else:
        eng = create_engine(ct2_model, _settings(CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    yield eng
    eng.close()


def test_both_engines_all_silence_gives_zero_segments(any_engine: ChunkPipeline, tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(SAMPLE_RATE * 5, np.float32))
    result = any_engine.transcribe_file(path)
    assert result.segments == [] and result.chunks == 0 and result.duration_secs == 5.0


def test_both_engines_surface_decode_errors_as_typed_errors(any_engine: ChunkPipeline, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEfmt garbage" * 50)
    with pytest.raises(AudioDecodeError):
        any_engine.transcribe_file(junk)


def test_both_engines_report_progress_per_chunk_with_absolute_times(any_engine: ChunkPipeline, tmp_path: Path) -> None:
    wav = noise_bursts_wav(tmp_path / "b.wav", 3, speech_secs=6.0, pause_secs=1.5)
    seen: list[Progress] = []
    result = any_engine.transcribe_file(wav, TranscribeRequest(language="en"), on_progress=seen.append)
    assert result.chunks >= 2 and [p.chunk for p in seen] == list(range(1, result.chunks + 1))
    assert all(0.0 <= s.start <= s.end <= result.duration_secs for s in result.segments)


def test_both_engines_translate_and_hold_the_given_language(any_engine: ChunkPipeline, tmp_path: Path) -> None:
    from whisperop.core.models import Task

    result = any_engine.transcribe_file(noise_bursts_wav(tmp_path / "b.wav", 1), TranscribeRequest(language="de", task=Task.translate))
    assert result.language == "de"
