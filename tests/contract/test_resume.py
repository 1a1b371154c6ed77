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


def _speech(d: Path) -> Path:
    parts = []
    for i, line in enumerate(LINES * 2):
        with wave.open(str(speech_wav(d / f"l{i}.wav", line))) as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767)
        parts.append(np.zeros(int(1.5 * SAMPLE_RATE), np.float32))
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
