"""The chart on the real control plane (whisperop.testenv): Pod Security
"restricted" admission of everything it renders, and `helm install` followed by
a whole job run by the operator and a worker that use the tokens of the
chart's ServiceAccounts (so the chart's RBAC is what is exercised)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from whisperop.core import crds

from .conftest import ALL_FEATURES, CHART, CPU_VALUES, harness, helm, helm_bin, render

pytestmark = pytest.mark.cluster
RESTRICTED = "pod-security.kubernetes.io/enforce"
KOPF = "kopf.zalando.org/KopfFinalizerMarker"


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
    no_ids = [a for k in ("runAsUser", "runAsGroup", "fsGroup") for a in ("--set", f"podSecurityContext.{k}=null")]
    for release, extra in (("wo", []), ("wa", ["-f", str(ALL_FEATURES), "--set", "model.name=big"]),
                           # the CPU node's values, and ids left to the platform (OpenShift)
                           ("wc", ["-f", str(CPU_VALUES), "--set", "model.name=cpu", *no_ids])):
        docs = render(*extra, namespace=ns, release=release)
        r = _kubectl(k8s_env, "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(docs))
        assert "PodSecurity" not in r.stderr, r.stderr  # Deployments are only warned about: check the warning too
        for d in docs:
            if d["kind"] in ("Deployment", "Job"):  # Job: the uninstall hook
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
    assert all(f"pod/{r}-whisper-operator-test-first-job" in got for r in ("wo", "wa", "wc")), got
    probe = next(p for p in pods if p["metadata"]["name"] == "wc-whisper-operator-cleanup-probe")
    assert "runAsUser" not in probe["spec"]["securityContext"]


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
        cm = next(d for d in render(namespace=ns) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-test-script"))
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


def _run_hook_pod(k8s_env: Any, ns: str, cluster: Any, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Play the kubelet for the pre-delete hook's pod: run its container's command (the operator image's
    `whisperop`) as a local process with the token of the hook's ServiceAccount, then report the pod
    Succeeded so the Job controller completes the Job Helm waits for."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_env.client)
    sel = "app.kubernetes.io/instance=wo,app.kubernetes.io/component=cleanup"
    pod = harness.wait_for(lambda: (core.list_namespaced_pod(ns, label_selector=sel).items or [None])[0], 60,
                           "the pre-delete hook's pod")
    assert pod.status.phase == "Pending", pod.status  # no node matches: kwok would fake-complete it unrun
    c = pod.spec.containers[0]
    assert c.command[:3] == ["whisperop", "operator", "cleanup"] and pod.spec.service_account_name == "wo-whisper-operator-cleanup"
    kc = _token_kubeconfig(k8s_env, ns, pod.spec.service_account_name, tmp_path / "cleanup.kubeconfig")
    env = {**cluster.env, "KUBECONFIG": str(kc), **{e.name: e.value for e in c.env or [] if e.value is not None}}
    r = subprocess.run([sys.executable, "-m", "whisperop", *c.command[1:]], env=env, capture_output=True, text=True,
                       timeout=120)
    core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {"phase": "Succeeded" if r.returncode == 0
                                                                        else "Failed"}})
    return r


def test_helm_uninstall_without_operator_leaves_nothing(k8s_env: Any, s3_env: Any, k8s_namespace: str, chart_crds: None,
                                                        tiny_model: Path, jfk_s3: str, tmp_path: Path) -> None:
    """The issue's hang: the operator is gone when `helm uninstall` runs, the job keeps whisperop.io/cleanup,
    the chart's WhisperModel keeps kopf's finalizer: `--wait` ended in "context deadline exceeded" and the
    namespace stayed Terminating. With the pre-delete hook the uninstall ends, nothing of ours is left, and
    the namespace can be deleted."""
    from kubernetes import client

    ns = k8s_namespace
    _restrict(k8s_env, ns)  # the hook's pod passes "restricted" too
    kube_env = {"KUBECONFIG": str(k8s_env.kubeconfig)}
    values = {
        "s3": {"endpoint": s3_env.endpoint, "bucket": s3_env.bucket, "region": s3_env.region,
               "accessKey": s3_env.access_key, "secretKey": s3_env.secret_key},
        "model": {"uri": str(tiny_model), "gpus": 0, "tolerations": [], "resources": {"requests": {}, "limits": {}}},
        "facade": {"replicas": 1},
        # the hook's pod follows the operator's nodeSelector: keep it off kwok's nodes (see _run_hook_pod)
        "operator": {"nodeSelector": {"whisperop.io/test": "no-such-node"}},
        "cleanup": {"timeoutSeconds": 3},
    }
    vf = tmp_path / "values.yaml"
    vf.write_text(yaml.safe_dump(values))
    helm("install", "wo", str(CHART), "-n", ns, "-f", str(vf), env=kube_env)
    cluster = harness.Cluster(k8s_env, s3_env, ns, tmp_path)
    core = client.CoreV1Api(k8s_env.client)
    try:
        cfg = _token_kubeconfig(k8s_env, ns, "wo-whisper-operator-operator", tmp_path / "operator.kubeconfig")
        cluster.start_operator(extra={"KUBECONFIG": str(cfg), "WHISPEROP_S3_SECRET": "wo-whisper-operator-s3"})
        cluster.create_job(jfk_s3, name="left-behind")
        harness.wait_for(lambda: crds.FINALIZER in (cluster.jobs.get("left-behind")["metadata"].get("finalizers") or []),
                         60, "the job's clean-up finalizer")
        harness.wait_for(lambda: KOPF in (cluster.models.get("default")["metadata"].get("finalizers") or []), 60,
                         "kopf's finalizer on the chart's model")
        # a finished `helm test` pod, kept for --logs (created as Helm does: the rendered hook Pod)
        test_pod = next(d for d in render(namespace=ns) if d["kind"] == "Pod")
        _kubectl(k8s_env, "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(test_pod))
        cluster.stop_all()  # the operator is gone

        t0 = time.monotonic()
        uninstall = subprocess.Popen([helm_bin(), "uninstall", "wo", "-n", ns, "--wait", "--timeout", "3m"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **kube_env})
        try:
            hook = _run_hook_pod(k8s_env, ns, cluster, tmp_path)
            assert hook.returncode == 0, hook.stdout + hook.stderr
            out, err = uninstall.communicate(timeout=200)
        finally:
            if uninstall.poll() is None:
                uninstall.kill()
        assert uninstall.returncode == 0, out + err
        assert 'release "wo" uninstalled' in out
        elapsed = time.monotonic() - t0
        # nothing of ours is left: no CR, no finalizer, no hook objects, no kept test pod
        assert cluster.jobs.list()["items"] == [] and cluster.models.list()["items"] == []
        assert "finalizer removed" in hook.stderr  # the operator was gone: released, with a warning
        pods = [p.metadata.name for p in core.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp]
        assert test_pod["metadata"]["name"] not in pods
        # the hook's own objects are deleted once it succeeded (the deletion may still be in flight)
        harness.wait_for(lambda: client.BatchV1Api(k8s_env.client).list_namespaced_job(ns).items == [], 60,
                         "hook Job deleted")
        harness.wait_for(lambda: [s.metadata.name for s in core.list_namespaced_service_account(ns).items] == ["default"],
                         60, "only the namespace's default ServiceAccount left")
        # and the namespace is deletable: it goes away instead of staying Terminating
        core.delete_namespace(ns)

        def gone() -> bool:
            try:
                core.read_namespace(ns)
                return False
            except client.ApiException as exc:
                return exc.status == 404

        harness.wait_for(gone, 120, f"namespace {ns} deleted")
        print(f"helm uninstall --wait with the pre-delete hook: {elapsed:.1f} s")
    except BaseException:
        print(cluster.log_tail())
        raise
    finally:
        cluster.stop_all()
