"""``spec.engine`` on the real control plane and MinIO: a WhisperModel with
``engine: ctranslate2`` whose source is an S3 prefix holding the CTranslate2
export of whisper base (the real weights) gets a job done.

What it proves end to end: the operator renders ENGINE into the inference
Deployment; the worker — started here without any ENGINE, as a kwok worker —
reads spec.engine, downloads the whole directory (every object under the
prefix) instead of one GGML object, and CTranslate2 transcribes jfk.wav word
for word — two jobs at once (JOB_CONCURRENCY=2). CTranslate2 decodes it in ~1 s here; the upload of the 150 MB
directory to MinIO and the worker's download take a few seconds more."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from whisperop.core import crds

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def ct2_model() -> Path:
    from whisperop.core.settings import EngineSettings
    from whisperop.modelstore.cache import resolve_model

    return resolve_model("base-ct2", EngineSettings().model_cache_dir)


def test_ctranslate2_model_from_an_s3_prefix_runs_a_job(cluster: Cluster, ct2_model: Path, jfk_s3: str,
                                                        references: dict[str, Any]) -> None:
    prefix = f"models/{cluster.ns}/base-ct2"
    for f in sorted(ct2_model.iterdir()):
        cluster.upload(f, f"{prefix}/{f.name}")
    cluster.start_operator()
    cluster.create_model(modelURI=f"s3://{cluster.s3_env.bucket}/{prefix}", engine="ctranslate2",
                         minReplicas=0, maxReplicas=1, idleTimeoutSeconds=60, resources={"gpus": 0})
    cluster.create_job(jfk_s3, name="jfk-ct2", language="en")
    cluster.create_job(jfk_s3, name="jfk-ct2-b")
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 60, "a Running inference pod")
    from kubernetes import client

    dep = client.AppsV1Api(cluster.api).read_namespaced_deployment("whisper-default", cluster.ns)
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert env["ENGINE"] == "ctranslate2" and env["USE_GPU"] == "false"

    # no ENGINE in its environment: spec.engine decides; two jobs at once (their windows share batches)
    cluster.start_worker(pod, extra={"JOB_CONCURRENCY": "2", "LOG_FORMAT": "json"})
    ref = references["jfk.wav"]
    ref_text = ref if isinstance(ref, str) else ref.get("text", "")
    norm = lambda s: re.sub(r"[^a-z ]", "", s.lower()).split()  # noqa: E731
    for name in ("jfk-ct2", "jfk-ct2-b"):
        st = cluster.wait_phase(name, ("Done", "Failed"), timeout=240)["status"]
        assert st["phase"] == "Done", (st, cluster.log_tail())
        bucket, key = crds.split_s3_uri(st["result"]["json"])
        result = json.loads(cluster.s3_env.client().get_object(Bucket=bucket, Key=key)["Body"].read())
        assert norm(" ".join(s["text"] for s in result["segments"])) == norm(ref_text)
        assert all(s["words"] for s in result["segments"])  # word timings through CTranslate2's align
    # JOB_CONCURRENCY=2: both jobs were claimed and started before either was done
    events = []
    for line in (cluster.tmp / f"worker-{pod}.log").read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") in ("job started", "job done"):
            events.append(rec["msg"])
    assert events[:2] == ["job started", "job started"], events


def test_auto_engine_runs_a_ggml_object_from_s3_with_whisper_cpp(cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    """No spec.engine, no ENGINE (auto, the default): an ``s3://`` URI naming one object is a GGML
    file, downloaded as one file and run by whisper.cpp (every existing WhisperModel keeps working)."""
    uri = cluster.upload(tiny_model, f"models/{cluster.ns}/ggml-tiny.bin")
    cluster.start_operator()
    cluster.create_model(modelURI=uri, minReplicas=1, maxReplicas=1, resources={"gpus": 0})
    cluster.create_job(jfk_s3, name="jfk-auto")
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 60, "a Running inference pod")
    cluster.start_worker(pod, extra={"LOG_FORMAT": "json"})
    st = cluster.wait_phase("jfk-auto", ("Done", "Failed"), timeout=240)["status"]
    assert st["phase"] == "Done", (st, cluster.log_tail())
    cached = [p for p in (cluster.tmp / "cache").iterdir() if p.name.endswith("ggml-tiny.bin")]
    assert len(cached) == 1 and cached[0].is_file()  # one object, one file (not a directory)
    loaded = [json.loads(line) for line in (cluster.tmp / f"worker-{pod}.log").read_text(errors="replace").splitlines()
              if line.startswith("{") and '"model loaded"' in line]
    assert loaded and loaded[0].get("engine") is None and "flash_attn" in loaded[0], loaded  # whisper.cpp's load record
