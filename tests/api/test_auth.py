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
