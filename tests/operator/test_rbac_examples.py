"""The documented manifests work as they are: example resources apply with kubectl,
and the least-privilege Roles are enough to run a job (operator and worker using
their ServiceAccounts' tokens) while denying what they do not need."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO, Cluster, kubectl, wait_for

pytestmark = pytest.mark.cluster


def _kubectl(cluster: Cluster, *args: str) -> str:
    env = dict(os.environ, KUBECONFIG=str(cluster.k8s_env.kubeconfig))
    r = subprocess.run([kubectl(cluster.k8s_env), "-n", cluster.ns, *args], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_rbac_roles_have_no_wildcards_and_no_secret_listing() -> None:
    for path in (REPO / "config" / "rbac").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for rule in (doc or {}).get("rules", []):
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(key, []), (path.name, rule)
                if "secrets" in rule.get("resources", []):
                    assert not {"list", "watch"} & set(rule["verbs"]), (path.name, rule)


def test_examples_apply_as_they_are(cluster: Cluster) -> None:
    out = _kubectl(cluster, "apply", "-f", str(REPO / "docs" / "examples"))
    assert "whispermodel.whisperop.io/default created" in out and "transcriptionjob.whisperop.io/jfk created" in out
    got = _kubectl(cluster, "get", "tj,wm", "-o", "name")
    assert "transcriptionjob.whisperop.io/jfk" in got and "whispermodel.whisperop.io/default" in got


def _token_kubeconfig(cluster: Cluster, sa: str, path: Path) -> Path:
    from kubernetes import client

    core = client.CoreV1Api(cluster.api)
    tr = core.create_namespaced_service_account_token(
        sa, cluster.ns, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)))
    admin = yaml.safe_load(Path(cluster.k8s_env.kubeconfig).read_text())
    clus = admin["clusters"][0]["cluster"]
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": clus}],
        "users": [{"name": sa, "user": {"token": tr.status.token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa, "namespace": cluster.ns}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_least_privilege_roles_run_a_job(cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    _kubectl(cluster, "apply", "-f", str(REPO / "config" / "rbac"))
    op_cfg = _token_kubeconfig(cluster, "whisperop-operator", cluster.tmp / "operator.kubeconfig")
    wk_cfg = _token_kubeconfig(cluster, "whisperop-worker", cluster.tmp / "worker.kubeconfig")
    cluster.start_operator(extra={"KUBECONFIG": str(op_cfg)})
    cluster.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=60, resources={"gpus": 0},
                         serviceAccountName="whisperop-worker")
    cluster.create_job(jfk_s3, name="rbac")
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 40, "inference pod")
    assert cluster.pods()[0].spec.service_account_name == "whisperop-worker"
    cluster.start_worker(pod, extra={"KUBECONFIG": str(wk_cfg)})
    st = cluster.wait_phase("rbac", ("Done", "Failed"), timeout=120)["status"]
    assert st["phase"] == "Done", st
    wait_for(lambda: cluster.model_status().get("state") == "ready", 20, "model ready")

    # what the worker's account may not do
    wk = config.new_client_from_config(config_file=str(wk_cfg))
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(wk).delete_namespaced_custom_object("whisperop.io", "v1alpha1", cluster.ns,
                                                                    "transcriptionjobs", "rbac")
    assert err.value.status == 403
    for api in (wk, config.new_client_from_config(config_file=str(op_cfg))):
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(api).list_namespaced_secret(cluster.ns)
        assert err.value.status == 403
