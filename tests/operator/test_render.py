"""The inference Deployment the operator renders (no cluster): model sources,
runtimeClassName, the image's user and cache path, Pod Security "restricted"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from whisperop.core import crds, modelsource
from whisperop.operator.models import render_deployment

REPO = Path(__file__).resolve().parents[2]
RESTRICTED_CONTAINER = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _wm(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "big", "namespace": "ns", "uid": "u-1"}, "spec": {"resources": {"gpus": 1}, **spec}}


def _pod(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


PVC = {"pvc": {"claimName": "whisper-models", "path": "large/ggml-large-v3-q5_0.bin"}}


def test_uri_source_has_no_pvc_and_no_runtime_class() -> None:
    pod = _pod(render_deployment(_wm(modelURI="s3://models/ggml-base.bin")))
    assert "runtimeClassName" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["cache", "tmp"]
    assert modelsource.MODEL_PATH_ENV not in _env(pod)


def test_runtime_class_name_is_applied() -> None:
    pod = _pod(render_deployment(_wm(modelURI="/models/m.bin", runtimeClassName="nvidia")))
    assert pod["runtimeClassName"] == "nvidia"


def test_pvc_source_mounts_the_claim_read_only_and_passes_the_file() -> None:
    pod = _pod(render_deployment(_wm(source=PVC)))
    vol = next(v for v in pod["volumes"] if v["name"] == modelsource.PVC_VOLUME)
    assert vol["persistentVolumeClaim"] == {"claimName": "whisper-models", "readOnly": True}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == modelsource.PVC_VOLUME)
    assert mount == {"name": modelsource.PVC_VOLUME, "mountPath": modelsource.PVC_MOUNT_DIR, "readOnly": True}
    assert _env(pod)[modelsource.MODEL_PATH_ENV] == f"{modelsource.PVC_MOUNT_DIR}/large/ggml-large-v3-q5_0.bin"


def test_pod_runs_as_the_image_user_with_the_image_cache_path() -> None:
    """Dockerfile.inference: USER 65532:65532, WHISPEROP_MODEL_CACHE=/var/cache/whisperop/models."""
    pod = _pod(render_deployment(_wm(modelURI="s3://models/ggml-base.bin")))
    sc = pod["securityContext"]
    assert sc["runAsUser"] == sc["runAsGroup"] == sc["fsGroup"] == 65532
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    c = pod["containers"][0]
    assert c["securityContext"] == RESTRICTED_CONTAINER
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/var/cache/whisperop"] == "cache" and mounts["/tmp"] == "tmp"
    assert {v["name"]: v for v in pod["volumes"]}["cache"] == {"name": "cache", "emptyDir": {}}
    assert _env(pod)["WHISPEROP_MODEL_CACHE"] == "/var/cache/whisperop/models"
    dockerfile = (REPO / "Dockerfile.inference").read_text()
    assert "USER 65532:65532" in dockerfile and "WHISPEROP_MODEL_CACHE=/var/cache/whisperop/models" in dockerfile


def test_template_hash_changes_with_the_source_and_runtime_class() -> None:
    def digest(**spec: Any) -> str:
        return render_deployment(_wm(**spec))["metadata"]["annotations"][crds.ANN_TEMPLATE_HASH]

    hashes = {digest(modelURI="/m.bin"), digest(modelURI="/m.bin", runtimeClassName="nvidia"), digest(source=PVC)}
    assert len(hashes) == 3


@pytest.mark.parametrize("spec, message", [
    ({}, "no model source"),
    ({"modelURI": "/m.bin", "source": PVC}, "exactly one model source"),
    ({"source": {}}, "no model source"),
    ({"source": {"pvc": {"claimName": "m", "path": "../etc/passwd"}}}, "'..'"),
    ({"source": {"pvc": {"claimName": "m", "path": "/abs.bin"}}}, "relative path"),
    ({"source": {"pvc": {"claimName": "Bad_Name", "path": "m.bin"}}}, "claimName"),
    ({"modelURI": "relative.bin"}, "modelURI must be"),
], ids=["none", "both", "empty-source", "dotdot", "absolute-path", "bad-claim", "relative-uri"])
def test_invalid_sources_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(modelsource.InvalidModelSource, match=message):
        modelsource.check(spec)
    with pytest.raises(modelsource.InvalidModelSource, match=message):
        crds.as_model(_wm(**spec))  # the operator's parse: the reason, not pydantic's wrapper
    with pytest.raises(modelsource.InvalidModelSource, match=message):
        render_deployment(_wm(**spec))
    with pytest.raises(ValueError):
        crds.WhisperModelSpec.model_validate(spec)


def test_existing_manifests_still_validate() -> None:
    """Backwards compatibility: the WhisperModel examples (modelURI alone) parse and render as before."""
    docs = [d for p in (REPO / "docs" / "examples").glob("*.yaml") for d in yaml.safe_load_all(p.read_text())
            if d and d.get("kind") == crds.MODEL_KIND]
    assert docs
    for d in docs:
        spec = crds.WhisperModelSpec.model_validate(d["spec"]).dump()
        pod = _pod(render_deployment({"metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": spec}))
        assert [v["name"] for v in pod["volumes"]] == ["cache", "tmp"]


def test_worker_prefers_the_resolved_local_file() -> None:
    """The worker loads WHISPEROP_MODEL_PATH as is (PVC source): no download, no conversion;
    a missing file is a clear ModelNotFoundError, not a fetch attempt."""
    from whisperop.cluster import model_fetch
    from whisperop.cluster.s3 import S3Settings
    from whisperop.core.errors import ModelNotFoundError
    from whisperop.core.settings import EngineSettings

    pvc = crds.WhisperModelSpec.model_validate({"source": PVC})
    assert modelsource.location(pvc, model_path="/var/lib/whisperop/model-pvc/m.bin") == "/var/lib/whisperop/model-pvc/m.bin"
    assert modelsource.location(pvc) == f"{modelsource.PVC_MOUNT_DIR}/large/ggml-large-v3-q5_0.bin"
    uri = crds.WhisperModelSpec(modelURI="s3://models/m.bin")
    assert modelsource.location(uri) == "s3://models/m.bin"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        model_fetch.fetch("/nonexistent/m.bin", EngineSettings(), S3Settings())


def test_engine_is_rendered_into_the_pod_env_and_wins_over_spec_env() -> None:
    """spec.engine → ENGINE of the worker; an ENGINE in spec.env gives way (one entry per name:
    server-side apply refuses a list map with a duplicate key); absent → no ENGINE (the image default)."""
    env = _pod(render_deployment(_wm(modelURI="s3://models/base-ct2", engine="ctranslate2",
                                     env={"ENGINE": "whispercpp", "CT2_BATCH_SIZE": "8"})))["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.count("ENGINE") == 1
    assert _env({"containers": [{"env": env}]})["ENGINE"] == "ctranslate2"
    assert _env({"containers": [{"env": env}]})["CT2_BATCH_SIZE"] == "8"
    assert "ENGINE" not in _env(_pod(render_deployment(_wm(modelURI="s3://models/ggml-base.bin"))))
    # without spec.engine, spec.env's ENGINE passes through as before
    assert _env(_pod(render_deployment(_wm(modelURI="/m", env={"ENGINE": "ctranslate2"}))))["ENGINE"] == "ctranslate2"
    # a changed engine rolls the pods (the template hash covers the env)
    a = render_deployment(_wm(modelURI="s3://models/m", engine="ctranslate2"))
    b = render_deployment(_wm(modelURI="s3://models/m", engine="whispercpp"))
    assert a["metadata"]["annotations"][crds.ANN_TEMPLATE_HASH] != b["metadata"]["annotations"][crds.ANN_TEMPLATE_HASH]


def test_engine_in_the_typed_spec() -> None:
    spec = crds.WhisperModelSpec.model_validate({"modelURI": "s3://models/base-ct2", "engine": "ctranslate2"})
    assert spec.engine == "ctranslate2" and spec.dump()["engine"] == "ctranslate2"
    assert crds.WhisperModelSpec.model_validate({"modelURI": "/m.bin"}).engine is None
    with pytest.raises(ValueError):
        crds.WhisperModelSpec.model_validate({"modelURI": "/m.bin", "engine": "onnx"})


def test_worker_engine_settings_take_spec_engine_over_the_environment() -> None:
    """A worker started without ENGINE (kwok workers, an old pod) still runs the model's engine."""
    from whisperop.cluster.model_fetch import engine_settings
    from whisperop.core.settings import EngineSettings

    env = EngineSettings(ENGINE="whispercpp", USE_GPU=False)
    spec = crds.WhisperModelSpec.model_validate({"modelURI": "s3://models/base-ct2", "engine": "ctranslate2"})
    assert engine_settings(spec, env).engine == "ctranslate2"
    plain = crds.WhisperModelSpec.model_validate({"modelURI": "/m.bin"})
    assert engine_settings(plain, env).engine == "whispercpp"
    env = EngineSettings(ENGINE="auto", USE_GPU=False)
    assert engine_settings(plain, env).engine == "auto"  # the model decides, once found
