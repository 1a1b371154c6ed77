"""Issue 19 in cluster mode, on the real control plane and MinIO: ``GET /jobs`` over the watch cache,
purge, TTL and priority into the TranscriptionJob spec, ``audio_url`` (http(s) streamed into S3, s3://
pointed at), transcript files, and the OpenAI-compatible API with the official client (operator +
local ``whisperop worker`` processes, as tests/operator/test_facade_cluster.py runs them)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from whisperop.cluster import kube
from whisperop.core import crds

from .conftest import Cluster, wait_for
from .test_facade_cluster import Facade, PodWorkers

from tests.support import audio as audio_mod  # noqa: E402
from tests.support.subtitles import parse_srt, parse_vtt  # noqa: E402

pytestmark = pytest.mark.cluster


class OneFile(ThreadingHTTPServer):
    def __init__(self, body: bytes) -> None:
        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), H)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def files() -> Iterator[OneFile]:
    srv = OneFile(audio_mod.JFK_WAV.read_bytes())
    yield srv
    srv.shutdown()
    srv.server_close()


def _job_body(name: str, audio: str, submitted: datetime) -> dict[str, Any]:
    return {"apiVersion": crds.API_VERSION, "kind": crds.JOB_KIND,
            "metadata": {"name": name, "annotations": {
                crds.ANN_SUBMITTED: submitted.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}},
            "spec": {"audio": audio, "model": "default"}}


def test_listing_purge_ttl_priority_and_audio_url(cluster: Cluster, files: OneFile) -> None:
    """No operator: the jobs stay as the test writes them."""
    c = cluster
    jfk_uri = c.upload(audio_mod.JFK_WAV)
    t0 = datetime.now(timezone.utc)
    names = [f"list-{i:03d}" for i in range(60)]
    for i, name in enumerate(names):
        c.jobs.create(_job_body(name, jfk_uri, t0 + timedelta(milliseconds=i)))
        if i % 3 == 0:
            c.jobs.patch_status(name, {"phase": "Failed", "error": "test", "completionTime": kube.ts()})
    f = Facade(c, "apps", JOB_TTL_SECS="3600", WHISPEROP_OUTBOUND_ALLOW="127.0.0.1",
               AUDIO_URL_S3_BUCKETS=c.s3_env.bucket)
    try:
        http = httpx.Client(base_url=f.url, timeout=60)
        wait_for(lambda: len(http.get("/jobs", params={"limit": 200}).json()["jobs"]) == 60, 30, "60 jobs listed")

        def pages(**params: Any) -> list[str]:
            out, cursor = [], None
            while True:
                body = http.get("/jobs", params={**params, **({"cursor": cursor} if cursor else {})}).json()
                out += [j["id"] for j in body["jobs"]]
                assert len(body["jobs"]) <= params.get("limit", 50)
                if (cursor := body["next_cursor"]) is None:
                    return out

        assert pages(limit=25) == names[::-1]
        failed = [n for i, n in enumerate(names) if i % 3 == 0]
        assert pages(status="failed", limit=7) == failed[::-1]
        assert pages(status="queued,failed", limit=200) == names[::-1]
        assert http.get("/jobs", params={"cursor": "nope"}).status_code == 400
        # purge: the resource goes (the operator's finalizer would take its S3 objects); plain DELETE stays 409
        assert http.delete(f"/jobs/{failed[0]}").status_code == 409
        assert http.delete(f"/jobs/{failed[0]}", params={"purge": "true"}).status_code == 204
        with pytest.raises(kube.NotFound):
            c.jobs.get(failed[0])
        assert http.get(f"/jobs/{names[1]}/transcript.srt").status_code == 409  # queued: no transcript yet

        # an upload with priority: TTL and priority land in the spec
        r = http.post("/jobs", data={"priority": "7"}, files={"audio": ("jfk.wav", audio_mod.JFK_WAV.read_bytes())})
        assert r.status_code == 202, r.text
        spec = c.jobs.get(r.json()["job_id"])["spec"]
        assert spec["priority"] == 7 and spec["ttlSecondsAfterFinished"] == 3600

        # audio_url over http: fetched through the guard (127.0.0.1 allowed here) and streamed into S3
        r = http.post("/jobs", data={"audio_url": files.url + "/speech/jfk.wav"}, files={"note": (None, "x")})
        assert r.status_code == 202, r.text
        obj = c.jobs.get(r.json()["job_id"])
        bucket, key = crds.split_s3_uri(obj["spec"]["audio"])
        assert key.startswith(f"uploads/{c.ns}/audio/{obj['metadata']['name']}/")
        assert c.s3_env.client().head_object(Bucket=bucket, Key=key)["ContentLength"] == audio_mod.JFK_WAV.stat().st_size
        assert obj["metadata"]["annotations"][crds.ANN_AUDIO_OWNED] == "true"
        assert http.get(f"/jobs/{obj['metadata']['name']}").json()["filename"] == "jfk.wav"

        # audio_url s3://: pointed at, never owned
        r = http.post("/jobs", data={"audio_url": jfk_uri}, files={"note": (None, "x")})
        assert r.status_code == 202, r.text
        obj = c.jobs.get(r.json()["job_id"])
        assert obj["spec"]["audio"] == jfk_uri and crds.ANN_AUDIO_OWNED not in obj["metadata"]["annotations"]
        for url, why in [("s3://someone-elses/x.wav", "not listed in AUDIO_URL_S3_BUCKETS"),
                         (f"s3://{c.s3_env.bucket}/missing.wav", "cannot be read"),
                         ("http://169.254.169.254/latest/meta-data", "link-local"),
                         ("http://10.0.0.1:6443/", "private")]:
            r = http.post("/jobs", data={"audio_url": url}, files={"note": (None, "x")})
            assert r.status_code == 400 and why in r.json()["error"], (url, r.text)
        assert len(c.jobs.list()["items"]) == 59 + 3  # the refused ones left nothing
        http.close()
    finally:
        f.close()


def test_openai_sdk_waits_for_the_scale_up_then_files_and_listing(cluster: Cluster, tiny_model: Path,
                                                                   tmp_path: Path) -> None:
    """Model at zero replicas: the first OpenAI request waits for the operator's scale-up and the worker's
    load, then runs as a TranscriptionJob; subtitles parse; the job is listed and downloadable."""
    c = cluster
    c.start_operator()
    c.create_model(modelURI=str(tiny_model), minReplicas=0, maxReplicas=1, idleTimeoutSeconds=60)
    workers = PodWorkers(c)
    f = Facade(c, "openai", QUEUE_WHILE_LOADING="false", SYNC_LOAD_WAIT_SECS="300")
    wav = audio_mod.bursts_wav(tmp_path / "speech.wav", 20.0, seed=3)
    try:
        sdk = openai.OpenAI(base_url=f.url + "/v1", api_key="unused", timeout=300, max_retries=0)
        assert [m.id for m in sdk.models.list()] == ["default", "whisper-1"]
        assert httpx.get(f.url + "/model/status", timeout=10).json()["state"] == "unloaded"
        with wav.open("rb") as fh:
            v = sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json",
                                                timestamp_granularities=["segment"])
        assert v.duration == pytest.approx(20.0, abs=0.5) and v.segments is not None
        with wav.open("rb") as fh:
            srt = sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="srt")
        parse_srt(srt)
        with wav.open("rb") as fh:
            sdk.audio.transcriptions.create(model="whisper-1", file=fh, prompt="Kubernetes, kopf.", temperature=0.3)
        hinted = [o for o in c.jobs.list()["items"]
                  if "whisperop.io/decode-hints" in (o["metadata"].get("annotations") or {})]
        assert [json.loads(o["metadata"]["annotations"]["whisperop.io/decode-hints"]) for o in hinted] == [
            {"prompt": "Kubernetes, kopf.", "temperature": 0.3}]
        with pytest.raises(openai.NotFoundError):
            with wav.open("rb") as fh:
                sdk.audio.transcriptions.create(model="gpt-9", file=fh)
        jobs = httpx.get(f.url + "/jobs", params={"status": "done"}, timeout=10).json()["jobs"]
        assert len(jobs) == 3 and all(j["filename"] == "speech.wav" for j in jobs)
        r = httpx.get(f"{f.url}/jobs/{jobs[0]['id']}/transcript.vtt", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "text/vtt; charset=utf-8"
        parse_vtt(r.text)
        assert c.jobs.get(jobs[0]["id"])["spec"]["model"] == "default"
        assert uuid.UUID(jobs[0]["id"])
    finally:
        f.close()
        workers.close()


@pytest.mark.slow
def test_openai_sdk_jfk_reference_on_cluster(cluster: Cluster, base_model: Path) -> None:
    c = cluster
    c.start_operator()
    c.create_model(modelURI=str(base_model), minReplicas=0, maxReplicas=1, idleTimeoutSeconds=120)
    workers = PodWorkers(c, extra={"CHUNK_MAX_SECS": "60"})
    f = Facade(c, "openai-base", QUEUE_WHILE_LOADING="false", SYNC_LOAD_WAIT_SECS="600")
    want = audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    try:
        sdk = openai.OpenAI(base_url=f.url + "/v1", api_key="unused", timeout=900, max_retries=0)
        with audio_mod.JFK_WAV.open("rb") as fh:
            out = sdk.audio.transcriptions.create(model="whisper-1", file=fh)
        assert audio_mod.normalize_words(out.text) == want, out.text
        with audio_mod.JFK_WAV.open("rb") as fh:
            v = sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json",
                                                timestamp_granularities=["word"])
        assert v.language == "english" and v.words and [w.word.strip(",.").lower() for w in v.words] == want
        with audio_mod.JFK_WAV.open("rb") as fh:
            tr = sdk.audio.translations.create(model="whisper-1", file=fh, response_format="text")
        assert audio_mod.normalize_words(tr) == want
        prompt = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
        with audio_mod.JFK_WAV.open("rb") as fh:  # the worker applies the prompt from the decode-hints annotation
            styled = sdk.audio.transcriptions.create(model="whisper-1", file=fh, prompt=prompt)
        assert audio_mod.normalize_words(styled.text) == want
        assert styled.text == styled.text.lower() and "," not in styled.text, styled.text
    finally:
        f.close()
        workers.close()
