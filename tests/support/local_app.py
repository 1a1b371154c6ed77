"""The real facade app in-process (TestClient runs its lifespan) over SQLite, local files and the
tiny random-weight model: one factory for the API test files, so the app is wired in one place.

Each test file states only what differs (``server=`` / ``engine=`` defaults of its factory, and
per-call overrides); the factory closes every app it made.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from whisperop.api.app import create_app
from whisperop.core.settings import EngineSettings, ServerSettings
from whisperop.inference.runtime import FaultHooks, LocalModelRuntime
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore

# TestClient's Host header must pass issue 16's Host allow-list
SERVER_DEFAULTS: dict[str, object] = {"WHISPER_MODEL": "tiny-test", "IDLE_TIMEOUT_SECS": 0,
                                      "GPU_POLL_INTERVAL_SECS": 7, "WHISPEROP_ALLOWED_HOSTS": "testserver"}
# short chunks: several chunks (progress, cancel between chunks) even on short test audio
ENGINE_DEFAULTS: dict[str, object] = {"CHUNK_MAX_SECS": 3.0, "CHUNK_MIN_SECS": 0.5, "WHISPER_THREADS": 2,
                                      "USE_GPU": False, "TEMPERATURE_INC": 0.0}
TERMINAL = ("done", "failed", "cancelled")


class LocalApp:
    def __init__(self, client: TestClient, runtime: LocalModelRuntime, jobs: SqliteJobStore,
                 blobs: LocalBlobStore) -> None:
        self.client, self.runtime, self.jobs, self.blobs = client, runtime, jobs, blobs

    def blob_files(self) -> list[Path]:
        return [p for p in self.blobs.root.rglob("*") if p.is_file()]

    def wait_state(self, state: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = self.client.get("/model/status").json()
            if st["state"] == state:
                return st
            time.sleep(0.05)
        raise AssertionError(f"model never {state}; last {st}")

    def wait_job(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.client.get(f"/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not finished: {job}")


class LocalAppFactory:
    """``factory(faults=None, engine=None, **server)`` → a started ``app_class`` (a :class:`LocalApp`)
    in a fresh data dir. ``engine`` given to the constructor replaces :data:`ENGINE_DEFAULTS`."""

    def __init__(self, tmp_path: Path, model: Path, server: Mapping[str, object] | None = None,
                 engine: Mapping[str, object] | None = None, runtime: Mapping[str, Any] | None = None,
                 app_class: type[LocalApp] = LocalApp) -> None:
        self.tmp_path, self.model, self.app_class = tmp_path, model, app_class
        self.server = {**SERVER_DEFAULTS, **(server or {})}
        self.engine = dict(ENGINE_DEFAULTS if engine is None else engine)
        self.runtime = {"idle_timeout_secs": 0, "gpu_poll_interval_secs": 7, **(runtime or {})}
        self.made: list[LocalApp] = []

    def __call__(self, faults: FaultHooks | None = None, engine: Mapping[str, object] | None = None,
                 **server: object) -> LocalApp:
        d = self.tmp_path / f"data{len(self.made)}"
        settings = ServerSettings(DATA_DIR=d, **{**self.server, **server})  # type: ignore[arg-type]
        jobs, blobs = SqliteJobStore.in_data_dir(d), LocalBlobStore.in_data_dir(d)
        engine_settings = EngineSettings(**{**self.engine, **(engine or {})})  # type: ignore[arg-type]
        runtime = LocalModelRuntime(self.model, jobs, blobs, engine_settings, faults=faults, **self.runtime)
        client = TestClient(create_app(settings, runtime, jobs, blobs))
        client.__enter__()
        app = self.app_class(client, runtime, jobs, blobs)
        self.made.append(app)
        return app

    def close(self) -> None:
        for app in self.made:
            app.client.__exit__(None, None, None)
            app.jobs.close()


@contextmanager
def local_apps(tmp_path: Path, model: Path, **defaults: Any) -> Iterator[LocalAppFactory]:
    factory = LocalAppFactory(tmp_path, model, **defaults)
    try:
        yield factory
    finally:
        factory.close()
