"""A real node: containerd + runc + CNI, kubelet, kube-proxy and CoreDNS on this machine.

Why: kwok nodes only pretend to run pods, so images, Pod Security, probes,
service networking, ``kubectl logs`` and everything the chart does to a
running container were never exercised. This module makes the machine itself
a node of the test cluster, with the same components a kubeadm node has, all
of the control plane's own release (kubelet and kube-proxy come from the same
``k8s.io/kubernetes`` module, see tests/cluster/k8s/go.mod):

* **containerd** (Debian's package) with its own socket, state and root under
  the run directory, so each environment starts from an empty image store and
  nothing of an earlier (possibly killed) run is restored. Its CRI plugin
  needs ``restrict_oom_score_adj = true``: the VM has no CAP_SYS_RESOURCE, and
  lowering a container's OOM score would fail every pod start.
* **CNI**: Debian's reference plugins, ``ptp`` (a veth per pod, routed by the
  host: service DNAT and its reverse work without br_netfilter) + ``firewall``
  (dockerd sets the FORWARD policy to DROP) and host-local IPAM with its
  state in the run directory.
* **Addresses**: the node address ``NODE_IP`` lives on a bridge interface with
  no ports (this kernel has no dummy links); it is an address *of this
  machine*, so nothing leaves it: the API server binds to it, kubelet and
  CoreDNS listen on it, pods reach it through their default route.
* **kubelet** with the cgroupfs driver (cgroup v1 hybrid, no systemd),
  webhook authn/authz (so ``kubectl logs/exec`` go through RBAC), a serving
  certificate from the test CA, OOM score adjustment off, image GC off
  (images are imported, never pulled: there is no registry).
* **kube-proxy** in iptables mode; **CoreDNS** (a small build, see
  tests/cluster/coredns) as a host process on ``NODE_IP:53`` serving
  ``cluster.local`` from the API server.
* Images: the pod sandbox (the release's own pause.c, built static) and any
  ``docker save`` archive given to :meth:`RealNode.import_image`.

Needs root (network links, iptables, mounts); the test fixtures fail with a
clear message otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import binaries, images, kubeconfig
from .control_plane import ControlPlane
from .ports import free_port
from .process import Component
from .rest import Rest

NODE_NAME = "whisperop-node-0"
NODE_IP = "10.89.0.1"
NODE_LINK = "wop0"
POD_CIDR = "10.88.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "localhost/whisperop/pause:testenv"


def containerd_config(**values: object) -> str:
    """``containerd.toml.in`` (shared with scripts/container-engine.sh) with its ``@NAME@`` fields
    filled from ``values`` (keys in lower case: root, state, socket, sandbox_image, cni_bin, cni_conf)."""
    text = (Path(__file__).with_name("containerd.toml.in")).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    missing = sorted(set(re.findall(r"@([A-Z_]+)@", text)))
    if missing:
        raise ValueError(f"containerd.toml.in: no value for {missing}")
    return text
NODE_LABEL = "whisperop.io/real-node"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
SYSTEM_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack")


class NodeUnavailable(RuntimeError):
    """The machine cannot host the real node (not root, a package is missing, or one already runs)."""


LOCK_FILE = Path("/run/whisperop-node.lock")


def take_machine_lock() -> int:
    """Hold the one-node-per-machine lock for this process (released when it exits or on unlock).

    The node uses fixed things of the machine (the node address, the kubelet's
    port 10250, CoreDNS on :53, the pod address range), so a second node would
    break the first; its start-up sweep would even kill the first one's pods.
    """
    import fcntl

    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = LOCK_FILE.read_text().strip() or "?"
        raise NodeUnavailable(f"another real node runs on this machine (pid {holder}); one at a time") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _run(*argv: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(argv, capture_output=True, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    return r


def cni_bin_dir() -> Path | None:
    for d in CNI_BIN_DIRS:
        if (Path(d) / "ptp").exists():
            return Path(d)
    return None


def check_host() -> None:
    """Raise :class:`NodeUnavailable` saying exactly what is missing."""
    if os.geteuid() != 0:
        raise NodeUnavailable("the real node needs root (network links, iptables, mounts)")
    missing = [exe for exe in ("containerd", "runc", "iptables", "ip", "ctr") if shutil.which(exe) is None]
    if cni_bin_dir() is None:
        missing.append("CNI plugins (ptp) in " + " or ".join(CNI_BIN_DIRS))
    if missing:
        raise NodeUnavailable(
            f"real node: missing {', '.join(missing)}; install with scripts/install-node-packages.sh "
            f"(Debian: {' '.join(SYSTEM_PACKAGES)})"
        )
    absent = binaries.missing(binaries.NODE)
    if absent:
        raise NodeUnavailable(
            f"real node: binaries missing in {binaries.bin_dir()}: {', '.join(absent)}; "
            "build them with scripts/build-testenv.sh"
        )


def setup_host_network() -> None:
    """Give this machine the node address (idempotent) and let it route pod traffic."""
    if _run("ip", "link", "show", NODE_LINK, check=False).returncode != 0:
        _run("ip", "link", "add", NODE_LINK, "type", "bridge")
    have = _run("ip", "-o", "addr", "show", "dev", NODE_LINK).stdout.decode()
    if f" {NODE_IP}/" not in have:
        _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK)
    _run("ip", "link", "set", NODE_LINK, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def sweep_stale_node() -> None:
    """Remove what a killed earlier node left on this machine (one real node at a time).

    A test run that is killed (SIGKILL, CI timeout) cannot stop its node:
    containerd's shims and their containers keep running, and the pods'
    network namespaces keep their addresses and the host keeps routes to
    them. The next node's IPAM starts from an empty state and hands out the
    same addresses, so a new pod's traffic would go to a dead pod's veth
    (seen: MinIO's readiness probe refused for minutes). Everything of a
    node is recognisable: processes in a ``kubepods`` cgroup, shims whose
    socket is under ``/run/whisperop``, network namespaces and host routes in
    ``POD_CIDR``.
    """
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cgroups = (proc / "cgroup").read_text()
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if "/kubepods" in cgroups or (b"containerd-shim" in cmd and b"/run/whisperop/" in cmd):
            try:
                os.kill(int(proc.name), 9)
            except OSError:
                pass
    _delete_pod_netns()
    prefix = POD_CIDR.rsplit(".", 1)[0] + "."
    routes = _run("ip", "-4", "route", "show", check=False).stdout.decode().splitlines()
    for line in routes:
        dest = line.split()[0] if line.split() else ""
        if dest.startswith(prefix) and "/" not in dest:
            _run("ip", "route", "del", dest, check=False)
    sock_dir = Path("/run/whisperop")
    if sock_dir.is_dir():
        for f in sock_dir.iterdir():
            f.unlink(missing_ok=True)


def _wait(what: str, pred: Any, timeout: float, component: Component | None = None) -> None:
    if component is not None:
        component.wait_until(pred, timeout, what)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise TimeoutError(f"real node: timed out after {timeout:.0f}s {what}")


@dataclass
class RealNode:
    """The node's files, processes and how to reach its container runtime."""

    root: Path
    cp: ControlPlane | None  # None for a node adopted from a state file only to stop it
    components: list[Component] = field(default_factory=list)
    lock_fd: int | None = None
    kubelet_healthz_port: int = field(default_factory=free_port)
    proxy_healthz_port: int = field(default_factory=free_port)
    proxy_metrics_port: int = field(default_factory=free_port)
    dns_health_port: int = field(default_factory=free_port)
    dns_ready_port: int = field(default_factory=free_port)

    @property
    def dir(self) -> Path:
        return self.root / "node"

    @property
    def containerd_socket(self) -> Path:
        # unix socket paths are limited to 108 bytes: keep it short and per run
        return Path("/run/whisperop") / f"{self.root.name[-24:]}.sock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def _add(self, name: str, argv: list[str]) -> Component:
        c = Component(name, argv, self.logs)
        self.components.append(c)
        return c

    # --- containerd

    def _containerd_config(self) -> Path:
        cni_conf = self.dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-whisperop.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "whisperop",
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": False,
                    "mtu": 1500,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                },
                {"type": "firewall", "backend": "iptables"},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=2))
        cfg = self.dir / "containerd.toml"
        cfg.write_text(containerd_config(
            root=self.dir / "containerd" / "root", state=self.dir / "containerd" / "state",
            socket=self.containerd_socket, sandbox_image=PAUSE_IMAGE, cni_bin=cni_bin_dir(), cni_conf=cni_conf))
        return cfg

    def start_containerd(self, detach: bool) -> Component:
        self.containerd_socket.parent.mkdir(parents=True, exist_ok=True)
        c = self._add("containerd", ["containerd", "--config", str(self._containerd_config())])
        c.start(detach)
        c.wait_until(lambda: self.ctr("version", check=False).returncode == 0, 60, "serving its socket")
        return c

    def ctr(self, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``ctr`` against this node's containerd in the CRI namespace."""
        return _run("ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args, check=check, input=input)

    def import_image(self, archive: Path) -> None:
        """Import a ``docker save`` (or OCI) archive so pods can use it without a pull."""
        self.ctr("images", "import", "--no-unpack=false", str(archive))

    def images(self) -> list[str]:
        out = self.ctr("images", "list", "-q").stdout.decode()
        return [line for line in out.splitlines() if line]

    def _import_base_images(self) -> None:
        pause = images.write_archive(
            images.FileImage(PAUSE_IMAGE, {"pause": binaries.binary("pause")}, ["/pause"]),
            self.dir / "images" / "pause.tar",
        )
        self.import_image(pause)

    # --- kubelet, kube-proxy, CoreDNS

    @property
    def control_plane(self) -> ControlPlane:
        if self.cp is None:
            raise RuntimeError("real node: adopted without its control plane (can only stop)")
        return self.cp

    def _kubelet_config(self) -> Path:
        p = self.control_plane.pki
        cfg = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz_port,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(p.ca_crt)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(p.crt("kubelet-serving")),
            "tlsPrivateKeyFile": str(p.key("kubelet-serving")),
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "clusterDNS": [NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "",  # pods with dnsPolicy Default get no resolver of this machine
            "oomScoreAdj": 0,  # lowering it needs CAP_SYS_RESOURCE
            "imageGCHighThresholdPercent": 100,  # nothing can be pulled back: never collect
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                             "nodefs.inodesFree": "2%"},
            "serializeImagePulls": False,
            "maxPods": 60,
            "rotateCertificates": False,
            "shutdownGracePeriod": "0s",
            "volumePluginDir": str(self.dir / "volume-plugins"),
            # status reported quickly: pods go Ready as soon as their probe passes
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
        }
        path = self.dir / "kubelet-config.json"
        path.write_text(json.dumps(cfg, indent=2))
        return path

    def start_kubelet(self, detach: bool) -> Component:
        kc = kubeconfig.write(self.dir / "kubelet.kubeconfig", self.control_plane.api_url, self.control_plane.pki.ca_crt,
                              self.control_plane.pki.crt("kubelet"), self.control_plane.pki.key("kubelet"), f"system:node:{NODE_NAME}")
        c = self._add("kubelet", [
            str(binaries.binary("kubelet")),
            f"--config={self._kubelet_config()}",
            f"--kubeconfig={kc}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--root-dir={self.dir / 'kubelet'}",
            f"--cert-dir={self.dir / 'kubelet-pki'}",
            f"--node-labels={NODE_LABEL}=true",
            "--v=1",
        ])
        c.start(detach)
        return c

    def start_kube_proxy(self, detach: bool) -> Component:
        kc = kubeconfig.write(self.dir / "kube-proxy.kubeconfig", self.control_plane.api_url, self.control_plane.pki.ca_crt,
                              self.control_plane.pki.crt("kube-proxy"), self.control_plane.pki.key("kube-proxy"), "system:kube-proxy")
        c = self._add("kube-proxy", [
            str(binaries.binary("kube-proxy")),
            f"--kubeconfig={kc}",
            f"--hostname-override={NODE_NAME}",
            "--proxy-mode=iptables",
            f"--cluster-cidr={POD_CIDR}",
            "--oom-score-adj=0",
            "--conntrack-max-per-core=0",  # leave the host's conntrack table size alone
            f"--healthz-bind-address=127.0.0.1:{self.proxy_healthz_port}",
            f"--metrics-bind-address=127.0.0.1:{self.proxy_metrics_port}",
            "--v=1",
        ])
        c.start(detach)
        return c

    def start_coredns(self, detach: bool) -> Component:
        kc = kubeconfig.write(self.dir / "coredns.kubeconfig", self.control_plane.api_url, self.control_plane.pki.ca_crt,
                              self.control_plane.pki.crt("coredns"), self.control_plane.pki.key("coredns"), "coredns")
        corefile = self.dir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{self.dns_health_port}
    ready 127.0.0.1:{self.dns_ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kc} whisperop-testenv
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loop
}}
""")
        c = self._add("coredns", [str(binaries.binary("coredns")), "-conf", str(corefile)])
        c.start(detach)
        return c

    # --- whole node

    def start(self, detach: bool = False, timeout: float = 120.0) -> None:
        """Start runtime, kubelet, kube-proxy and DNS; return once the node is Ready.

        Call after the API server is ready (the kubelet registers the Node).
        """
        check_host()
        if self.lock_fd is None:
            self.lock_fd = take_machine_lock()
        self.dir.mkdir(parents=True, exist_ok=True)
        sweep_stale_node()
        setup_host_network()
        self.start_containerd(detach)
        self._import_base_images()
        self.start_kubelet(detach)
        self.start_kube_proxy(detach)
        self.start_coredns(detach)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Node Ready without not-ready taints, ``kubernetes`` Service endpoints, DNS ready."""
        rest: Rest = self.control_plane.admin_rest()
        by_name = {c.name: c for c in self.components}

        def node_ready() -> bool:
            status, node = rest.get(f"/api/v1/nodes/{NODE_NAME}")
            if status != 200:
                return False
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            taints = node.get("spec", {}).get("taints", [])
            return conds.get("Ready") == "True" and not any(
                t["key"].startswith("node.kubernetes.io/") for t in taints
            )

        _wait("registering a Ready node", node_ready, timeout, by_name["kubelet"])

        def endpoints() -> bool:
            status, eps = rest.get("/api/v1/namespaces/default/endpoints/kubernetes")
            return status == 200 and any(
                a.get("ip") == NODE_IP for s in eps.get("subsets") or [] for a in s.get("addresses") or []
            )

        _wait("publishing the kubernetes Service endpoints", endpoints, timeout)
        dns = by_name["coredns"]
        dns.wait_until(lambda: _http_ok(f"http://127.0.0.1:{self.dns_ready_port}/ready"), timeout, "ready")
        proxy = by_name["kube-proxy"]
        proxy.wait_until(lambda: _http_ok(f"http://127.0.0.1:{self.proxy_healthz_port}/healthz"), timeout, "healthy")

    def kill_all_containers(self) -> None:
        """SIGKILL every running container of this node (containers outlive containerd)."""
        r = self.ctr("tasks", "list", "-q", check=False)
        for task in r.stdout.decode().split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)

    def stop(self) -> None:
        """Stop kubelet and friends, kill the containers, stop containerd and its shims, unmount."""
        runtime = [c for c in self.components if c.name == "containerd"]
        for c in reversed(self.components):
            if c.name == "containerd":
                continue
            try:
                c.stop()
            except Exception:
                pass
        if runtime and runtime[0].alive():
            self.kill_all_containers()
            time.sleep(0.5)
        for c in runtime:
            try:
                c.stop()
            except Exception:
                pass
        self.components.clear()
        _kill_leftover_shims(str(self.containerd_socket))
        _delete_pod_netns()
        _unmount_under(self.dir)
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the flock
            self.lock_fd = None


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _kill_leftover_shims(socket_path: str) -> None:
    """containerd's shims outlive containerd: end those of this node (named by its socket)."""
    marker = socket_path.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmd and marker in cmd:
            try:
                os.kill(int(proc.name), 9)
            except OSError:
                pass


def _delete_pod_netns() -> None:
    """Delete the network namespaces of this node's pods (their veths and routes go with them).

    containerd tears a pod's network down only when the pod is stopped through
    CRI; a node that is simply stopped leaves them, and with them host routes
    to addresses the next run's IPAM hands out again.
    """
    netns_dir = Path("/var/run/netns")
    if not netns_dir.is_dir():
        return
    prefix = POD_CIDR.rsplit(".", 1)[0] + "."
    for ns in netns_dir.glob("cni-*"):
        r = subprocess.run(["ip", "-n", ns.name, "-o", "-4", "addr"], capture_output=True, text=True)
        if r.returncode != 0 or f"inet {prefix}" in r.stdout:
            subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True)


def _unmount_under(path: Path) -> None:
    """Unmount what the kubelet and containerd mounted below ``path`` (deepest first)."""
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
