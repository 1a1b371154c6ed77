"""Optional bearer-token auth of the facade: every endpoint except /health (in-process, real stores)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from whisperop.api import auth
from whisperop.api.app import create_app
from whisperop.core.settings import EngineSettings, ServerSettings
from whisperop.inference.runtime import LocalModelRuntime
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore


def _client(tmp_path: Path, tiny_model: Path, tokens: Path) -> tuple[TestClient, SqliteJobStore]:
    d = tmp_path / "data"
    jobs, blobs = SqliteJobStore.in_data_dir(d), LocalBlobStore.in_data_dir(d)
    runtime = LocalModelRuntime(tiny_model, jobs, blobs, EngineSettings(USE_GPU=False), idle_timeout_secs=0)
    app = create_app(ServerSettings(WHISPER_MODEL="tiny-test", DATA_DIR=d, WHISPEROP_ALLOWED_HOSTS="testserver"), runtime, jobs, blobs,
                     auth_tokens_file=str(tokens))
    return TestClient(app), jobs


def test_bearer_tokens_from_a_secret_directory(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"  # a Secret mounted as a volume: one file per key
    secret.mkdir()
    (secret / "alice").write_text("tok-alice\n")
    (secret / "bob").write_text("# comment\ntok-bob\n")
    client, jobs = _client(tmp_path, tiny_model, secret)
    with client:
        assert client.get("/health").status_code == 200
        for path in ("/model/status", "/jobs/x", "/openapi.json", "/metrics"):
            r = client.get(path)
            assert r.status_code == 401 and r.json() == {"error": "unauthorized"}, path
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/model/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/model/status", headers={"Authorization": "Basic tok-alice"}).status_code == 401
        assert client.post("/jobs", files={"audio": ("a.wav", b"x")}).status_code == 401
        assert client.get("/model/status", headers={"Authorization": "Bearer tok-alice"}).status_code == 200
        assert client.get("/jobs/nope", headers={"Authorization": "Bearer tok-bob"}).status_code == 404
        # rotation: a new Secret version is picked up without a restart
        monkeypatch.setattr(auth, "RELOAD_SECS", 0.0)
        (secret / "alice").write_text("tok-alice-2\n")
        later = time.time() + 5
        os.utime(secret / "alice", (later, later))
        assert client.get("/model/status", headers={"Authorization": "Bearer tok-alice"}).status_code == 401
        assert client.get("/model/status", headers={"Authorization": "Bearer tok-alice-2"}).status_code == 200
    jobs.close()


def test_empty_token_source_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("\n# nothing\n")
    with pytest.raises(ValueError):
        auth.TokenSource(f)


def test_ownership_holds_on_listing_transcripts_purge_and_v1(tmp_path: Path, tiny_model: Path, short_wav: Path) -> None:
    """Issue 16's per-token ownership on issue 19's routes: GET /jobs lists the caller's jobs only,
    another token's transcript file and purge are 404, and a /v1 request's job belongs to its token."""
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-alice\ntok-bob\n")
    client, jobs = _client(tmp_path, tiny_model, tokens)
    alice, bob = ({"Authorization": f"Bearer {t}"} for t in ("tok-alice", "tok-bob"))
    audio = short_wav.read_bytes()
    with client:
        assert client.post("/model/load", headers=alice).status_code in (200, 202)
        r = client.post("/v1/audio/transcriptions", headers=alice, data={"model": "whisper-1"},
                        files={"file": ("s.wav", audio, "audio/wav")})
        assert r.status_code == 200, r.text
        listed = client.get("/jobs", headers=alice).json()["jobs"]
        assert len(listed) == 1 and listed[0]["status"] == "done", listed
        job = listed[0]["id"]
        assert jobs.owner(job) == auth.principal_of("tok-alice")
        assert client.get("/jobs", headers=bob).json() == {"jobs": [], "next_cursor": None}
        assert client.get(f"/jobs/{job}/transcript.srt", headers=alice).status_code == 200
        for method, path in (("GET", f"/jobs/{job}/transcript.srt"), ("GET", f"/jobs/{job}/transcript.json"),
                             ("DELETE", f"/jobs/{job}?purge=true"), ("GET", f"/jobs/{job}")):
            r = client.request(method, path, headers=bob)
            assert (r.status_code, r.json()) == (404, {"error": f"job {job} not found"}), (method, path, r.text)
        assert client.get(f"/jobs/{job}", headers=alice).status_code == 200, "bob's purge did nothing"
        r = client.post("/jobs", headers=bob, files={"audio": ("s.wav", audio, "audio/wav")})
        assert r.status_code == 202, r.text
        assert [j["id"] for j in client.get("/jobs", headers=bob).json()["jobs"]] == [r.json()["job_id"]]
        assert [j["id"] for j in client.get("/jobs", headers=alice).json()["jobs"]] == [job]
        assert client.delete(f"/jobs/{job}?purge=true", headers=alice).status_code == 204
        assert client.get(f"/jobs/{job}", headers=alice).status_code == 404
    jobs.close()


def test_mid_job_sse_state_is_only_for_the_owner(tmp_path: Path, tiny_model: Path) -> None:
    """Issue 17's SSE initial state (progress of a running job) under issue 16's ownership: another
    token's subscription is 404 before any byte is streamed; the owner's starts at chunk 2 of 5."""
    import json
    import threading

    from whisperop.core.models import Job, TranscriptionResult

    tokens = tmp_path / "tokens"
    tokens.write_text("tok-alice\ntok-bob\n")
    client, jobs = _client(tmp_path, tiny_model, tokens)
    alice, bob = ({"Authorization": f"Bearer {t}"} for t in ("tok-alice", "tok-bob"))
    with client:  # after the start's recovery of interrupted jobs: a job running now
        jobs.create(Job(id="j-mid"), "a", owner=auth.principal_of("tok-alice"))
        jobs.claim_next()
        jobs.record_progress("j-mid", 0, 5, 50.0)
        jobs.record_progress("j-mid", 2, 5)
        r = client.get("/jobs/j-mid/stream", headers=bob)
        assert (r.status_code, r.json()) == (404, {"error": "job j-mid not found"})
        hub = client.app.state.services.hub  # type: ignore[attr-defined]

        def finish_once_subscribed() -> None:  # the TestClient returns the stream whole, so end the job
            deadline = time.monotonic() + 60
            while hub.broadcaster.subscriber_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            jobs.complete("j-mid", TranscriptionResult(language="en", duration_secs=50.0, segments=[], chunks=5))

        t = threading.Thread(target=finish_once_subscribed)
        t.start()
        r = client.get("/jobs/j-mid/stream", headers=alice)
        t.join()
    assert r.status_code == 200
    events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    assert events[0] == {"type": "progress", "percent": 40, "chunk": 2, "chunks_total": 5}
    assert events[-1]["type"] == "done" and events[-1]["job"]["status"] == "done"
    jobs.close()
