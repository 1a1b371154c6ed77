"""End to end with the real whisper base model: jfk.wav word for word."""

from __future__ import annotations

import pytest

from tests.support import audio as audio_mod
from tests.support.client import ApiClient
from tests.support.mode import EXTERNAL_URL
from tests.support.shapes import assert_job


@pytest.fixture(scope="module")
def base_url(session_servers) -> str:
    if EXTERNAL_URL:
        return EXTERNAL_URL
    # no WHISPER_MODEL_PATH: the server resolves "base" from the model cache (fetching/converting if missing)
    srv = session_servers.make("base", start=False)
    srv.extra_env.pop("WHISPER_MODEL_PATH", None)
    srv.extra_env.update({"WHISPER_MODEL": "base", "CHUNK_MAX_SECS": "60"})
    srv.start(timeout=900)
    return srv.base_url


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_jfk_transcribes_to_the_reference(base_url: str) -> None:
    with ApiClient(base_url, timeout=120) as c:
        c.ensure_ready(timeout=900)
        job_id = c.submit(audio_mod.JFK_WAV)
        job = c.wait_terminal(job_id, timeout=600)
    assert_job(job, job_id, status="done")
    assert job["language"] == "en", job["language"]
    assert job["segments"], "the first real job after a load returned 0 segments"
    got = audio_mod.normalize_words(" ".join(s["text"] for s in job["segments"]))
    want = audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    assert got == want, f"transcript differs from the reference:\n got: {' '.join(got)}\nwant: {' '.join(want)}"


@pytest.fixture(scope="module")
def ct2_url(session_servers) -> str:
    if EXTERNAL_URL:
        pytest.skip("needs its own server with ENGINE=ctranslate2")
    # the CTranslate2 export itself, resolved (fetched) from the model cache by name
    srv = session_servers.make("base-ct2", start=False)
    srv.extra_env.pop("WHISPER_MODEL_PATH", None)
    srv.extra_env.update({"WHISPER_MODEL": "base-ct2", "ENGINE": "ctranslate2"})
    srv.start(timeout=900)
    return srv.base_url


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_jfk_transcribes_to_the_reference_with_ctranslate2(ct2_url: str) -> None:
    """``whisperop serve`` with ENGINE=ctranslate2: the same API, the same transcript, word timings included."""
    with ApiClient(ct2_url, timeout=120) as c:
        c.ensure_ready(timeout=900)
        job_id = c.submit(audio_mod.JFK_WAV)
        job = c.wait_terminal(job_id, timeout=600)
    assert_job(job, job_id, status="done")
    assert job["language"] == "en", job["language"]
    got = audio_mod.normalize_words(" ".join(s["text"] for s in job["segments"]))
    want = audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    assert got == want, f"transcript differs from the reference:\n got: {' '.join(got)}\nwant: {' '.join(want)}"
    words = [w for s in job["segments"] for w in s["words"]]
    assert len(words) == len(want)
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))


@pytest.fixture(scope="module")
def ct2_concurrent(session_servers):  # type: ignore[no-untyped-def]
    if EXTERNAL_URL:
        pytest.skip("needs its own server with JOB_CONCURRENCY=2")
    srv = session_servers.make("base-ct2-concurrent", start=False)
    srv.extra_env.pop("WHISPER_MODEL_PATH", None)
    srv.extra_env.update({"WHISPER_MODEL": "base-ct2", "ENGINE": "ctranslate2", "JOB_CONCURRENCY": "2",
                          "LOG_FORMAT": "json"})
    srv.start(timeout=900)
    return srv


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_jobs_run_at_once_with_job_concurrency(ct2_concurrent) -> None:  # type: ignore[no-untyped-def]
    """``JOB_CONCURRENCY=2``: the second job starts while the first runs (one server, one engine,
    their windows in one batch queue), and both get the reference transcript."""
    import json

    with ApiClient(ct2_concurrent.base_url, timeout=120) as c:
        c.ensure_ready(timeout=900)
        offset = ct2_concurrent.log_size()
        ids = [c.submit(audio_mod.JFK_WAV), c.submit(audio_mod.JFK_WAV)]
        jobs = [c.wait_terminal(i, timeout=600) for i in ids]
    want = audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    for job_id, job in zip(ids, jobs):
        assert_job(job, job_id, status="done")
        assert audio_mod.normalize_words(" ".join(s["text"] for s in job["segments"])) == want
    events = []
    for line in ct2_concurrent.log_text(offset, 10**7).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") in ("job started", "job done"):
            events.append((rec["msg"], rec.get("job_id")))
    started = [e for e in events if e[0] == "job started"]
    assert len(started) == 2, events
    # both started before either was done: they ran at once
    assert events.index(started[1]) < min(i for i, e in enumerate(events) if e[0] == "job done"), events


@pytest.fixture(scope="module")
def default_engine_server(session_servers):  # type: ignore[no-untyped-def]
    import os

    if EXTERNAL_URL or os.environ.get("ENGINE") or os.environ.get("WHISPER_MODEL"):
        pytest.skip("needs its own server with no ENGINE and no model named")
    srv = session_servers.make("default-engine", start=False)
    srv.extra_env.pop("WHISPER_MODEL_PATH", None)  # nothing named: `whisperop serve` as the quickstart runs it
    srv.extra_env.pop("WHISPER_MODEL", None)
    srv.extra_env["LOG_FORMAT"] = "json"
    srv.start(timeout=900)
    return srv


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_default_engine_on_this_cpu_is_ctranslate2(default_engine_server) -> None:  # type: ignore[no-untyped-def]
    """No ENGINE, no model: on a CPU ``auto`` picks CTranslate2 (the faster one measured here) and
    serve fetches the model it loads (base-ct2); jfk.wav comes out word for word."""
    import json

    with ApiClient(default_engine_server.base_url, timeout=120) as c:
        c.ensure_ready(timeout=900)
        job_id = c.submit(audio_mod.JFK_WAV)
        job = c.wait_terminal(job_id, timeout=600)
        health = c.health()
    assert_job(job, job_id, status="done")
    want = audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    assert audio_mod.normalize_words(" ".join(s["text"] for s in job["segments"])) == want
    assert health["model"] == "base-ct2", health
    loaded = [json.loads(line) for line in default_engine_server.log_text(0, 10**7).splitlines()
              if line.startswith("{") and '"model loaded"' in line]
    assert loaded and loaded[-1].get("engine") == "ctranslate2", loaded
