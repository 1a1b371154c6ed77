"""Deployments schedule onto the fake GPU node, and one GPU pod too many stays
Pending with PodScheduled=False/Unschedulable: the signal behind `waiting_for_gpu`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from kubernetes import client

from whisperop.testenv import K8sEnv

pytestmark = pytest.mark.cluster

T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def _deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    container = client.V1Container(
        name="worker",
        image="whisperop/worker:smoke",  # never pulled: kwok plays the kubelet
        resources=client.V1ResourceRequirements(
            requests={"cpu": "100m", "memory": "128Mi", "nvidia.com/gpu": "1"},
            limits={"nvidia.com/gpu": "1"},
        ),
    )
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=0),
            ),
        ),
    )


def _ready(pod: client.V1Pod) -> bool:
    conds = {c.type: c.status for c in (pod.status.conditions or [])}
    return pod.status.phase == "Running" and conds.get("Ready") == "True"


def _unschedulable(pod: client.V1Pod) -> bool:
    return pod.status.phase == "Pending" and any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in (pod.status.conditions or [])
    )


def test_gpu_deployment_runs_then_pends_then_scales_to_zero(k8s_env: K8sEnv, k8s_namespace: str) -> None:
    if k8s_env.gpu_count < 1:
        pytest.skip("cluster advertises no nvidia.com/gpu")
    apps = client.AppsV1Api(k8s_env.client)
    core = client.CoreV1Api(k8s_env.client)
    ns, name = k8s_namespace, "gpu-worker"
    selector = f"app={name}"

    def pods() -> list[client.V1Pod]:
        return [p for p in core.list_namespaced_pod(ns, label_selector=selector).items if not p.metadata.deletion_timestamp]

    # 1 replica: Running and Ready on the GPU node.
    apps.create_namespaced_deployment(ns, _deployment(name, 1))
    running = wait_for(lambda: [p for p in pods() if _ready(p)], 60, "a Ready GPU pod")
    assert len(running) == 1
    if k8s_env.gpu_node:
        node = core.read_node(running[0].spec.node_name)
        assert int(node.status.allocatable.get("nvidia.com/gpu", "0")) >= 1
        if not k8s_env.external:
            assert running[0].spec.node_name == k8s_env.gpu_node

    # One replica more than there are GPUs: the extra pod is Unschedulable.
    want = k8s_env.gpu_count + 1
    apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": want}})
    pending = wait_for(lambda: [p for p in pods() if _unschedulable(p)], 60, "an Unschedulable pod")
    assert len(pending) == 1
    assert pending[0].spec.node_name is None
    cond = next(c for c in pending[0].status.conditions if c.type == "PodScheduled")
    assert "nvidia.com/gpu" in (cond.message or "")
    assert len([p for p in pods() if _ready(p)]) == k8s_env.gpu_count

    # Scale to zero: every pod goes away.
    apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": 0}})
    wait_for(lambda: not core.list_namespaced_pod(ns, label_selector=selector).items or None, 60, "pods gone")
    assert core.list_namespaced_pod(ns, label_selector=selector).items == []
