"""helm lint / template / values.schema.json, and properties of the rendered
manifests that need no cluster (RBAC shape, CRDs identical to crds/)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from .conftest import ALL_FEATURES, CHART, REPO, helm, render

VARIANTS = {"default": [], "all-features": ["-f", str(ALL_FEATURES)]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint(variant: str) -> None:
    r = helm("lint", "--strict", str(CHART), *VARIANTS[variant])
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout


def _kinds(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d["metadata"]["name"])
    return out


def test_template_default_values() -> None:
    kinds = _kinds(render())
    assert kinds["Deployment"] == ["wo-whisper-operator-operator", "wo-whisper-operator-facade"] or \
        sorted(kinds["Deployment"]) == sorted(["wo-whisper-operator-operator", "wo-whisper-operator-facade"])
    assert sorted(kinds["ServiceAccount"]) == sorted(f"wo-whisper-operator-{c}" for c in ("operator", "facade", "worker"))
    assert len(kinds["Role"]) == 3 and len(kinds["RoleBinding"]) == 3
    assert kinds["WhisperModel"] == ["default"] and kinds["Service"] == ["wo-whisper-operator-facade"]
    assert "Ingress" not in kinds and "NetworkPolicy" not in kinds
    docs = render()
    wm = next(d for d in docs if d["kind"] == "WhisperModel")
    assert wm["spec"]["minReplicas"] == 0 and wm["spec"]["resources"]["gpus"] == 1
    assert wm["spec"]["serviceAccountName"] == "wo-whisper-operator-worker"
    op = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))
    assert op["spec"]["replicas"] == 1 and op["spec"]["strategy"]["type"] == "Recreate"
    assert "--standalone" in op["spec"]["template"]["spec"]["containers"][0]["command"]


def test_template_all_features() -> None:
    docs = render("-f", str(ALL_FEATURES))
    kinds = _kinds(docs)
    assert kinds["Ingress"] == ["wo-whisper-operator-facade"] and len(kinds["NetworkPolicy"]) == 5
    assert len(kinds["Secret"]) == 2  # S3 + auth tokens
    op = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))
    cmd = op["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--peering") + 1] == "whisperop" and "--standalone" not in cmd
    assert "@sha256:1111" in op["spec"]["template"]["spec"]["containers"][0]["image"]
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-operator"))
    assert any("kopfpeerings" in r["resources"] for r in role["rules"])
    fac = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-facade"))
    env = {e["name"]: e.get("value") for e in fac["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WHISPEROP_AUTH_TOKENS_FILE"] == "/var/run/secrets/whisperop/auth" and env["QUEUE_WHILE_LOADING"] == "false"
    assert env["WHISPEROP_OUTBOUND_ALLOW"] == "hooks.internal,10.20.0.0/16"
    op_pod = op["spec"]["template"]["spec"]
    op_env = {e["name"]: e.get("value") for e in op_pod["containers"][0]["env"]}
    assert op_env["WHISPEROP_OUTBOUND_ALLOW"] == "hooks.internal,10.20.0.0/16"
    assert op_env["WHISPEROP_WEBHOOK_SECRETS_FILE"] == "/var/run/secrets/whisperop/webhook"
    assert {"name": "webhook-signing", "secret": {"secretName": "whisperop-webhook-signing"}} in op_pod["volumes"]
    # the secret file path is what whisperop.core.signing reads (keys current / previous)
    from whisperop.core import signing

    assert signing.FILE_ENV == "WHISPEROP_WEBHOOK_SECRETS_FILE"
    wm = next(d for d in docs if d["kind"] == "WhisperModel")
    assert "modelURI" not in wm["spec"]
    assert wm["spec"]["env"] == {"WHISPER_THREADS": "8", "WHISPEROP_OUTBOUND_ALLOW": "hooks.internal,10.20.0.0/16"}
    assert wm["spec"]["source"] == {"pvc": {"claimName": "whisper-models", "path": "large-v3/ggml-large-v3.bin"}}
    assert wm["spec"]["runtimeClassName"] == "nvidia"
    assert wm["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    # the spec is a valid WhisperModel (same rules as the CRD) and the operator renders it
    from whisperop.core import crds, modelsource
    from whisperop.operator.models import render_deployment

    crds.WhisperModelSpec.model_validate(wm["spec"])
    pod = render_deployment({"metadata": {"name": "default", "namespace": "whisper", "uid": "u"},
                             "spec": wm["spec"]})["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert {"name": modelsource.PVC_VOLUME, "persistentVolumeClaim": {"claimName": "whisper-models", "readOnly": True}} \
        in pod["volumes"]


def test_template_default_model_uses_the_s3_uri() -> None:
    wm = next(d for d in render() if d["kind"] == "WhisperModel")
    assert wm["spec"]["modelURI"] == "s3://whisperop-models/ggml-base-q8_0.bin"
    assert "source" not in wm["spec"] and "runtimeClassName" not in wm["spec"]


BAD_VALUES = [
    (["--set", "model.uri=http://example.org/model.bin"], "/model/uri"),
    (["--set", "model.minReplicas=-1"], "/model/minReplicas"),
    (["--set", "operator.replicas=2"], "/operator/replicas"),  # two operators need kopf peering
    (["--set", "image.operator.digest=sha256:abc"], "/image/operator/digest"),
    (["--set", "facade.service.type=Bogus"], "/facade/service/type"),
    (["--set", "facade.auth.enabled=true"], "/facade/auth"),  # no tokens, no Secret
    (["--set", "s3.endpoint=minio:9000"], "/s3/endpoint"),
    (["--set", "typo=1"], "typo"),  # unknown keys are rejected
    (["--set", "model.tolerations[0].effect=Sometimes"], "/model/tolerations/0/effect"),
    (["--set", "model.runtimeClassName=Not_A_Name"], "/model/runtimeClassName"),
    # exactly one model source: uri and pvc together, neither, or an incomplete/unsafe pvc
    (["--set", "model.pvc.claimName=models", "--set", "model.pvc.path=m.bin"], "/model/uri"),
    (["--set", "model.uri="], "/model/uri"),
    (["--set", "model.uri=", "--set", "model.pvc.claimName=models"], "/model/pvc/path"),
    (["--set", "model.uri=", "--set", "model.pvc.claimName=models", "--set", "model.pvc.path=../etc/m.bin"],
     "/model/pvc/path"),
    (["--set", "model.uri=", "--set", "model.pvc.claimName=Models", "--set", "model.pvc.path=m.bin"],
     "/model/pvc/claimName"),
]


@pytest.mark.parametrize("args,where", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(args: list[str], where: str) -> None:
    r = helm("template", "wo", str(CHART), *args, check=False)
    assert r.returncode != 0, r.stdout[:500]
    assert where in r.stderr, r.stderr


def test_schema_covers_every_value() -> None:
    """values.schema.json forbids unknown keys everywhere, so every key of values.yaml must be declared."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(v: Any, s: dict[str, Any], path: str) -> None:
        if isinstance(v, dict) and s.get("type") == "object" and "properties" in s:
            assert s.get("additionalProperties") is False, path
            for k, sub in v.items():
                assert k in s["properties"], f"{path}/{k} not in values.schema.json"
                walk(sub, s["properties"][k], f"{path}/{k}")

    walk(values, schema, "")


def test_chart_crds_identical_to_generated() -> None:
    gen = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert gen == chart and gen, (gen, chart)
    for name in gen:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), \
            f"charts/whisper-operator/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/whisper-operator/crds/"


def _roles(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {d["metadata"]["name"].rsplit("-", 1)[1]: d["rules"] for d in docs if d["kind"] == "Role"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_least_privilege(variant: str) -> None:
    docs = render(*VARIANTS[variant])
    roles = _roles(docs)
    assert set(roles) == {"operator", "facade", "worker"}
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for who, rules in roles.items():
        for rule in rules:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (who, rule)
            assert "secrets" not in rule["resources"], (who, rule)
    # the chart's operator and worker Roles are the operator engineer's config/rbac Roles
    for who, path in (("operator", "operator.yaml"), ("worker", "worker.yaml")):
        ref = next(d for d in yaml.safe_load_all((REPO / "config" / "rbac" / path).read_text()) if d and d["kind"] == "Role")
        base = [r for r in roles[who] if "kopfpeerings" not in r["resources"]]
        assert base == ref["rules"], f"chart {who} Role drifted from config/rbac/{path}"
    facade = {(g, r): set(rule["verbs"]) for rule in roles["facade"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert facade[("whisperop.io", "transcriptionjobs")] == {"get", "list", "watch", "create", "patch"}
    assert facade[("whisperop.io", "whispermodels")] == {"get", "list", "watch", "patch"}
    # every pod runs under its own component's account; only the worker's mounts by default
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for d in docs:
        if d["kind"] == "Deployment":
            comp = d["metadata"]["labels"]["app.kubernetes.io/component"]
            assert d["spec"]["template"]["spec"]["serviceAccountName"].endswith(f"-{comp}")
    assert [n for n, sa in sas.items() if sa["automountServiceAccountToken"]] == ["wo-whisper-operator-worker"]


RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_has_restricted_security_context(variant: str) -> None:
    pods = []
    for d in render(*VARIANTS[variant]):
        if d["kind"] == "Deployment":
            pods.append(d["spec"]["template"]["spec"])
        elif d["kind"] == "Pod":
            pods.append(d["spec"])
    assert len(pods) == 3
    for spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            assert c["securityContext"] == RESTRICTED_CONTAINER, c["name"]


def test_template_minimal_operator_only() -> None:
    """Facade and model off: operator + worker RBAC only, no facade account, no helm test pod."""
    docs = render("--set", "facade.enabled=false", "--set", "model.create=false", "--set", "s3.existingSecret=mine")
    kinds = _kinds(docs)
    assert kinds["Deployment"] == ["wo-whisper-operator-operator"]
    assert sorted(kinds["ServiceAccount"]) == ["wo-whisper-operator-operator", "wo-whisper-operator-worker"]
    assert "WhisperModel" not in kinds and "Pod" not in kinds and "Secret" not in kinds
    op = docs[[d["kind"] for d in docs].index("Deployment")]
    assert op["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "mine"}}]
