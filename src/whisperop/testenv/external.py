"""Use an existing cluster and S3 server instead of starting anything.

Why: the same tests should run against kind, a cloud cluster or an
environment started earlier with ``python -m whisperop.testenv up``. Being
pointed at a real cluster must be deliberate, so a stray ``KUBECONFIG`` alone
never does it: external mode is on when ``WHISPEROP_TESTENV=external``, or when
both ``KUBECONFIG`` and ``WHISPEROP_S3_ENDPOINT`` are set (and
``WHISPEROP_TESTENV`` is not ``local``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .environment import K8sEnv, S3Env
from .s3server import DEFAULT_BUCKET, REGION, create_bucket


def enabled() -> bool:
    """True when the fixtures must use external services."""
    mode = os.environ.get("WHISPEROP_TESTENV", "").lower()
    if mode in ("external", "local"):
        return mode == "external"
    return bool(os.environ.get("KUBECONFIG")) and bool(os.environ.get("WHISPEROP_S3_ENDPOINT"))


def kubernetes() -> K8sEnv:
    """Describe the cluster of ``$KUBECONFIG`` (or ~/.kube/config) and count its GPUs."""
    path = Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config")
    if not path.is_file():
        raise RuntimeError(f"external cluster: kubeconfig {path} does not exist")
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(path))
    gpus, gpu_node, cpu_node = 0, None, None
    for node in client.CoreV1Api(api_client).list_node().items:
        n = int((node.status.allocatable or {}).get("nvidia.com/gpu", "0"))
        gpus += n
        if n and gpu_node is None:
            gpu_node = node.metadata.name
        if not n and cpu_node is None:
            cpu_node = node.metadata.name
    env = K8sEnv(
        kubeconfig=path, api_url=api_client.configuration.host, external=True,
        gpu_count=gpus, gpu_node=gpu_node, cpu_node=cpu_node,
    )
    env._client = api_client
    return env


def s3() -> S3Env:
    """Describe the S3 endpoint of ``WHISPEROP_S3_*`` and make sure the bucket exists."""
    endpoint = os.environ.get("WHISPEROP_S3_ENDPOINT")
    access = os.environ.get("WHISPEROP_S3_ACCESS_KEY") or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("WHISPEROP_S3_SECRET_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (endpoint and access and secret):
        raise RuntimeError(
            "external S3: set WHISPEROP_S3_ENDPOINT, WHISPEROP_S3_ACCESS_KEY and WHISPEROP_S3_SECRET_KEY"
        )
    bucket = os.environ.get("WHISPEROP_S3_BUCKET", DEFAULT_BUCKET)
    region = os.environ.get("WHISPEROP_S3_REGION", REGION)
    create_bucket(endpoint, access, secret, bucket, region)
    return S3Env(endpoint, access, secret, bucket, region, external=True)
