"""The CRDs: committed YAML = generator output; the API server enforces the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from whisperop.core import crdgen, crds

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_equal_generator_output() -> None:
    for name, text in crdgen.outputs().items():
        path = REPO / "crds" / name
        assert path.is_file(), f"{name} missing: run python -m whisperop.core.crdgen"
        assert path.read_text() == text, f"{name} is stale: run python -m whisperop.core.crdgen"


def test_crds_are_structural_with_columns_and_short_names() -> None:
    job = crdgen.job_crd()
    v = job["spec"]["versions"][0]
    assert job["spec"]["names"]["shortNames"] == ["tj"]
    assert crdgen.model_crd()["spec"]["names"]["shortNames"] == ["wm"]
    assert v["subresources"] == {"status": {}}
    assert [c["name"] for c in v["additionalPrinterColumns"]][:5] == ["Phase", "Progress", "Model", "Language", "Duration"]

    def walk(node: dict[str, Any], path: str) -> None:  # structural: every node typed, no $ref/anyOf
        assert "type" in node, f"untyped schema node at {path}"
        for bad in ("$ref", "anyOf", "allOf", "oneOf", "title"):
            assert bad not in node, f"{bad} at {path}"
        for k, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(v["schema"]["openAPIV3Schema"], "")


def _job(audio: str = "s3://bucket/in/a.wav", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": crds.API_VERSION, "kind": crds.JOB_KIND, "metadata": {"generateName": "bad-"},
            "spec": {"audio": audio, **spec}}


@pytest.mark.cluster
@pytest.mark.parametrize(
    "body, message",
    [
        (_job(task="summarise"), 'spec.task: Unsupported value: "summarise": supported values: "transcribe", "translate"'),
        (_job(priority=-1), "spec.priority: Invalid value: -1: spec.priority in body should be greater than or equal to 0"),
        (_job(audio="ftp://host/a.wav"), "audio must be an s3://bucket/key URI or an http(s) URL"),
        (_job(audio="s3://no-key"), "audio must be an s3://bucket/key URI or an http(s) URL"),
        (_job(webhookUrl="not a url"), "webhookUrl must be an http(s) URL"),
        (_job(outputFormats=["json", "docx"]), 'Unsupported value: "docx"'),
    ],
    ids=["bad-task", "negative-priority", "ftp-uri", "s3-without-key", "bad-webhook", "bad-format"],
)
def test_api_server_rejects_invalid_jobs(cluster: Any, body: dict[str, Any], message: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    co = client.CustomObjectsApi(cluster.api)
    with pytest.raises(ApiException) as err:
        co.create_namespaced_custom_object(crds.GROUP, crds.VERSION, cluster.ns, crds.JOB_PLURAL, body)
    assert err.value.status == 422
    assert message in json.loads(err.value.body)["message"], err.value.body


@pytest.mark.cluster
def test_api_server_applies_defaults_and_rejects_bad_models(cluster: Any) -> None:
    from kubernetes.client.rest import ApiException

    obj = cluster.jobs.create(_job())
    assert obj["spec"]["model"] == "default" and obj["spec"]["task"] == "transcribe"
    assert obj["spec"]["priority"] == 0 and obj["spec"]["outputFormats"] == ["json"] and obj["spec"]["cancel"] is False
    wm = cluster.create_model("m1", modelURI="/models/ggml-base.bin")
    assert wm["spec"]["minReplicas"] == 0 and wm["spec"]["maxReplicas"] == 1
    assert wm["spec"]["idleTimeoutSeconds"] == 300 and wm["spec"]["gpuPollIntervalSeconds"] == 30
    with pytest.raises(ApiException) as err:
        cluster.create_model("m2", modelURI="relative/path.bin")
    assert "modelURI must be an s3://bucket/key URI or an absolute path" in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:
        cluster.create_model("m3", modelURI="/m.bin", minReplicas=-1)
    assert "spec.minReplicas in body should be greater than or equal to 0" in json.loads(err.value.body)["message"]


@pytest.mark.cluster
@pytest.mark.parametrize(
    "spec, message",
    [
        ({}, "set exactly one model source: modelURI (s3:// URI or absolute path) or source.pvc"),
        ({"modelURI": "/m.bin", "source": {"pvc": {"claimName": "models", "path": "m.bin"}}},
         "set exactly one model source"),
        ({"source": {}}, "source must name exactly one kind: pvc"),
        ({"source": {"pvc": {"claimName": "models", "path": "a/../../etc/m.bin"}}},
         "source.pvc.path must not contain '.' or '..' segments"),
        ({"source": {"pvc": {"claimName": "models", "path": "/abs/m.bin"}}}, "spec.source.pvc.path in body should match"),
        ({"source": {"pvc": {"claimName": "models"}}}, "spec.source.pvc.path: Required value"),
        ({"modelURI": "/m.bin", "runtimeClassName": "Not_Valid"}, "spec.runtimeClassName in body should match"),
    ],
    ids=["no-source", "both-sources", "empty-source", "dotdot-path", "absolute-path", "no-path", "bad-runtime-class"],
)
def test_api_server_rejects_invalid_model_sources(cluster: Any, spec: dict[str, Any], message: str) -> None:
    from kubernetes.client.rest import ApiException

    with pytest.raises(ApiException) as err:
        cluster.create_model("bad", **spec)
    assert err.value.status == 422
    assert message in json.loads(err.value.body)["message"], err.value.body


@pytest.mark.cluster
def test_api_server_accepts_pvc_source_and_runtime_class(cluster: Any) -> None:
    wm = cluster.create_model("pvc", source={"pvc": {"claimName": "models", "path": "v3/ggml-large-v3.bin"}},
                              runtimeClassName="nvidia")
    assert wm["spec"]["source"] == {"pvc": {"claimName": "models", "path": "v3/ggml-large-v3.bin"}}
    assert "modelURI" not in wm["spec"] and wm["spec"]["runtimeClassName"] == "nvidia"
    assert "source" not in cluster.create_model("uri", modelURI="s3://models/ggml-base.bin")["spec"]  # no defaulting


def test_job_with_result_counts_removed_and_lists_degraded_chunks() -> None:
    """Issue 17: the facade's Job and the operator's webhook read one shape from transcript.json."""
    obj = {"metadata": {"name": "j", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"audio": "s3://b/a.wav", "chunkTimeLimitFactor": "2.5", "timeLimitSeconds": 600},
           "status": {"phase": "Done"}}
    body = {"segments": [{"index": 0, "start": 0.0, "end": 1.0, "text": "hi", "words": []}],
            "removed": [{"start": 2.0, "end": 3.0, "text": "hi", "reason": "repeat_over_silence"}] * 2,
            "degraded_chunks": [{"index": 3, "start": 60.0, "end": 90.0, "failed": True, "reason": "over its limit"}]}
    doc = crds.ResultDoc.parse(body)
    job = crds.job_with_result(obj, doc)
    assert (job.segments_removed, job.removed, [d.index for d in job.degraded_chunks]) == (2, None, [3])
    assert [s.text for s in job.segments] == ["hi"]
    assert (job.chunk_time_limit_factor, job.time_limit_secs) == (2.5, 600)
    assert crds.job_with_result(obj, doc, verbose=True).removed == doc.removed
    assert crds.job_with_result(obj, None).segments == []
