"""kubectl and helm from the test environment work against it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from whisperop.testenv import K8sEnv, binaries
from whisperop.testenv.pytest_plugin import skip_or_fail_missing
from whisperop.testenv.versions import HELM_VERSION

pytestmark = pytest.mark.cluster


def _tool(k8s_env: K8sEnv, name: str) -> str:
    """The built tool; on an external cluster, whatever is on PATH will do."""
    built = binaries.binary(name)
    if built.exists() or not k8s_env.external:
        skip_or_fail_missing((name,))
        return str(built)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not available")
    return found


def _run(k8s_env: K8sEnv, *argv: str) -> str:
    env = dict(os.environ, KUBECONFIG=str(k8s_env.kubeconfig), HELM_CACHE_HOME="/tmp/whisperop-helm-cache",
               HELM_CONFIG_HOME="/tmp/whisperop-helm-config", HELM_DATA_HOME="/tmp/whisperop-helm-data")
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, f"{argv} failed: {r.stderr}"
    return r.stdout


def test_kubectl_sees_the_fake_nodes(k8s_env: K8sEnv) -> None:
    out = _run(k8s_env, _tool(k8s_env, "kubectl"), "get", "nodes", "-o", "name")
    if not k8s_env.external:
        assert set(out.split()) >= {f"node/{k8s_env.cpu_node}", f"node/{k8s_env.gpu_node}"}
    else:
        assert out.strip()


def test_helm_talks_to_the_cluster(k8s_env: K8sEnv) -> None:
    helm = _tool(k8s_env, "helm")
    version = _run(k8s_env, helm, "version", "--short")
    if helm == str(binaries.binary("helm")):
        assert version.startswith(HELM_VERSION)
    _run(k8s_env, helm, "list", "--all-namespaces")
