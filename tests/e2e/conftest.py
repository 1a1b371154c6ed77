"""Fixtures of the real-node end-to-end suite.

Why a suite of its own: everything else runs pods on kwok's fake nodes and
workers as local processes. Here the machine itself is the node (kubelet +
containerd + CNI, :mod:`whisperop.testenv.node`), the images are built from the
Dockerfiles as committed, MinIO runs as a pod, and the chart is installed with
helm exactly as a user does; the tests then drive it only from outside
(port-forward to the facade's Service, kubectl, helm).

The environment is started once for the session (the tests in this folder
run in file order and share one release). When a component is missing the
tests skip with the reason, or fail under ``WHISPEROP_REQUIRE_CLUSTER=1`` (CI).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from whisperop.testenv import binaries
from whisperop.testenv.environment import Environment, K8sEnv

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.kube_e2e import Kube, build_images, deploy_minio, skip_or_fail  # noqa: E402

PLUGIN = "whisperop.testenv.pytest_plugin"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
    config.addinivalue_line("markers", "e2e: real node (kubelet + containerd), images built from the Dockerfiles")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="package")
def node_env() -> Iterator[Environment]:
    """Control plane + the real node (no kwok), for this folder's tests; stopped after the last one
    (the rest of the session must not keep a kubelet, containerd and pods running)."""
    from whisperop.testenv.environment import MissingBinaries
    from whisperop.testenv.node import NodeUnavailable, check_host

    try:
        Environment.check_binaries(tuple(n for n in binaries.KUBERNETES if n != "kwok") + ("kubectl", "helm", "minio"))
        check_host()
    except (MissingBinaries, NodeUnavailable) as e:
        skip_or_fail(str(e))
    env = Environment(node=True)
    t0 = time.monotonic()
    try:
        env.start_kubernetes()
    except Exception:
        sys.stderr.write(env.log_tails(40))
        env.stop(remove=False)
        raise
    env.timings["node_up"] = time.monotonic() - t0
    try:
        yield env
    finally:
        keep = os.environ.get("WHISPEROP_TESTENV_KEEP") == "1"
        env.stop(remove=not keep)


@pytest.fixture(scope="package")
def node_k8s(node_env: Environment) -> K8sEnv:
    assert node_env.k8s is not None
    return node_env.k8s


@pytest.fixture(scope="package")
def kube(node_env: Environment) -> Kube:
    assert node_env.k8s is not None
    return Kube(node_env.k8s.kubeconfig, node_env.log_dir)


@pytest.fixture(scope="package")
def images(node_env: Environment) -> dict[str, str]:
    """Both images built from the Dockerfiles and imported into the node: name -> ref."""
    assert node_env.node is not None
    return build_images(node_env.node)


@pytest.fixture(scope="package")
def minio(node_env: Environment, kube: Kube) -> dict[str, str]:
    """MinIO as a pod behind a Service; endpoints for pods and for this machine."""
    assert node_env.node is not None
    return deploy_minio(node_env.node, kube)
