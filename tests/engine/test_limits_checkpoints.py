"""Bounded chunks (time limit → retry → failed chunk) and resume from chunk
checkpoints, on the real engine (tiny random-weight model through whisper.cpp;
the resume equality on real speech with the base weights is ``slow``).

The slow chunk is the test hook ``WHISPEROP_FAULT_SLOW_CHUNK``: it sleeps in
whisper.cpp's abort callback, so the decode really runs long and the real
limit (a deadline checked in that same callback) is what stops it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from whisperop.core.checkpoints import ChunkRecord
from whisperop.core.errors import JobCancelled
from whisperop.core.models import TranscriptionResult
from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import SAMPLE_RATE, write_wav
from whisperop.inference.engine import TranscribeRequest, WhisperEngine, retry_options
from whisperop.inference.whispercpp import DecodeOptions
from tests.support.audio import noise_bursts_wav, speech_wav
from tests.support.decode_log import DecodeLog, decodes  # noqa: F401  (fixture)


class MemoryCheckpoint:
    """The Checkpoint port in memory (the SQLite one is tested in tests/api/test_sqlite_jobstore.py)."""

    def __init__(self) -> None:
        self._plan: list[tuple[int, int]] | None = None
        self.records: dict[int, ChunkRecord] = {}

    def plan(self) -> list[tuple[int, int]] | None:
        return self._plan

    def save_plan(self, plan: list[tuple[int, int]]) -> None:
        self._plan = list(plan)

    def done(self) -> dict[int, ChunkRecord]:
        return dict(self.records)

    def save(self, record: ChunkRecord) -> None:
        self.records[record.index] = record


def _engine(model: Path, **env: object) -> WhisperEngine:
    base: dict[str, object] = {"USE_GPU": False, "CHUNK_MAX_SECS": 10, "TEMPERATURE_INC": 0.0}
    return WhisperEngine(model, EngineSettings(**{**base, **env}))  # type: ignore[arg-type]


def _transcribe(model: Path, audio: Path, request: TranscribeRequest, **env: object) -> TranscriptionResult:
    """One file through a fresh engine with these settings (closed after)."""
    eng = _engine(model, **env)
    try:
        return eng.transcribe_file(audio, request)
    finally:
        eng.close()


def test_a_chunk_over_its_limit_twice_fails_and_the_job_goes_on(tiny_model: Path, tmp_path: Path, decodes: DecodeLog) -> None:
    # limit = 8 s + 0.01 x 30 s; a normal tiny-model chunk decodes in well under a second
    result = _transcribe(tiny_model, noise_bursts_wav(tmp_path / "b.wav", 4), TranscribeRequest(language="en"), CHUNK_TIME_LIMIT_MIN_SECS=8, CHUNK_TIME_LIMIT_FACTOR=0.01, WHISPEROP_FAULT_SLOW_CHUNK="1:2")
    assert result.chunks == 4
    [bad] = result.degraded_chunks
    assert (bad.index, bad.failed) == (1, True)
    assert bad.start == pytest.approx(9.0, abs=0.5) and bad.end == pytest.approx(17.0, abs=0.5)
    assert "attempt 1 (greedy, temperature 0.0, no fallback) stopped" in bad.reason
    assert "attempt 2 (greedy, temperature 0.4, no fallback) stopped" in bad.reason and "no text for this span" in bad.reason
    assert sorted(decodes.chunks) == [0, 2, 3], "the other chunks ran normally; chunk 1 never finished a decode"
    assert all(not (9.0 <= s.start < 17.0) for s in result.segments)


def test_a_chunk_over_its_limit_once_is_retried_and_reported(tiny_model: Path, tmp_path: Path, decodes: DecodeLog) -> None:
    result = _transcribe(tiny_model, noise_bursts_wav(tmp_path / "b.wav", 2), TranscribeRequest(language="en"), CHUNK_TIME_LIMIT_MIN_SECS=8, CHUNK_TIME_LIMIT_FACTOR=0.01, WHISPEROP_FAULT_SLOW_CHUNK="0:1")
    [d] = result.degraded_chunks
    assert (d.index, d.failed) == (0, False) and "finished in time" in d.reason
    assert sorted(decodes.chunks) == [0, 1]


def test_the_job_limit_stops_the_rest(tiny_model: Path, tmp_path: Path) -> None:
    result = _transcribe(tiny_model, noise_bursts_wav(tmp_path / "b.wav", 4), TranscribeRequest(language="en", time_limit_secs=5), CHUNK_TIME_LIMIT_MIN_SECS=600, WHISPEROP_FAULT_SLOW_CHUNK="1:2")
    assert [(d.index, d.failed) for d in result.degraded_chunks] == [(1, True), (2, True), (3, True)]
    assert all("the job's time limit" in d.reason for d in result.degraded_chunks)


def test_retry_options_differ_from_the_first_attempt() -> None:
    assert retry_options(DecodeOptions(beam_size=5, temperature_inc=0.2)) == DecodeOptions(beam_size=1, temperature_inc=0.0)
    assert retry_options(DecodeOptions(temperature_inc=0.0)) == DecodeOptions(temperature=0.4, temperature_inc=0.0)


def test_resume_decodes_only_unfinished_chunks_with_the_saved_plan(tiny_model: Path, tmp_path: Path, decodes: DecodeLog) -> None:
    audio = noise_bursts_wav(tmp_path / "b.wav", 5)
    eng = _engine(tiny_model)
    try:
        full = eng.transcribe_file(audio, TranscribeRequest(language="en"))
        cp = MemoryCheckpoint()
        done: list[int] = []
        with pytest.raises(JobCancelled):  # the "crash" after chunk 2
            eng.transcribe_file(audio, TranscribeRequest(language="en"), on_progress=lambda p: done.append(p.chunk),
                                should_cancel=lambda: len(done) >= 2, checkpoint=cp)
        assert sorted(cp.records) == [0, 1] and cp.plan() is not None and len(cp.plan() or []) == 5
        decodes.chunks.clear()
        seen: list[int] = []
        resumed = eng.transcribe_file(audio, TranscribeRequest(language="en"), on_progress=lambda p: seen.append(p.chunk), checkpoint=cp)
    finally:
        eng.close()
    assert decodes.chunks == [2, 3, 4], "chunks saved before the crash were decoded again"
    assert seen == [2, 3, 4, 5], "progress restarts at the checkpoint"
    assert resumed == full


def test_resume_keeps_the_saved_plan_when_settings_changed(tiny_model: Path, tmp_path: Path, decodes: DecodeLog) -> None:
    audio = noise_bursts_wav(tmp_path / "b.wav", 3)
    cp = MemoryCheckpoint()
    eng = _engine(tiny_model, CHUNK_MAX_SECS=10)
    try:
        eng.transcribe_file(audio, TranscribeRequest(language="en"), checkpoint=cp)
    finally:
        eng.close()
    plan = cp.plan()
    cp.records = {0: cp.records[0]}
    eng = _engine(tiny_model, CHUNK_MAX_SECS=30)  # would plan 1 chunk
    try:
        decodes.chunks.clear()
        result = eng.transcribe_file(audio, TranscribeRequest(language="en"), checkpoint=cp)
    finally:
        eng.close()
    assert result.chunks == 3 and cp.plan() == plan and decodes.chunks == [1, 2]


@pytest.mark.slow
def test_resumed_transcript_of_real_speech_equals_the_uninterrupted_one(base_model_q8: Path, tmp_path: Path,
                                                                         decodes: DecodeLog) -> None:
    lines = ["The first report arrived on Monday morning before the meeting.",
             "Nobody expected the numbers to be so much better than last year.",
             "After lunch the team walked down to the river and talked about the plan.",
             "In the evening the lights of the city came on one by one."]
    parts = []
    for i, line in enumerate(lines):
        with open(speech_wav(tmp_path / f"l{i}.wav", line), "rb") as f:
            import wave
            with wave.open(f) as w:
                parts.append(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767)
        parts.append(np.zeros(SAMPLE_RATE, np.float32))
    audio = tmp_path / "speech.wav"
    write_wav(audio, np.concatenate(parts))
    # no time limit in play here (a 3 s chunk took 77 s at load average 13 on the 2-core CI machine)
    eng = WhisperEngine(base_model_q8, EngineSettings(USE_GPU=False, CHUNK_MAX_SECS=6, CHUNK_MIN_SECS=1,
                                                      CHUNK_TIME_LIMIT_MIN_SECS=3600))
    try:
        full = eng.transcribe_file(audio, TranscribeRequest(language=None))
        assert full.chunks >= 4 and len(full.segments) >= 4
        cp = MemoryCheckpoint()
        stop = threading.Event()
        with pytest.raises(JobCancelled):
            eng.transcribe_file(audio, TranscribeRequest(language=None), checkpoint=cp,
                                on_progress=lambda p: stop.set() if p.chunk >= 2 else None, should_cancel=stop.is_set)
        decodes.chunks.clear()
        resumed = eng.transcribe_file(audio, TranscribeRequest(language=None), checkpoint=cp)
    finally:
        eng.close()
    assert sorted(decodes.chunks) == list(range(2, full.chunks))
    assert resumed == full and resumed.language == "en"
