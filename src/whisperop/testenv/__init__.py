"""A real Kubernetes control plane and S3 server for tests, on loopback.

Why: the operator's correctness lives in Kubernetes and S3 semantics (status
subresources, resourceVersion conflicts, RBAC, unschedulable GPU pods,
multipart uploads); mocks would hide exactly those bugs. This package starts
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok fake nodes
and MinIO from binaries built by ``scripts/build-testenv.sh``, or points at an
external cluster. See docs/testing.md.

Entry points: ``python -m whisperop.testenv build|up|down|env|status`` and the
pytest plugin ``whisperop.testenv.pytest_plugin`` (fixtures ``k8s_env``,
``s3_env``, ``k8s_namespace``).
"""

from __future__ import annotations

from .environment import Environment, K8sEnv, S3Env

__all__ = ["Environment", "K8sEnv", "S3Env"]
