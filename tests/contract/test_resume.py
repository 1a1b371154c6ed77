"""Resume after kill -9 (issue 17), on real speech with the real base weights:
the chunks finished before the kill are not decoded again (counted from the
engine's "chunk decoded" log line, one per finished whisper.cpp call) and the
transcript equals an uninterrupted run's (greedy decoding)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from whisperop.core.settings import EngineSettings
from whisperop.modelstore.cache import resolve_model
from tests.support.audio import SAMPLE_RATE, speech_wav, write_wav
from tests.support.client import ApiClient
from tests.support.shapes import assert_job

pytestmark = pytest.mark.slow

LINES = [
    "The first report arrived on Monday morning before the meeting started.",
    "Nobody expected the numbers to be so much better than last year.",
    "After lunch the whole team walked down to the river and talked about the plan.",
    "In the evening the lights of the city came on one by one.",
    "The next day began with rain, and the trains were late again.",
    "By Friday the new office was ready and everyone moved in.",
]


def _speech(d: Path, min_secs: float = 0.0) -> Path:
    """``LINES`` twice with 1.5 s pauses (66 s), repeated until ``min_secs`` is reached."""
    lines = []
    for i, line in enumerate(LINES):
        with wave.open(str(speech_wav(d / f"l{i}.wav", line))) as w:
            lines.append(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767)
    pause = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    while not parts or sum(len(p) for p in parts) < min_secs * SAMPLE_RATE:
        for pcm in lines * 2:
            parts += [pcm, pause]
    out = d / "speech.wav"
    write_wav(out, np.concatenate(parts))
    return out


def _decoded_chunks(log: str) -> list[int]:
    out = []
    for line in log.splitlines():
        if line.startswith("{") and '"chunk decoded"' in line:
            out.append(int(json.loads(line)["chunk"]))
    return out


ENV = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "CHUNK_MAX_SECS": "12", "CHUNK_MIN_SECS": "2",
       "CHUNK_TIME_LIMIT_MIN_SECS": "3600"}  # no time limit in play: a loaded 2-core machine is slow


def test_kill9_at_half_resumes_without_redecoding(start_server, tmp_path: Path) -> None:
    model = resolve_model("base-q8_0", EngineSettings().model_cache_dir)
    audio = _speech(tmp_path)
    whole = start_server.make("uninterrupted", WHISPER_MODEL_PATH=str(model), **ENV)
    with ApiClient(whole.base_url) as c:
        c.ensure_ready(timeout=300)
        ref = c.wait_terminal(c.submit(audio, language="en"), timeout=1800)
    assert_job(ref, status="done")
    ref_chunks = _decoded_chunks(whole.log_text(0, 10**7))
    total = len(ref_chunks)
    assert total >= 6 and len(ref["segments"]) >= 6
    whole.close()

    srv = start_server.make("killed", WHISPER_MODEL_PATH=str(model), **ENV)
    with ApiClient(srv.base_url) as c:
        c.ensure_ready(timeout=300)
        job = c.submit(audio, language="en")
        c.wait_job(job, lambda j: j["progress"] >= 50, timeout=1800, what="half done")
    srv.kill9()
    before = sorted(set(_decoded_chunks(srv.log_text(0, 10**7))))
    assert before and len(before) < total
    final, log = srv.start_and_finish(job, ready_timeout=300, timeout=1800)
    assert_job(final, job, status="done")
    after = _decoded_chunks(log)
    assert not set(after) & set(before), f"chunks {sorted(set(after) & set(before))} were decoded again"
    assert sorted(set(before) | set(after)) == list(range(total))
    assert final["segments"] == ref["segments"]
    work = srv.data_dir / "tmp"  # decode temp files: the killed run's were removed at start, the resumed run's at its end
    assert work.is_dir() and not any(work.iterdir())


def test_kill9_at_half_of_a_20_minute_job_resumes_without_redecoding(start_server, tmp_path: Path) -> None:
    """The issue's own size: a 20-minute job, killed at 50 %. The tiny random-weight model keeps
    it fast (its text is noise, but greedy noise is deterministic, so "equals the uninterrupted
    transcript" still means something); the real-speech test above checks real words.

    The middle chunk is held in whisper.cpp's abort callback (WHISPEROP_FAULT_SLOW_CHUNK) so the
    kill lands at exactly 50 % however fast the machine is; the restart runs without the hold."""
    audio = _speech(tmp_path, min_secs=20 * 60)
    env = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "CHUNK_TIME_LIMIT_MIN_SECS": "3600"}
    whole = start_server.make("uninterrupted-20min", **env)
    with ApiClient(whole.base_url) as c:
        c.ensure_ready(timeout=120)
        ref = c.wait_terminal(c.submit(audio, language="en"), timeout=1800)
    assert_job(ref, status="done")
    assert ref["duration_secs"] >= 20 * 60, ref["duration_secs"]
    total = len(_decoded_chunks(whole.log_text(0, 10**8)))
    assert total >= 40, total
    whole.close()

    half = total // 2
    at_half = 100 * half // total  # the store's percent once `half` chunks are checkpointed
    assert 100 * (half - 1) // total < at_half, "one chunk must move the percent"
    srv = start_server.make("killed-20min", WHISPEROP_FAULT_SLOW_CHUNK=f"{half}:1", **env)
    with ApiClient(srv.base_url) as c:
        c.ensure_ready(timeout=120)
        job = c.submit(audio, language="en")
        c.wait_job(job, lambda j: j["progress"] >= at_half, timeout=1800, what="half done")
    srv.kill9()
    before = sorted(set(_decoded_chunks(srv.log_text(0, 10**8))))
    assert before == list(range(half)), before
    del srv.extra_env["WHISPEROP_FAULT_SLOW_CHUNK"]
    final, log = srv.start_and_finish(job, ready_timeout=120, timeout=1800)
    assert_job(final, job, status="done")
    after = _decoded_chunks(log)
    assert sorted(after) == list(range(half, total)), f"decoded after the restart: {after}"
    assert final["segments"] == ref["segments"]
