"""A thin HTTP client for the REST contract, with polling helpers.

Only HTTP: every helper is one request or a loop of requests with a
deadline. Jobs created through ``submit`` are remembered so a test can
cancel whatever it left running (``cleanup``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

TERMINAL = ("done", "failed", "cancelled")

Audio = Path | bytes | tuple[str, bytes]


class ApiClient:
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0))
        self.created: list[str] = []

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return self.base_url + path

    # ── jobs ──────────────────────────────────────────────────────────────

    def post_job(
        self,
        audio: Audio | None,
        filename: str = "audio.wav",
        content_type: str = "audio/wav",
        **fields: str,
    ) -> httpx.Response:
        """POST /jobs as multipart. ``audio=None`` sends the other fields only."""
        files: dict[str, Any] = {}
        handle = None
        if audio is not None:
            if isinstance(audio, Path):
                handle = open(audio, "rb")
                files["audio"] = (filename if filename != "audio.wav" else audio.name, handle, content_type)
            elif isinstance(audio, tuple):
                files["audio"] = (audio[0], audio[1], content_type)
            else:
                files["audio"] = (filename, audio, content_type)
        data = {k: v for k, v in fields.items() if v is not None}
        try:
            if not files:
                # still multipart/form-data: the fields as parts (a dummy one when there are none)
                parts = {k: (None, v) for k, v in data.items()} or {"note": (None, "no audio here")}
                r = self.http.post("/jobs", files=parts)
            else:
                r = self.http.post("/jobs", data=data, files=files)
        finally:
            if handle is not None:
                handle.close()
        if r.status_code == 202:
            try:
                self.created.append(r.json()["job_id"])
            except Exception:
                pass
        return r

    def submit(self, audio: Audio, **fields: str) -> str:
        r = self.post_job(audio, **fields)
        assert r.status_code == 202, f"POST /jobs: expected 202, got {r.status_code}: {r.text[:500]}"
        return r.json()["job_id"]

    def submit_when_ready(self, audio: Audio, timeout: float = 120.0, **fields: str) -> str:
        """Submit, retrying on 503 (as the contract's clients do), until accepted."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.post_job(audio, **fields)
            if r.status_code == 202:
                return r.json()["job_id"]
            assert r.status_code == 503, f"POST /jobs: {r.status_code}: {r.text[:500]}"
            if time.monotonic() > deadline:
                raise AssertionError(f"model never became ready for submission: {r.text}")
            time.sleep(0.5)

    def get_job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/jobs/{job_id}")
        assert r.status_code == 200, f"GET /jobs/{job_id}: {r.status_code}: {r.text[:500]}"
        return r.json()

    def cancel(self, job_id: str) -> httpx.Response:
        return self.http.delete(f"/jobs/{job_id}")

    def wait_job(
        self,
        job_id: str,
        pred: Callable[[dict[str, Any]], bool],
        timeout: float = 120.0,
        what: str = "condition",
        interval: float = 0.1,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.get_job(job_id)
            if pred(job):
                return job
            time.sleep(interval)
        raise AssertionError(f"job {job_id}: {what} not reached within {timeout}s; last: {_short(job)}")

    def wait_status(self, job_id: str, statuses: Iterable[str] | str, timeout: float = 120.0) -> dict[str, Any]:
        wanted = (statuses,) if isinstance(statuses, str) else tuple(statuses)
        return self.wait_job(job_id, lambda j: j.get("status") in wanted, timeout, f"status in {wanted}")

    def wait_terminal(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait_status(job_id, TERMINAL, timeout)

    def cleanup(self) -> None:
        """Cancel every job this client created that is not finished (best effort)."""
        for job_id in self.created:
            try:
                r = self.http.get(f"/jobs/{job_id}")
                if r.status_code == 200 and r.json().get("status") not in TERMINAL:
                    self.http.delete(f"/jobs/{job_id}")
            except httpx.HTTPError:
                pass
        self.created.clear()

    # ── model and health ──────────────────────────────────────────────────

    def health(self) -> dict[str, Any]:
        r = self.http.get("/health")
        assert r.status_code == 200, f"GET /health: {r.status_code}: {r.text[:500]}"
        return r.json()

    def model_status(self) -> dict[str, Any]:
        r = self.http.get("/model/status")
        assert r.status_code == 200, f"GET /model/status: {r.status_code}: {r.text[:500]}"
        return r.json()

    def model_state(self) -> str:
        return self.model_status()["state"]

    def load(self) -> httpx.Response:
        return self.http.post("/model/load")

    def unload(self) -> httpx.Response:
        return self.http.post("/model/unload")

    def wait_model(self, states: Iterable[str] | str, timeout: float = 120.0, interval: float = 0.1) -> dict[str, Any]:
        wanted = (states,) if isinstance(states, str) else tuple(states)
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = self.model_status()
            if st.get("state") in wanted:
                return st
            time.sleep(interval)
        raise AssertionError(f"model state not in {wanted} within {timeout}s; last: {st}")

    def ensure_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        if self.model_state() != "ready":
            r = self.load()
            assert r.status_code in (200, 202), f"POST /model/load: {r.status_code}: {r.text[:300]}"
        return self.wait_model("ready", timeout)

    def ensure_unloaded(self, timeout: float = 60.0) -> dict[str, Any]:
        r = self.unload()
        assert r.status_code == 200, f"POST /model/unload: {r.status_code}: {r.text[:300]}"
        return self.wait_model("unloaded", timeout)


def _short(job: dict[str, Any]) -> dict[str, Any]:
    out = dict(job)
    if isinstance(out.get("segments"), list):
        out["segments"] = f"<{len(out['segments'])} segments>"
    return out


def multipart_stream(
    total_bytes: int,
    fields: dict[str, str] | None = None,
    filename: str = "big.bin",
    chunk: int = 1 << 20,
    boundary: str = "whisperop-contract-boundary",
):
    """(content-type, generator) of a multipart body whose ``audio`` part is
    ``total_bytes`` of filler made on the fly (nothing held in memory)."""
    head = b""
    for k, v in (fields or {}).items():
        head += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    line = b"filler bytes that are not audio at all\n"
    block = (line * (chunk // len(line) + 1))[:chunk]

    def gen():
        yield head
        left = total_bytes
        while left > 0:
            n = min(left, chunk)
            yield block[:n]
            left -= n
        yield tail

    return f"multipart/form-data; boundary={boundary}", gen()
