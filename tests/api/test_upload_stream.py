"""Uploads stream to the BlobStore: flat server memory, nothing left by an aborted client.

These drive a real ``python -m whisperop serve`` process over loopback, so the
whole path (uvicorn → request.stream() → multipart parser → blob writer) is
the one users hit, and the server's peak RSS can be read from /proc.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

MiB = 1024 * 1024
UPLOAD_MB = int(os.environ.get("WHISPEROP_TEST_UPLOAD_MB", "512"))
BOUNDARY = "whisperopboundary"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vm(pid: int, field: str) -> int:
    """VmHWM (peak RSS) or VmRSS of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, data_dir: Path) -> None:
        self.proc, self.url, self.data_dir = proc, url, data_dir

    def blob_files(self) -> list[Path]:
        return [p for p in (self.data_dir / "blobs").rglob("*") if p.is_file()]

    def jobs_total(self) -> float:
        text = httpx.get(self.url + "/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("whisperop_jobs{"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("upload-server")
    port = _free_port()
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port), DATA_DIR=str(tmp_path / "data"), WHISPER_MODEL_PATH=str(tiny_model),
               WHISPER_MODEL="tiny-test", IDLE_TIMEOUT_SECS="0", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "whisperop", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield Server(proc, url, tmp_path / "data")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _body(total: int, piece: int = MiB, fail_after: int | None = None) -> Iterator[bytes]:
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\ntranscribe\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"big.bin\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    block = os.urandom(piece)
    sent = 0
    while sent < total:
        if fail_after is not None and sent >= fail_after:
            raise ConnectionAbortedError("client gives up mid-upload")
        n = min(piece, total - sent)
        yield block[:n]
        sent += n
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _load(server: Server) -> None:
    assert httpx.post(server.url + "/model/load").status_code in (200, 202)
    deadline = time.monotonic() + 60
    while httpx.get(server.url + "/model/status").json()["state"] != "ready":
        assert time.monotonic() < deadline, "model not ready"
        time.sleep(0.1)


def test_large_upload_keeps_server_memory_flat(server: Server) -> None:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    # warm the request path once (imports, first allocations) before the baseline
    r = httpx.post(server.url + "/jobs", content=_body(2 * MiB), headers=headers, timeout=60)
    assert r.status_code == 503, r.text
    assert server.blob_files() == [], "the rejected upload left a blob"
    _load(server)
    base_peak = _vm(server.proc.pid, "VmHWM")
    t0 = time.monotonic()
    r = httpx.post(server.url + "/jobs", content=_body(UPLOAD_MB * MiB), headers=headers, timeout=600)
    secs = time.monotonic() - t0
    assert r.status_code == 202, r.text
    growth = _vm(server.proc.pid, "VmHWM") - base_peak
    print(f"\nupload {UPLOAD_MB} MB in {secs:.1f}s ({UPLOAD_MB / secs:.0f} MB/s); peak RSS growth {growth / MiB:.1f} MB")
    assert growth < 100 * MiB, f"peak RSS grew {growth / MiB:.0f} MB during a {UPLOAD_MB} MB upload"
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 60
    while (job := httpx.get(f"{server.url}/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert job["status"] == "failed" and job["filename"] == "big.bin", job  # random bytes are no audio
    assert server.blob_files() == [], "the finished job's audio was not removed"
    metrics = httpx.get(server.url + "/metrics").text
    up = next(float(line.split()[1]) for line in metrics.splitlines() if line.startswith("whisperop_upload_bytes_total"))
    assert up >= (UPLOAD_MB + 2) * MiB


def test_client_abort_mid_upload_leaves_no_job_and_no_blob(server: Server) -> None:
    _load(server)
    jobs_before = server.jobs_total()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with pytest.raises((ConnectionAbortedError, httpx.HTTPError)):
        httpx.post(server.url + "/jobs", content=_body(200 * MiB, fail_after=30 * MiB), headers=headers, timeout=60)
    # the server notices the disconnect and cleans up
    deadline = time.monotonic() + 10
    while server.blob_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.blob_files() == [], "an aborted upload left a (temp) blob behind"
    assert server.jobs_total() == jobs_before, "an aborted upload created a job"
    assert httpx.get(server.url + "/health").json()["queue_depth"] == 0
