"""The whole test environment: start, describe, stop.

Why: tests, the CLI and users' shells all need the same answer to "where is
the cluster and the S3 server": either components this module starts on
loopback (local), or an existing cluster named by environment variables
(external, see :mod:`whisperop.testenv.external`). The two descriptions,
:class:`K8sEnv` and :class:`S3Env`, are what fixtures hand to tests.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import binaries, nodes, pki
from . import node as realnode
from .control_plane import ControlPlane
from .process import Component
from .s3server import REGION, S3Server


@dataclass
class K8sEnv:
    """A Kubernetes API server the tests may use as cluster admin."""

    kubeconfig: Path
    api_url: str
    external: bool = False
    gpu_count: int = 0
    gpu_node: str | None = None
    cpu_node: str | None = None
    real_node: str | None = None
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster (created once)."""
        if self._client is None:
            from kubernetes import config

            self._client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._client

    def env(self) -> dict[str, str]:
        """Variables that point kubectl/helm (and the external mode) at this cluster."""
        return {"KUBECONFIG": str(self.kubeconfig)}


@dataclass
class S3Env:
    """An S3 endpoint, credentials and a bucket that exists."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = REGION
    external: bool = False

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint (path-style addressing, as MinIO wants)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def env(self) -> dict[str, str]:
        return {
            "WHISPEROP_S3_ENDPOINT": self.endpoint,
            "WHISPEROP_S3_ACCESS_KEY": self.access_key,
            "WHISPEROP_S3_SECRET_KEY": self.secret_key,
            "WHISPEROP_S3_BUCKET": self.bucket,
            "WHISPEROP_S3_REGION": self.region,
        }


_NODE_COMPONENTS = frozenset({"containerd", "kubelet", "kube-proxy", "coredns"})


class MissingBinaries(RuntimeError):
    """The cache has not been filled by scripts/build-testenv.sh."""


class Environment:
    """Local components in one run directory; start parts on demand, stop all."""

    def __init__(
        self, root: Path | None = None, gpus: int = 1, detach: bool = False, node: bool = False
    ) -> None:
        """``node=True``: a real node (kubelet + containerd) instead of kwok's fake ones."""
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="whisperop-testenv-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.gpus = 0 if node else gpus
        self.detach = detach
        self.node: realnode.RealNode | None = None
        self.want_node = node
        self.components: list[Component] = []
        self.k8s: K8sEnv | None = None
        self.s3: S3Env | None = None
        self.timings: dict[str, float] = {}
        self.saved_env: dict[str, str] = {}

    @staticmethod
    def check_binaries(names: tuple[str, ...] = binaries.BINARIES) -> None:
        """Raise :class:`MissingBinaries` naming what is absent and how to build it."""
        miss = binaries.missing(names)
        if miss:
            raise MissingBinaries(
                f"test-environment binaries missing in {binaries.bin_dir()}: {', '.join(miss)}; "
                "build them with scripts/build-testenv.sh"
            )

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def start_kubernetes(self) -> K8sEnv:
        """Control plane + kwok nodes (or the real node); returns when pods can be scheduled."""
        if self.k8s is not None:
            return self.k8s
        if self.want_node:
            return self._start_with_real_node()
        self.check_binaries(binaries.KUBERNETES)
        t0 = time.monotonic()
        cp = ControlPlane(self.root, pki.generate(self.root / "pki"))
        try:
            cp.start(detach=self.detach)
        finally:
            self.components.extend(cp.components)
        kwok = nodes.start_kwok(cp.admin_kubeconfig, self.log_dir, self.detach)
        self.components.append(kwok)
        rest = cp.admin_rest()
        node_objs = nodes.default_nodes(self.gpus)
        nodes.create_nodes(rest, node_objs)
        cp.wait_controllers()
        nodes.wait_nodes_ready(rest, [n["metadata"]["name"] for n in node_objs], kwok)
        self.timings["kubernetes"] = time.monotonic() - t0
        self.k8s = K8sEnv(
            kubeconfig=cp.admin_kubeconfig,
            api_url=cp.api_url,
            gpu_count=self.gpus,
            gpu_node=nodes.GPU_NODE if self.gpus else None,
            cpu_node=nodes.CPU_NODE,
        )
        self._save_state()
        return self.k8s

    def _start_with_real_node(self) -> K8sEnv:
        """Control plane advertising the node address, then kubelet & co on this machine."""
        self.check_binaries(tuple(n for n in binaries.KUBERNETES if n != "kwok"))
        realnode.check_host()
        lock = realnode.take_machine_lock()  # before anything binds the node address
        t0 = time.monotonic()
        cp = ControlPlane(
            self.root,
            pki.generate(self.root / "pki", node_ip=realnode.NODE_IP, node_name=realnode.NODE_NAME),
            node_ip=realnode.NODE_IP,
        )
        realnode.setup_host_network()  # the API server binds to the node address
        try:
            cp.start(detach=self.detach)
        finally:
            self.components.extend(cp.components)
        self.node = realnode.RealNode(self.root, cp, lock_fd=lock)
        try:
            self.node.start(detach=self.detach)
        finally:
            self.components.extend(self.node.components)
        cp.wait_controllers()
        self.node.wait_ready()
        self.timings["kubernetes"] = time.monotonic() - t0
        self.k8s = K8sEnv(kubeconfig=cp.admin_kubeconfig, api_url=cp.api_url, real_node=realnode.NODE_NAME)
        self._save_state()
        return self.k8s

    def start_s3(self) -> S3Env:
        """MinIO with the bucket created."""
        if self.s3 is not None:
            return self.s3
        self.check_binaries(binaries.S3)
        t0 = time.monotonic()
        server = S3Server(self.root)
        try:
            server.start(detach=self.detach)
        finally:
            if server.component is not None:
                self.components.append(server.component)
        self.timings["s3"] = time.monotonic() - t0
        self.s3 = S3Env(server.endpoint, server.access_key, server.secret_key, server.bucket)
        self._save_state()
        return self.s3

    def stop(self, remove: bool = True) -> None:
        """Stop components in reverse start order; remove the run dir unless asked not to."""
        if self.node is not None:
            self.node.stop()  # containers, shims and mounts first: then the API server
            self.components = [c for c in self.components if c.name not in _NODE_COMPONENTS]
            self.node = None
        for c in reversed(self.components):
            try:
                c.stop()
            except Exception:  # keep stopping the others
                pass
        self.components.clear()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tails(self, lines: int = 60) -> str:
        """The end of every component's log, for a failed test's report."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {log} (last {len(text)} lines) -----\n" + "\n".join(text))
        return "\n".join(parts)

    # --- state file, so `python -m whisperop.testenv down` can stop a detached `up`.

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def _save_state(self) -> None:
        state = {
            "components": [{"name": c.name, "argv": c.argv, "pid": c.pid} for c in self.components],
            "env": self.env(),
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def env(self) -> dict[str, str]:
        """Environment variables that let other processes use this environment as external."""
        out: dict[str, str] = dict(self.saved_env)
        if self.k8s:
            out.update(self.k8s.env())
        if self.s3:
            out.update(self.s3.env())
        return out

    @classmethod
    def adopt(cls, root: Path) -> Environment:
        """Rebuild an Environment from a run dir's state file (for `down`/`env`)."""
        env = cls(root)
        state = json.loads(env.state_file.read_text())
        for item in state["components"]:
            c = Component(item["name"], item["argv"], env.log_dir)
            c.pid = item["pid"]
            env.components.append(c)
        if any(c.name == "kubelet" for c in env.components):
            env.node = realnode.RealNode(root, None, [c for c in env.components if c.name in _NODE_COMPONENTS])
        env.saved_env = dict(state.get("env", {}))
        return env
