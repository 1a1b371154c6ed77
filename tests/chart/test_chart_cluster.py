"""The chart on the real control plane (whisperop.testenv): Pod Security
"restricted" admission of everything it renders, and `helm install` followed by
a whole job run by the operator and a worker that use the tokens of the
chart's ServiceAccounts (so the chart's RBAC is what is exercised)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ALL_FEATURES, CHART, harness, helm, render

pytestmark = pytest.mark.cluster
RESTRICTED = "pod-security.kubernetes.io/enforce"


def _kubectl(k8s_env: Any, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([harness.kubectl(k8s_env), *args], input=stdin, capture_output=True, text=True, timeout=90,
                       env=dict(os.environ, KUBECONFIG=str(k8s_env.kubeconfig)))
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}\n{r.stdout}\n{r.stderr}"
    return r


def _restrict(k8s_env: Any, ns: str) -> None:
    _kubectl(k8s_env, "label", "--overwrite", "namespace", ns, f"{RESTRICTED}=restricted",
             "pod-security.kubernetes.io/enforce-version=latest", "pod-security.kubernetes.io/warn=restricted")


@pytest.fixture(scope="module")
def chart_crds(k8s_env: Any) -> None:
    _kubectl(k8s_env, "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    _kubectl(k8s_env, "wait", "--for=condition=Established", "--timeout=30s",
             "crd/transcriptionjobs.whisperop.io", "crd/whispermodels.whisperop.io")


def _as_pod(name: str, template: dict[str, Any], ns: str) -> dict[str, Any]:
    spec = copy.deepcopy(template["spec"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def test_rendered_manifests_pass_pod_security_restricted(k8s_env: Any, k8s_namespace: str, chart_crds: None) -> None:
    ns = k8s_namespace
    _restrict(k8s_env, ns)
    # the namespace really enforces: a plain pod is rejected (so this test can fail)
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    r = _kubectl(k8s_env, "apply", "-f", "-", stdin=yaml.safe_dump(bare), check=False)
    assert r.returncode != 0 and "violates PodSecurity" in r.stderr, r.stderr

    pods: list[dict[str, Any]] = []
    for release, extra in (("wo", []), ("wa", ["-f", str(ALL_FEATURES), "--set", "model.name=big"])):
        docs = render(*extra, namespace=ns, release=release)
        r = _kubectl(k8s_env, "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(docs))
        assert "PodSecurity" not in r.stderr, r.stderr  # Deployments are only warned about: check the warning too
        for d in docs:
            if d["kind"] == "Deployment":
                pods.append(_as_pod(f"{d['metadata']['name']}-probe", d["spec"]["template"], ns))
            if d["kind"] == "WhisperModel":
                # the inference pod the operator will create for the chart's WhisperModel
                from whisperop.operator.models import render_deployment

                dep = render_deployment({"metadata": {"name": d["metadata"]["name"], "namespace": ns, "uid": "x"},
                                         "spec": d["spec"]})
                pods.append(_as_pod(f"inference-{d['metadata']['name']}-probe", dep["spec"]["template"], ns))
    # the all-features model names runtimeClassName "nvidia" and a PVC source: the API server's
    # RuntimeClass admission rejects pods naming a RuntimeClass that does not exist, so create it
    # (a missing claim only keeps a pod Pending; admission does not look at it)
    _kubectl(k8s_env, "apply", "-f", "-", stdin=yaml.safe_dump(
        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"}, "handler": "nvidia"}))
    big = next(p for p in pods if p["metadata"]["name"] == "inference-big-probe")
    assert big["spec"]["runtimeClassName"] == "nvidia"
    assert any((v.get("persistentVolumeClaim") or {}).get("readOnly") for v in big["spec"]["volumes"])
    # Pods are enforced (not only warned): create each pod template as a bare Pod
    for pod in pods:
        r = _kubectl(k8s_env, "apply", "-f", "-", stdin=yaml.safe_dump(pod), check=False)
        assert r.returncode == 0, f"{pod['metadata']['name']}: {r.stderr}"
    # and the chart's `helm test` Pod is created directly
    got = _kubectl(k8s_env, "get", "-n", ns, "pods", "-o", "name").stdout
    assert "pod/wo-whisper-operator-test-first-job" in got and "pod/wa-whisper-operator-test-first-job" in got


def _token_kubeconfig(k8s_env: Any, ns: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (TokenRequest API)."""
    from kubernetes import client

    tr = client.CoreV1Api(k8s_env.client).create_namespaced_service_account_token(
        sa, ns, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)))
    admin = yaml.safe_load(Path(k8s_env.kubeconfig).read_text())
    cfg = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
           "users": [{"name": sa, "user": {"token": tr.status.token}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa, "namespace": ns}}],
           "current-context": "c"}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start_facade(cluster: Any, kubeconfig: Path, tokens_dir: Path) -> str:
    import socket
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"KUBECONFIG": str(kubeconfig), "HOST": "127.0.0.1", "PORT": str(port), "WHISPEROP_NAMESPACE": cluster.ns,
           "WHISPEROP_MODEL_NAME": "default", "QUEUE_WHILE_LOADING": "true",
           "WHISPEROP_AUTH_TOKENS_FILE": str(tokens_dir)}
    proc = cluster._spawn([sys.executable, "-m", "whisperop", "serve", "--cluster"], "facade", env)
    cluster.workers["facade"] = proc  # stopped with the others
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, "facade exited"
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    harness.wait_for(healthy, 60, "facade healthy")
    return url


def test_helm_install_then_job_runs_with_chart_rbac(k8s_env: Any, s3_env: Any, k8s_namespace: str, chart_crds: None,
                                                   tiny_model: Path, jfk_s3: str, jfk_wav: Path,
                                                   tmp_path: Path) -> None:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    ns = k8s_namespace
    _restrict(k8s_env, ns)  # the inference pods the operator creates must pass "restricted" too
    values = {
        "s3": {"endpoint": s3_env.endpoint, "bucket": s3_env.bucket, "region": s3_env.region,
               "accessKey": s3_env.access_key, "secretKey": s3_env.secret_key},
        "model": {"uri": str(tiny_model), "gpus": 0, "idleTimeoutSeconds": 60, "tolerations": [],
                  "resources": {"requests": {}, "limits": {}}},
        "facade": {"replicas": 1, "auth": {"enabled": True, "tokens": ["chart-test-token-0123456789"]}},
    }
    vf = tmp_path / "values.yaml"
    vf.write_text(yaml.safe_dump(values))
    out = helm("install", "wo", str(CHART), "-n", ns, "-f", str(vf), env={"KUBECONFIG": str(k8s_env.kubeconfig)}).stdout
    assert "STATUS: deployed" in out and "kind: TranscriptionJob" in out and f"kubectl -n {ns} get tj,wm -w" in out
    # an upgrade with the same chart is a no-op that still succeeds (CRDs in crds/ are left alone)
    out = helm("upgrade", "wo", str(CHART), "-n", ns, "-f", str(vf), env={"KUBECONFIG": str(k8s_env.kubeconfig)}).stdout
    assert "REVISION: 2" in out and "STATUS: deployed" in out

    cluster = harness.Cluster(k8s_env, s3_env, ns, tmp_path)
    try:
        names = {c: f"wo-whisper-operator-{c}" for c in ("operator", "facade", "worker")}
        cfgs = {c: _token_kubeconfig(k8s_env, ns, n, tmp_path / f"{c}.kubeconfig") for c, n in names.items()}
        # the operator as a local process with the chart's operator account and the chart's S3 Secret name
        cluster.start_operator(extra={"KUBECONFIG": str(cfgs["operator"]), "WHISPEROP_S3_SECRET": "wo-whisper-operator-s3"})
        # the documented first job (docs/examples), submitted by the user (admin)
        cluster.create_job(jfk_s3, name="first-job", outputFormats=["json", "srt"])
        pod = harness.wait_for(lambda: (cluster.running_pods() or [None])[0], 60, "inference pod")
        spec = cluster.pods()[0].spec
        assert spec.service_account_name == names["worker"]
        assert any(r.limits is None or "nvidia.com/gpu" not in (r.limits or {}) for r in [spec.containers[0].resources])
        cluster.start_worker(pod, extra={"KUBECONFIG": str(cfgs["worker"])})
        st = cluster.wait_phase("first-job", ("Done", "Failed"), timeout=180)["status"]
        assert st["phase"] == "Done", st
        assert st["result"]["json"].startswith("s3://") and st["result"]["srt"].startswith("s3://")
        harness.wait_for(lambda: cluster.model_status().get("state") == "ready", 30, "model ready")

        # the facade as a local process with the chart's facade account: a job submitted over REST runs too
        # with the auth token Secret the chart created, as the pod would mount it (one file per key)
        import base64

        import httpx

        sec = client.CoreV1Api(k8s_env.client).read_namespaced_secret("wo-whisper-operator-auth", ns)
        tokens_dir = tmp_path / "auth"
        tokens_dir.mkdir()
        for k, v in sec.data.items():
            (tokens_dir / k).write_bytes(base64.b64decode(v))
        facade = _start_facade(cluster, cfgs["facade"], tokens_dir)
        assert httpx.get(facade + "/jobs/nope", timeout=10).status_code == 401
        auth = {"Authorization": "Bearer chart-test-token-0123456789"}
        with open(jfk_wav, "rb") as f:
            r = httpx.post(facade + "/jobs", files={"audio": ("jfk.wav", f, "audio/wav")}, headers=auth, timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        done = harness.wait_for(lambda: (lambda j: j if j["status"] in ("done", "failed") else None)(
            httpx.get(f"{facade}/jobs/{job_id}", headers=auth, timeout=10).json()), 120, "REST job done")
        assert done["status"] == "done", done
        # the chart's `helm test` script, run against the same facade (the test Pod's command, run directly)
        cm = next(d for d in render(namespace=ns) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-test"))
        script = tmp_path / "first_job.py"
        script.write_text(cm["data"]["first_job.py"])
        r2 = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=200,
                            env=dict(os.environ, FACADE_URL=facade, TIMEOUT="150", TOKEN_FILE=str(tokens_dir)))
        assert r2.returncode == 0 and '"status": "done"' in r2.stdout, r2.stdout + r2.stderr

        # forbidden with the chart's accounts: 403 from the real authorizer
        apis = {c: config.new_client_from_config(config_file=str(p)) for c, p in cfgs.items()}
        with pytest.raises(ApiException) as err:
            client.CustomObjectsApi(apis["worker"]).delete_namespaced_custom_object(
                "whisperop.io", "v1alpha1", ns, "transcriptionjobs", "first-job")
        assert err.value.status == 403
        with pytest.raises(ApiException) as err:
            client.CustomObjectsApi(apis["facade"]).delete_namespaced_custom_object(
                "whisperop.io", "v1alpha1", ns, "transcriptionjobs", "first-job")
        assert err.value.status == 403
        for c, api in apis.items():
            with pytest.raises(ApiException) as err:
                client.CoreV1Api(api).list_namespaced_secret(ns)
            assert err.value.status == 403, c
            with pytest.raises(ApiException) as err:
                client.CoreV1Api(api).read_namespaced_secret("wo-whisper-operator-s3", ns)
            assert err.value.status == 403, c
        # the operator account reads a named claim (condition ModelSourceAvailable) but may not list claims
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(apis["operator"]).read_namespaced_persistent_volume_claim("no-such-claim", ns)
        assert err.value.status == 404, "get on persistentvolumeclaims must be allowed (404, not 403)"
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(apis["operator"]).list_namespaced_persistent_volume_claim(ns)
        assert err.value.status == 403
        # and what the facade account may do: read jobs and record model demand
        client.CustomObjectsApi(apis["facade"]).get_namespaced_custom_object(
            "whisperop.io", "v1alpha1", ns, "transcriptionjobs", "first-job")
        client.CustomObjectsApi(apis["facade"]).patch_namespaced_custom_object(
            "whisperop.io", "v1alpha1", ns, "whispermodels", "default", {"metadata": {"annotations": {"x": "y"}}})
    except BaseException:
        print(cluster.log_tail())
        raise
    finally:
        cluster.stop_all()
        helm("uninstall", "wo", "-n", ns, env={"KUBECONFIG": str(k8s_env.kubeconfig)}, check=False)
