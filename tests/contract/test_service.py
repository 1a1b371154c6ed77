"""GET /health, GET /docs, GET /openapi.json, GET /metrics."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.client import ApiClient
from tests.support.shapes import JOB_KEYS, assert_health, assert_job


def test_health_shape(api: ApiClient, shared) -> None:
    r = api.http.get("/health")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert_health(body, model_state="ready")
    if shared.server is not None:
        # WHISPER_MODEL is the display name; no GPU on the test machine -> nulls (NVML absent)
        assert body["model"] == "tiny-test", body
    assert body["queue_depth"] == 0, f"idle server reports queue_depth {body['queue_depth']}"


def test_idle_timeout_zero_never_unloads(api: ApiClient, shared) -> None:
    """IDLE_TIMEOUT_SECS=0 means never: the session server (started with 0) still has the
    model it loaded at the start of the session, after many idle gaps between jobs."""
    if shared.server is None:
        pytest.skip("the WHISPEROP_BASE_URL server's IDLE_TIMEOUT_SECS is not known to the suite")
    st = api.model_status()
    assert st["state"] == "ready" and st.get("loaded_at") == shared.loaded_at, (
        f"model was reloaded or unloaded during the session: loaded_at {shared.loaded_at} -> {st}"
    )


def test_docs_is_swagger_ui(api: ApiClient) -> None:
    r = api.http.get("/docs")
    assert r.status_code == 200, r.status_code
    assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
    assert "swagger" in r.text.lower(), r.text[:500]


def _norm_path(p: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", p)


CONTRACT_ROUTES = {
    ("post", "/jobs"),
    ("get", "/jobs/{}"),
    ("get", "/jobs/{}/stream"),
    ("delete", "/jobs/{}"),
    ("get", "/health"),
    ("get", "/model/status"),
    ("post", "/model/load"),
    ("post", "/model/unload"),
    ("get", "/model/events"),
}


def test_openapi_document_lists_every_contract_route(api: ApiClient) -> None:
    r = api.http.get("/openapi.json")
    assert r.status_code == 200, r.status_code
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert str(doc.get("openapi", "")).startswith("3."), doc.get("openapi")
    routes = {(method.lower(), _norm_path(path)) for path, ops in doc["paths"].items() for method in ops}
    missing = CONTRACT_ROUTES - routes
    assert not missing, f"routes missing from /openapi.json: {sorted(missing)}"
    # the shapes come from the pydantic models: some schema is the Job
    schemas = doc.get("components", {}).get("schemas", {})
    job_like = [n for n, s in schemas.items() if set(s.get("properties", {})) == set(JOB_KEYS)]
    assert job_like, f"no schema with exactly the Job fields among {sorted(schemas)}"
    # POST /jobs documents the multipart fields of the contract
    post = doc["paths"][next(p for p in doc["paths"] if _norm_path(p) == "/jobs")]["post"]
    content = post.get("requestBody", {}).get("content", {})
    assert "multipart/form-data" in content, f"POST /jobs request body is not multipart/form-data: {list(content)}"
    codes = set(post.get("responses", {}))
    assert {"202", "400", "503"} <= codes, f"POST /jobs documents responses {sorted(codes)}"


def _families(text: str):
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(text))


def test_metrics_prometheus_text(api: ApiClient, audio) -> None:
    # one finished job, so the per-status counter and the speed histogram have data
    job_id = api.submit(audio.jfk)
    assert_job(api.wait_terminal(job_id, timeout=120), status="done")
    r = api.http.get("/metrics")
    assert r.status_code == 200, r.status_code
    ctype = r.headers["content-type"]
    assert ctype.startswith("text/plain") or ctype.startswith("application/openmetrics-text"), ctype
    fams = _families(r.text)
    by_name = {f.name: f for f in fams}
    names = sorted(by_name)

    def find(*words: str, type_: str | None = None):
        return [f for f in fams if all(w in f.name for w in words) and (type_ is None or f.type == type_)]

    # jobs by status: some family with a 'status' label that has a sample for status="done" > 0
    by_status = [f for f in fams if "job" in f.name and any("status" in s.labels for s in f.samples)]
    assert by_status, f"no jobs-by-status metric (a 'job' family with a 'status' label) in {names}"
    done_vals = [s.value for f in by_status for s in f.samples if s.labels.get("status") == "done"]
    assert done_vals and max(done_vals) >= 1, f"jobs-by-status metric has no done sample >= 1: {[f.samples for f in by_status]}"
    assert find("queue"), f"no queue depth metric in {names}"
    assert find("model", "state") or any("state" in s.labels for f in find("model") for s in f.samples), f"no model state metric in {names}"
    speed = [f for f in fams if f.type == "histogram" and any(w in f.name for w in ("speed", "realtime", "real_time", "rtf"))]
    assert speed, f"no transcription speed histogram in {[(f.name, f.type) for f in fams]}"
    assert any(s.name.endswith("_count") and s.value >= 1 for f in speed for s in f.samples), f"speed histogram has no observation after a done job: {speed}"
    upload = find("upload", "bytes")
    assert upload, f"no upload bytes metric in {names}"
    up_total = max(s.value for f in upload for s in f.samples)
    assert up_total >= audio.jfk.stat().st_size, f"upload bytes metric {up_total} < size of the file just uploaded"


def test_unknown_route_is_404(api: ApiClient) -> None:
    r = api.http.get("/no/such/route")
    assert r.status_code == 404
