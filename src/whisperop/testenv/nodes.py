"""Fake nodes played by kwok: one CPU node and one GPU node.

Why: there is no kubelet or container runtime here, yet the operator's
scale-to-zero and `waiting_for_gpu` logic depend on real scheduling: pods must
become Running/Ready on a node that has `nvidia.com/gpu`, and one GPU pod too
many must stay Pending with reason Unschedulable. kwok drives the status of
nodes and pods it manages (marked with an annotation) through the real API
server, so the scheduler and controllers behave exactly as in a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import binaries
from .process import Component
from .rest import Rest

MANAGED_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
CPU_NODE = "kwok-cpu-0"
GPU_NODE = "kwok-gpu-0"


def start_kwok(kubeconfig: Path, log_dir: Path, detach: bool) -> Component:
    """Start the kwok controller for nodes carrying the managed annotation."""
    c = Component("kwok", [
        str(binaries.binary("kwok")),
        f"--config={binaries.kwok_stages_file()}",
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={MANAGED_ANNOTATION}=fake",
        "--node-lease-duration-seconds=40",
        "--cidr=10.244.0.1/16",
        "--node-ip=127.0.0.1",
    ], log_dir)
    c.start(detach)
    return c


def node_manifest(name: str, cpu: str, memory: str, gpus: int) -> dict[str, Any]:
    """A Node object whose capacity kwok keeps; labels mirror a GPU cluster's."""
    resources: dict[str, str] = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    if gpus:
        resources[GPU_RESOURCE] = str(gpus)
        labels["nvidia.com/gpu.present"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {MANAGED_ANNOTATION: "fake"}},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def default_nodes(gpus: int = 1) -> list[dict[str, Any]]:
    """One CPU node and, when ``gpus`` > 0, one GPU node with that many GPUs."""
    nodes = [node_manifest(CPU_NODE, "8", "32Gi", 0)]
    if gpus > 0:
        nodes.append(node_manifest(GPU_NODE, "8", "64Gi", gpus))
    return nodes


def create_nodes(rest: Rest, nodes: list[dict[str, Any]]) -> None:
    """Create the Node objects (existing ones are left as they are)."""
    for node in nodes:
        status, body = rest.request("POST", "/api/v1/nodes", node)
        if status not in (201, 409):
            raise RuntimeError(f"creating node {node['metadata']['name']}: HTTP {status}: {body}")


def _schedulable(node: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    taints = node.get("spec", {}).get("taints", [])
    # The not-ready taint is removed by the node lifecycle controller once kwok reports Ready.
    return conds.get("Ready") == "True" and not any(t["key"].startswith("node.kubernetes.io/") for t in taints)


def wait_nodes_ready(rest: Rest, names: list[str], kwok: Component, timeout: float = 90.0) -> None:
    """Wait until every node is Ready and carries no node.kubernetes.io/* taint."""
    pending = set(names)

    def ready() -> bool:
        for name in list(pending):
            status, node = rest.get(f"/api/v1/nodes/{name}")
            if status == 200 and _schedulable(node):
                pending.discard(name)
        return not pending

    kwok.wait_until(ready, timeout, f"making nodes Ready and schedulable ({', '.join(sorted(pending))})")
