"""The FastAPI app in-process (TestClient runs its lifespan): routes, codes, shapes, messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_app import LocalApp, LocalAppFactory, local_apps
from whisperop.core.models import Health, Job, ModelState
from whisperop.inference.runtime import FaultHooks


App = LocalApp


@pytest.fixture
def make_app(tmp_path: Path, tiny_model: Path) -> Iterator[LocalAppFactory]:
    # the tests' webhook receivers are on loopback: allowed explicitly
    with local_apps(tmp_path, tiny_model, server={"WHISPEROP_OUTBOUND_ALLOW": "127.0.0.1"}) as make:
        yield make


def _post(app: App, audio: bytes | None = b"RIFF-not-really", filename: str = "a.wav", **fields: str):  # type: ignore[no-untyped-def]
    files = {"audio": (filename, audio, "audio/wav")} if audio is not None else {"note": (None, "x")}
    return app.client.post("/jobs", data=fields, files=files)


def test_503_when_unloaded_triggers_load_registers_webhook_and_keeps_nothing(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(FaultHooks(WHISPEROP_FAULT_LOAD_DELAY_SECS=1.0))
    r = _post(app, webhook_url="http://127.0.0.1:9/hook")
    assert r.status_code == 503
    assert r.json() == {"error": "model_not_ready", "state": "unloaded", "retry_after_secs": 30}
    assert r.headers["retry-after"] == "30"
    assert app.jobs.webhook_urls() == ["http://127.0.0.1:9/hook"]
    assert app.blob_files() == [] and app.jobs.list_page(None, 100).jobs == []
    app.wait_state("loading", 5)
    r = _post(app)
    assert (r.status_code, r.json(), r.headers["retry-after"]) == (
        503, {"error": "model_not_ready", "state": "loading", "retry_after_secs": 10}, "10")
    app.wait_state("ready")


def test_503_while_waiting_for_gpu_uses_the_poll_interval(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(FaultHooks(WHISPEROP_FAULT_LOAD_OOM_COUNT=9))
    assert app.client.post("/model/load").status_code == 202
    st = app.wait_state("waiting_for_gpu", 10)
    assert set(st) == {"state", "vram_needed_mb", "vram_free_mb", "retry_in_secs"}
    r = _post(app)
    assert (r.status_code, r.json()["retry_after_secs"], r.headers["retry-after"]) == (503, 7, "7")
    assert app.client.post("/model/unload").json() == {"status": "unload_requested"}
    app.wait_state("unloaded", 5)


CASES = {
    "missing-audio": (dict(audio=None), "missing 'audio' field"),
    "empty-audio": (dict(audio=b""), "audio field is empty"),
    "bad-task": (dict(task="summarise"), "task must be 'transcribe' or 'translate'"),
    "unknown-language": (dict(language="xx"), "unknown language 'xx'; accepted: auto, en, "),
    "ftp-webhook": (dict(webhook_url="ftp://h/x"), "webhook_url must be an http(s) URL"),
    "hostless-webhook": (dict(webhook_url="http://"), "webhook_url must be an http(s) URL"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_fields_are_400_before_any_model_check(make_app, case: str) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    kw, msg = CASES[case]
    kw = dict(kw)
    r = _post(app, **kw) if "audio" not in kw else _post(app, kw.pop("audio"), **kw)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and r.json()["error"].startswith(msg), r.json()
    assert app.runtime.state == ModelState.unloaded, "a rejected request must not trigger a load"
    assert app.blob_files() == [], "a rejected upload must leave no blob"


MALFORMED = {
    "json": ("application/json", b"{}"),
    "no-boundary": ("multipart/form-data", b"--x\r\n"),
    "garbage": ("multipart/form-data; boundary=B", b"this is not multipart"),
    "truncated": ("multipart/form-data; boundary=B",
                  b'--B\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n' + b"x" * 5000),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_multipart(make_app, case: str) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    ctype, body = MALFORMED[case]
    r = app.client.post("/jobs", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 400 and r.json()["error"].startswith("multipart error: "), r.text
    assert app.blob_files() == []


def test_job_lifecycle_through_the_api(make_app, short_wav: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    assert app.client.post("/model/load").json() == {"status": "load_initiated"}
    app.wait_state("ready")
    r = app.client.post("/model/load")
    assert (r.status_code, r.json()) == (200, {"status": "already_ready"})
    hook = "http://127.0.0.1:9/done"
    r = _post(app, short_wav.read_bytes(), filename="short.wav", language="auto", webhook_url=hook, colour="blue")
    assert r.status_code == 202 and set(r.json()) == {"job_id"}
    job_id = r.json()["job_id"]
    uuid.UUID(job_id)
    job = app.wait_job(job_id)
    assert set(job) == set(Job.model_fields)
    assert (job["status"], job["filename"], job["webhook_url"], job["progress"]) == ("done", "short.wav", hook, 100)
    assert job["language"] not in (None, "auto") and job["duration_secs"] == pytest.approx(3.0, abs=0.05)
    assert job["created_at"].endswith("Z") and job["completed_at"].endswith("Z")
    assert app.blob_files() == [], "a finished job's audio is removed"
    with app.client.stream("GET", f"/jobs/{job_id}/stream") as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        body = b"".join(s.iter_bytes()).decode()
    assert body.count("event: ") == 1 and body.startswith("event: done\ndata: ")
    r = app.client.delete(f"/jobs/{job_id}")
    assert (r.status_code, r.json()) == (409, {"error": f"job {job_id} is already in terminal state done"})
    health = app.client.get("/health").json()
    assert Health.model_validate(health) and health["model"] == "tiny-test" and health["queue_depth"] == 0
    assert (health["model_state"], health["gpu_name"], health["vram_total_mb"]) == ("ready", None, None)
    metrics = app.client.get("/metrics").text
    for needle in ('whisperop_jobs{status="done"} 1.0', "whisperop_queue_depth 0.0", 'whisperop_model_state{state="ready"} 1.0',
                   "whisperop_transcription_speed_count 1.0"):
        assert needle in metrics, needle
    up = next(float(line.split()[1]) for line in metrics.splitlines() if line.startswith("whisperop_upload_bytes_total"))
    assert up >= short_wav.stat().st_size


def test_cancel_queued_job_and_unknown_ids(make_app, short_wav: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(QUEUE_WHILE_LOADING=True, faults=FaultHooks(WHISPEROP_FAULT_LOAD_DELAY_SECS=30))
    r = _post(app, short_wav.read_bytes())
    assert r.status_code == 202, "QUEUE_WHILE_LOADING accepts while unloaded (and loads)"
    job_id = r.json()["job_id"]
    app.wait_state("loading", 5)
    assert app.client.get("/health").json()["queue_depth"] == 1
    r = app.client.delete(f"/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["completed_at"]
    assert app.blob_files() == [], "a cancelled queued job's audio is removed"
    missing = str(uuid.uuid4())
    for method, path in (("GET", f"/jobs/{missing}"), ("GET", f"/jobs/{missing}/stream"), ("DELETE", f"/jobs/{missing}")):
        r = app.client.request(method, path)
        assert (r.status_code, r.json()) == (404, {"error": f"job {missing} not found"})
    assert app.client.post("/model/unload").status_code == 200
    app.wait_state("unloaded", 5)


def test_docs_and_openapi(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    assert "swagger" in app.client.get("/docs").text.lower()
    doc = app.client.get("/openapi.json").json()
    paths = doc["paths"]
    for path, method in (("/jobs", "post"), ("/jobs/{job_id}", "get"), ("/jobs/{job_id}/stream", "get"), ("/jobs/{job_id}", "delete"),
                         ("/health", "get"), ("/model/status", "get"), ("/model/load", "post"), ("/model/unload", "post"),
                         ("/model/events", "get")):
        assert method in paths[path], (method, path)
    post = paths["/jobs"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"202", "400", "503"} <= set(post["responses"])
    assert set(doc["components"]["schemas"]["Job"]["properties"]) == set(Job.model_fields)


def test_health_reports_the_runtimes_gpu(make_app, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """/health asks the runtime for its GPU (local: NVML of this machine, cluster: what the ready
    inference pods report), not the facade process: NVML is replaced here, as CI has no GPU."""
    from whisperop.core.gpu import GpuInfo
    from whisperop.inference import runtime as runtime_mod

    monkeypatch.setattr(runtime_mod, "local_gpu", lambda device=0: GpuInfo("Test GPU 24GB", 24576, 512))
    app = make_app()
    health = app.client.get("/health").json()
    assert (health["gpu_name"], health["vram_total_mb"]) == ("Test GPU 24GB", 24576)
    monkeypatch.setattr(runtime_mod, "local_gpu", lambda device=0: None)
    health = app.client.get("/health").json()
    assert (health["gpu_name"], health["vram_total_mb"]) == (None, None)
