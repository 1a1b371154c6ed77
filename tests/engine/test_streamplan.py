"""The streamed chunk plan (issue 18): the first chunks decode while the file
is still being decoded, on the real engine (tiny random-weight model through
whisper.cpp), and the job's result and reports are those of the plain path."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from whisperop.core.checkpoints import ChunkRecord
from whisperop.core.errors import AudioDecodeError
from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import DecodedAudio, decode_audio
from whisperop.inference.chunking import Chunk, plan_chunks
from whisperop.inference.engine import Progress, TranscribeRequest, WhisperEngine
from whisperop.inference.streamplan import EarlyDecodes
from whisperop.inference.whispercpp import DecodeOptions
from tests.support.audio import noise_bursts_wav


class EventCheckpoint:
    """The Checkpoint port in memory, writing what happens into one event list."""

    def __init__(self, events: list[tuple[str, int]]) -> None:
        self.events = events
        self._plan: list[tuple[int, int]] | None = None
        self.records: dict[int, ChunkRecord] = {}

    def plan(self) -> list[tuple[int, int]] | None:
        return self._plan

    def save_plan(self, plan: list[tuple[int, int]]) -> None:
        self.events.append(("save_plan", len(plan)))
        self._plan = list(plan)

    def done(self) -> dict[int, ChunkRecord]:
        return dict(self.records)

    def save(self, record: ChunkRecord) -> None:
        self.events.append(("save", record.index))
        self.records[record.index] = record


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> WhisperEngine:
    eng = WhisperEngine(tiny_model, EngineSettings(USE_GPU=False, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    yield eng
    eng.close()


def _streamed(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "chunk plan streamed"]


@pytest.mark.parametrize("language", ["en", None])
def test_streamed_plan_gives_the_plain_result_and_keeps_the_report_order(
        engine: WhisperEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture, language: str | None) -> None:
    audio = noise_bursts_wav(tmp_path / "b.wav", 12)  # 108 s: 12 chunks of ≤ 10 s
    events: list[tuple[str, int]] = []
    request = TranscribeRequest(language=language)
    with caplog.at_level(logging.INFO, logger="whisperop.engine"):
        result = engine.transcribe_file(audio, request, on_progress=lambda p: events.append(("progress", p.chunk)),
                                        on_decoded=lambda _d, n: events.append(("decoded", n)),
                                        checkpoint=EventCheckpoint(events))
    streamed = _streamed(caplog)
    assert len(streamed) == 1
    # chunks were handed to whisper.cpp while the file decoded, and the final plan kept them
    assert streamed[0].__dict__["guessed"] >= 1 and streamed[0].__dict__["used"] >= 1

    with decode_audio(audio) as a:
        plain = engine.transcribe_chunks(a, plan_chunks(a.frame_db, a.n_samples, engine.chunking_config()), request)
    assert result == plain and result.chunks == 12

    assert events[:2] == [("save_plan", 12), ("decoded", 12)]
    rest = events[2:]
    assert [e for e in rest if e[0] == "progress"] == [("progress", i) for i in range(1, 13)]
    assert sorted(i for kind, i in rest if kind == "save") == list(range(12))
    for k, (kind, i) in enumerate(rest):  # each record is durable before its progress
        if kind == "progress":
            assert sum(1 for e in rest[:k] if e[0] == "save") == i


def test_a_decode_error_found_at_the_end_fails_the_job_before_any_result(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FLAC cut at 60 % decodes fine up to its cut, so the first chunks are
    already handed to the streams when the truncation shows (declared 108 s,
    64 s decoded): the job still fails with AudioDecodeError, with no plan
    saved, no progress and no record, as without the streamed plan."""
    wav = noise_bursts_wav(tmp_path / "b.wav", 12)
    flac = tmp_path / "b.flac"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav), str(flac)], check=True)
    cut = tmp_path / "cut.flac"
    data = flac.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    started: list[int] = []
    real_start = EarlyDecodes._start

    def counted(self: EarlyDecodes, audio: DecodedAudio, chunk: Chunk, opts: DecodeOptions) -> object:
        started.append(chunk.index)
        return real_start(self, audio, chunk, opts)

    eng = WhisperEngine(tiny_model, EngineSettings(USE_GPU=False, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0))
    try:
        monkeypatch.setattr(EarlyDecodes, "_start", counted)
        events: list[tuple[str, int]] = []
        with pytest.raises(AudioDecodeError, match="truncated"):
            eng.transcribe_file(cut, TranscribeRequest(language="en"), on_progress=lambda p: events.append(("progress", p.chunk)),
                                on_decoded=lambda _d, n: events.append(("decoded", n)), checkpoint=EventCheckpoint(events))
        assert started, "no chunk was handed to a stream before the decode failed"
        assert events == []
    finally:
        eng.close()


def test_the_streams_serve_the_oldest_job_first(tiny_model: Path, tmp_path: Path) -> None:
    """Two jobs on one engine of 2 streams: job B, submitted once job A has
    its first chunk, waits behind A's remaining chunks (one line ordered by
    job start, then chunk), so at most one of B's chunks (the other stream's)
    finishes before A does. With one pool per job, both jobs' chunks shared a
    first-come line and B advanced alongside A."""
    a_audio = noise_bursts_wav(tmp_path / "a.wav", 10)
    b_audio = noise_bursts_wav(tmp_path / "b.wav", 4)
    eng = WhisperEngine(tiny_model, EngineSettings(USE_GPU=False, CHUNK_MAX_SECS=10, TEMPERATURE_INC=0.0, PARALLELISM=2))
    try:
        assert eng.wait_all_loaded(120)
        events: list[tuple[str, int]] = []
        a_started = threading.Event()

        def progress(job: str) -> Callable[[Progress], None]:
            def on(p: Progress) -> None:
                events.append((job, p.chunk))
                a_started.set()
            return on

        errors: list[BaseException] = []

        def run_a() -> None:
            try:
                eng.transcribe_file(a_audio, TranscribeRequest(language="en"), on_progress=progress("A"))
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        th = threading.Thread(target=run_a)
        th.start()
        assert a_started.wait(300)
        eng.transcribe_file(b_audio, TranscribeRequest(language="en"), on_progress=progress("B"))
        th.join(600)
        assert not errors
        a_done = events.index(("A", 10))
        assert sum(1 for job, _ in events[:a_done] if job == "B") <= 1, events
    finally:
        eng.close()
