"""The real node itself: what a kubeadm node gives and kwok cannot.

Each check is something the chart and the fault tests rely on: the node
registers Ready through the Node authorizer, the ``kubernetes`` Service has
the advertised endpoint (pods reach the API server), a pod admitted by Pod
Security ``restricted`` really runs, ``kubectl logs``/``exec`` reach the
kubelet with the API server's client certificate, and Services route (kube-proxy)
and resolve (CoreDNS) — from this machine and from inside a pod.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.kube_e2e import MINIO_NS, Kube, s3_client, wait_for  # noqa: E402
from whisperop.testenv.node import NODE_IP, NODE_NAME, PAUSE_IMAGE  # noqa: E402

RESTRICTED = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_node_is_ready_and_the_api_server_is_reachable_from_pods(kube: Kube) -> None:
    node = kube.get("node", NODE_NAME)
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True", conds
    addrs = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addrs["InternalIP"] == NODE_IP
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    slices = kube.get("-n", "default", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes")
    ips = {a for s in slices["items"] for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert ips == {NODE_IP}


def test_restricted_pod_runs_and_kubectl_logs_exec_reach_the_kubelet(kube: Kube) -> None:
    ns = "e2e-node"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sandbox", "namespace": ns},
        "spec": {"securityContext": RESTRICTED, "containers": [{
            "name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never", "securityContext": CONTAINER_SC}]},
    }
    kube.apply(pod)
    wait_for("the pod Running", lambda: (kube.get("-n", ns, "pod", "sandbox") or {}).get("status", {})
             .get("phase") == "Running", 120)
    assert kube.kubectl("-n", ns, "logs", "sandbox").returncode == 0
    out = kube.kubectl("-n", ns, "exec", "sandbox", "--", "/pause", "-v").stdout
    assert "pause.c" in out
    # Pod Security "restricted" is enforced on this node's namespaces: a root pod is refused
    bad = {**pod, "metadata": {"name": "root", "namespace": ns}, "spec": {"containers": [
        {"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}]}}
    r = kube.kubectl("apply", "-f", "-", stdin=__import__("json").dumps(bad), check=False)
    assert r.returncode != 0 and "violates PodSecurity" in r.stderr, r.stderr
    kube.kubectl("delete", "namespace", ns, "--wait=false")


def _dns_a(name: str, server: str) -> list[str]:
    """One DNS A query over UDP (RFC 1035), answers as dotted quads."""
    import random
    import socket
    import struct

    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(q, (server, 53))
        data = s.recv(4096)
    rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
    assert rid == qid and flags & 0x000F == 0, f"rcode {flags & 0xF}"
    pos = len(q)
    out = []
    for _ in range(an):
        pos += 2 if data[pos] & 0xC0 == 0xC0 else data.index(b"\0", pos) + 1 - pos
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1:
            out.append(".".join(str(b) for b in data[pos:pos + 4]))
        pos += rdlen
    return out


def test_services_route_and_resolve(kube: Kube, minio: dict[str, str]) -> None:
    # from this machine through the Service's ClusterIP (kube-proxy's iptables rules)
    s3 = s3_client(minio)
    assert "Buckets" in s3.list_buckets()
    # cluster DNS (CoreDNS on the node address, the kubelet's clusterDNS) knows the Service
    svc = kube.get("-n", MINIO_NS, "service", "minio")
    assert _dns_a(f"minio.{MINIO_NS}.svc.cluster.local", NODE_IP) == [svc["spec"]["clusterIP"]]
