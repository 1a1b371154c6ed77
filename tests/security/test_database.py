"""The job database in trouble (issue 16): a garbage file or one locked by another
process gives a clear message and exit code at start, not a traceback; a writer
blocked by another process's lock does not block ``/health`` (a liveness probe)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.security.conftest import BASE_ENV, Servers
from tests.support.server import free_port, serve_command


def _serve(data_dir: Path, model: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **BASE_ENV, "WHISPER_MODEL_PATH": str(model), "DATA_DIR": str(data_dir),
           "HOST": "127.0.0.1", "PORT": str(free_port())}
    return subprocess.run(serve_command(), env=env, capture_output=True, text=True, timeout=180)


def test_garbage_database_exits_with_a_message(tmp_path: Path, security_model: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "jobs.sqlite3").write_bytes(os.urandom(8192))
    p = _serve(d, security_model)
    assert p.returncode == 3, (p.returncode, p.stderr[-3000:])
    assert "cannot be used" in p.stderr and "not a SQLite database" in p.stderr, p.stderr[-3000:]
    assert "Traceback" not in p.stderr


def test_database_locked_by_another_process_exits_with_a_message(tmp_path: Path, security_model: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    holder = sqlite3.connect(d / "jobs.sqlite3", isolation_level=None)  # rollback journal: an exclusive lock blocks all
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        p = _serve(d, security_model)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert p.returncode == 3, (p.returncode, p.stderr[-3000:])
    assert "is locked by another process" in p.stderr, p.stderr[-3000:]
    assert "Traceback" not in p.stderr


def test_health_answers_while_a_writer_waits_for_a_foreign_lock(servers: Servers, short_wav: Path) -> None:
    srv = servers.make("locked")
    with httpx.Client(base_url=srv.base_url, timeout=60) as h:
        assert h.post("/model/load").status_code == 202
        for _ in range(240):
            if h.get("/model/status").json()["state"] == "ready":
                break
            time.sleep(0.5)
        holder = sqlite3.connect(srv.data_dir / "jobs.sqlite3", isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        submitted: list[int] = []

        def submit() -> None:
            with httpx.Client(base_url=srv.base_url, timeout=120) as h2:
                for _ in range(60):  # until the model is ready and the submit reaches the database
                    r = h2.post("/jobs", files={"audio": ("s.wav", short_wav.read_bytes(), "audio/wav")})
                    if r.status_code != 503:
                        submitted.append(r.status_code)
                        return
                    time.sleep(0.5)

        t = threading.Thread(target=submit, daemon=True)
        try:
            t.start()
            time.sleep(3)  # the submit is now waiting on the lock (busy timeout 30 s), holding the store
            assert submitted == [], "the submit must still be waiting on the foreign lock"
            t0 = time.monotonic()
            r = h.get("/health")
            took = time.monotonic() - t0
            assert r.status_code == 200 and "queue_depth" in r.json(), r.text
            assert took < 10, f"/health took {took:.1f} s behind a locked database (was 29 s)"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        t.join(120)
        assert submitted == [202], submitted
