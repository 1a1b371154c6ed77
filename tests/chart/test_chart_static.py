"""helm lint / template / values.schema.json, and properties of the rendered
manifests that need no cluster (RBAC shape, CRDs identical to crds/)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from .conftest import ALL_FEATURES, CHART, CPU_VALUES, REPO, helm, render

VARIANTS = {"default": [], "all-features": ["-f", str(ALL_FEATURES)], "cpu": ["-f", str(CPU_VALUES)]}


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
    assert sorted(kinds["ServiceAccount"]) == sorted(f"wo-whisper-operator-{c}"
                                                     for c in ("operator", "facade", "worker", "cleanup"))
    assert len(kinds["Role"]) == 4 and len(kinds["RoleBinding"]) == 4 and kinds["Job"] == ["wo-whisper-operator-cleanup"]
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
    assert set(roles) == {"operator", "facade", "worker", "cleanup"}
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
    # the uninstall hook: delete/patch jobs and models, delete the one `helm test` pod by name
    assert roles["cleanup"] == [
        {"apiGroups": ["whisperop.io"], "resources": ["transcriptionjobs", "whispermodels"],
         "verbs": ["get", "list", "delete", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "resourceNames": ["wo-whisper-operator-test-first-job"],
         "verbs": ["delete"]}]
    # every pod runs under its own component's account; only the worker's mounts by default
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            comp = d["metadata"]["labels"]["app.kubernetes.io/component"]
            assert d["spec"]["template"]["spec"]["serviceAccountName"].endswith(f"-{comp}")
    assert [n for n, sa in sas.items() if sa["automountServiceAccountToken"]] == ["wo-whisper-operator-worker"]


RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_has_restricted_security_context(variant: str) -> None:
    pods = []
    for d in render(*VARIANTS[variant]):
        if d["kind"] in ("Deployment", "Job"):
            pods.append(d["spec"]["template"]["spec"])
        elif d["kind"] == "Pod":
            pods.append(d["spec"])
    assert len(pods) == 4  # operator, facade, `helm test` pod, uninstall hook Job
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
    assert sorted(kinds["ServiceAccount"]) == ["wo-whisper-operator-cleanup", "wo-whisper-operator-operator",
                                               "wo-whisper-operator-worker"]
    assert "WhisperModel" not in kinds and "Pod" not in kinds and "Secret" not in kinds
    op = docs[[d["kind"] for d in docs].index("Deployment")]
    assert op["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "mine"}}]


# ── uninstall, `helm test --logs`, CPU requests, image names, arbitrary uid (issue 12) ──


def _hook(d: dict[str, Any]) -> dict[str, str]:
    ann = d["metadata"].get("annotations") or {}
    return {k.removeprefix("helm.sh/"): v for k, v in ann.items() if k.startswith("helm.sh/hook")}


def test_uninstall_runs_a_pre_delete_cleanup_hook() -> None:
    """Without it the jobs' and models' finalizers outlive the operator and `helm uninstall` hangs."""
    docs = render()
    hooks = {(d["kind"], d["metadata"]["name"]): _hook(d) for d in docs if _hook(d).get("hook") == "pre-delete"}
    name = "wo-whisper-operator-cleanup"
    assert set(hooks) == {("ServiceAccount", name), ("Role", name), ("RoleBinding", name), ("Job", name)}
    # the account and its rights exist before the Job runs; all are removed once it succeeded
    for (kind, _), h in hooks.items():
        assert int(h["hook-weight"]) < 0 if kind != "Job" else int(h["hook-weight"]) == 0
        assert h["hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name and pod["automountServiceAccountToken"] is True
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    c = pod["containers"][0]
    assert c["image"] == "ghcr.io/whisper-operator/whisperop-operator:0.1.0"
    assert c["command"] == ["whisperop", "operator", "cleanup", "--namespace", "whisper", "--timeout", "120",
                            "--delete-pod", "wo-whisper-operator-test-first-job"]
    # the Job is not killed before the wait for the operator is over
    assert job["spec"]["activeDeadlineSeconds"] > 120
    # the command line is the CLI's (a renamed flag would fail here, not at uninstall)
    from whisperop.cli import build_parser

    args = build_parser().parse_args(c["command"][1:])
    assert args.namespace == "whisper" and args.timeout == 120.0 and args.delete_pod == ["wo-whisper-operator-test-first-job"]
    # the test pod the hook deletes is the chart's
    assert any(d["kind"] == "Pod" and d["metadata"]["name"] == args.delete_pod[0] for d in docs)
    # opt out
    off = render("--set", "cleanup.enabled=false", "--set", "cleanup.timeoutSeconds=5")
    assert not [d for d in off if _hook(d).get("hook") == "pre-delete"]
    short = next(d for d in render("--set", "cleanup.timeoutSeconds=5") if d["kind"] == "Job")
    assert short["spec"]["template"]["spec"]["containers"][0]["command"][6] == "5"


def test_helm_test_pod_is_kept_for_logs() -> None:
    """`helm test --logs` reads the pod's log after it finished: "hook-succeeded" deleted it first."""
    docs = render()
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert _hook(pod) == {"hook": "test", "hook-delete-policy": "before-hook-creation"}
    # its script is an ordinary release object, so the uninstall deletes it (Helm never deletes hooks)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "wo-whisper-operator-test-script")
    assert _hook(cm) == {}
    assert {"name": "script", "configMap": {"name": cm["metadata"]["name"]}} in pod["spec"]["volumes"]


def _millicpu(q: Any) -> int:
    s = str(q)
    return int(s[:-1]) if s.endswith("m") else int(float(s) * 1000)


def _cpu_requests(docs: list[dict[str, Any]]) -> dict[str, int]:
    """Millicores requested by every long-running pod of a release on one node: the operator,
    the facade replicas and one inference pod (the model's maxReplicas is 1 by default)."""
    from whisperop.operator.models import render_deployment

    out: dict[str, int] = {}
    for d in docs:
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            out[d["metadata"]["name"]] = d["spec"]["replicas"] * _millicpu(c["resources"]["requests"]["cpu"])
        if d["kind"] == "WhisperModel":
            dep = render_deployment({"metadata": {"name": d["metadata"]["name"], "namespace": "whisper", "uid": "u"},
                                     "spec": d["spec"]})
            req = dep["spec"]["template"]["spec"]["containers"][0]["resources"].get("requests", {})
            out["inference"] = _millicpu(req.get("cpu", "0"))
    return out


# a 2-CPU node's allocatable CPU, less what the cluster's own pods request there
# (CoreDNS 100m; kube-proxy and the CNI request nothing)
TWO_CPU_NODE_FREE = 2000 - 100


@pytest.mark.parametrize("variant", ["default", "cpu"])
def test_release_fits_a_two_cpu_node(variant: str) -> None:
    """The default inference request was 2 CPUs: never schedulable next to anything on a 2-CPU node."""
    req = _cpu_requests(render(*VARIANTS[variant]))
    assert set(req) == {"wo-whisper-operator-operator", "wo-whisper-operator-facade", "inference"}
    assert sum(req.values()) <= TWO_CPU_NODE_FREE, req
    assert req["inference"] >= 250, req  # and still a real share of a core


def test_cpu_values_file() -> None:
    """ci/cpu-values.yaml: what a GPU-less node needs, the rest at the chart's defaults."""
    from whisperop.operator.models import render_deployment

    docs = render("-f", str(CPU_VALUES))
    wm = next(d for d in docs if d["kind"] == "WhisperModel")
    assert wm["spec"]["resources"]["gpus"] == 0 and "tolerations" not in wm["spec"]
    assert wm["spec"]["image"] == "ghcr.io/whisper-operator/whisperop-inference:0.1.0-cpu"
    pod = render_deployment({"metadata": {"name": "default", "namespace": "whisper", "uid": "u"},
                             "spec": wm["spec"]})["spec"]["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in res.get("limits", {}) and "nvidia.com/gpu" not in res.get("requests", {})
    assert {"name": "USE_GPU", "value": "false"} in pod["containers"][0]["env"]
    # locally imported images: no registry is ever contacted
    specs = _pod_specs(docs)
    assert len(specs) == 4 and all(s["containers"][0]["imagePullPolicy"] == "Never" for s in specs)
    s3 = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    assert s3["WHISPEROP_S3_ENDPOINT"] == "http://minio:9000"


OP, INF = "ghcr.io/whisper-operator/whisperop-operator", "ghcr.io/whisper-operator/whisperop-inference"
IMAGES = [
    ([], f"{OP}:0.1.0", f"{INF}:0.1.0"),
    (["--set", "image.inference.variant=cpu"], f"{OP}:0.1.0", f"{INF}:0.1.0-cpu"),
    (["--set", "image.inference.variant=cpu", "--set", "image.inference.tag=dev"], f"{OP}:0.1.0", f"{INF}:dev"),
    (["--set", "image.operator.repository=reg.example.org/op", "--set", "image.operator.tag=1.2.3",
      "--set", "image.inference.digest=sha256:" + "2" * 64], "reg.example.org/op:1.2.3", f"{INF}@sha256:" + "2" * 64),
]


@pytest.mark.parametrize("args,operator,inference", IMAGES)
def test_image_names(args: list[str], operator: str, inference: str) -> None:
    """The names scripts/build-images.sh tags: ghcr.io/whisper-operator/whisperop-{operator,inference}:<appVersion>,
    the CPU inference build with the suffix -cpu."""
    docs = render(*args)
    images = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
              for d in docs if d["kind"] in ("Deployment", "Job")}
    images["test"] = next(d for d in docs if d["kind"] == "Pod")["spec"]["containers"][0]["image"]
    assert set(images.values()) == {operator}, images  # facade, hook and test pod run the operator image
    assert next(d for d in docs if d["kind"] == "WhisperModel")["spec"]["image"] == inference


def _pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] if d["kind"] in ("Deployment", "Job") else d["spec"]
            for d in docs if d["kind"] in ("Deployment", "Job", "Pod")]


def test_arbitrary_uid_platforms() -> None:
    """OpenShift assigns the uid: null ids leave them out, runAsNonRoot stays."""
    for spec in _pod_specs(render()):
        sc = spec["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (65532, 65532, 65532)
    args = [a for k in ("runAsUser", "runAsGroup", "fsGroup") for a in ("--set", f"podSecurityContext.{k}=null")]
    specs = _pod_specs(render(*args))
    assert len(specs) == 4
    for spec in specs:
        assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("args,where", [
    (["--set", "image.inference.variant=gpu"], "/image/inference/variant"),
    (["--set", "podSecurityContext.runAsUser=0"], "/podSecurityContext/runAsUser"),
    (["--set", "cleanup.timeoutSeconds=-1"], "/cleanup/timeoutSeconds"),
    (["--set", "cleanup.bogus=1"], "bogus"),
], ids=["variant", "root-uid", "timeout", "unknown"])
def test_schema_rejects_bad_new_values(args: list[str], where: str) -> None:
    r = helm("template", "wo", str(CHART), *args, check=False)
    assert r.returncode != 0, r.stdout[:500]
    assert where in r.stderr, r.stderr
