"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback.

Why: these are the real programs of one Kubernetes release, configured the way
a small cluster runs them (TLS everywhere, RBAC, service-account tokens signed
by a key generated now, controllers with their own credentials), but tuned
for a throw-away test cluster: no leader election, no fsync in etcd.

Two shapes: with kwok nodes only, everything binds to loopback; with the real
node (``node_ip`` set, :mod:`whisperop.testenv.node`) the API server binds to
and advertises the node's address, so pods reach it through the
``kubernetes`` Service (which then has endpoints, kept by the lease
reconciler) and the API server reaches the kubelet with its own client
certificate (``kubectl logs/exec/port-forward``). The Node authorizer is on
in both, as in a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import binaries, kubeconfig, pki as pki_mod
from .ports import free_port
from .process import Component
from .rest import Rest, http_ok, https_ok

SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass
class ControlPlane:
    """Paths, ports and processes of one control plane."""

    root: Path
    pki: pki_mod.Pki
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    cm_port: int = field(default_factory=free_port)
    sched_port: int = field(default_factory=free_port)
    node_ip: str | None = None
    components: list[Component] = field(default_factory=list)

    @property
    def bind_ip(self) -> str:
        return self.node_ip or "127.0.0.1"

    @property
    def api_url(self) -> str:
        return f"https://{self.bind_ip}:{self.api_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def admin_rest(self) -> Rest:
        return Rest(self.api_url, self.pki.ca_crt, self.pki.crt("admin"), self.pki.key("admin"))

    def _kubeconfig(self, name: str) -> Path:
        if name == "admin":
            path = self.admin_kubeconfig
        else:
            path = self.root / f"{name}.kubeconfig"
        return kubeconfig.write(path, self.api_url, self.pki.ca_crt, self.pki.crt(name), self.pki.key(name), name)

    def _add(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Component:
        c = Component(name, argv, self.logs, env)
        self.components.append(c)
        return c

    def start_etcd(self, detach: bool) -> Component:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        c = self._add("etcd", [
            str(binaries.binary("etcd")),
            "--name=testenv", f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=testenv={peer}", "--initial-cluster-state=new",
            "--unsafe-no-fsync",  # throw-away data; fsync dominates start-up on shared disks
            "--log-level=warn",
        ])
        c.start(detach)
        return c

    def _node_flags(self) -> list[str]:
        """API-server flags for the address it advertises and its way to kubelets."""
        p = self.pki
        if self.node_ip is None:
            # A loopback address is not a valid Endpoints address for the
            # `kubernetes` Service; with kwok nodes nothing in-cluster needs it.
            return ["--endpoint-reconciler-type=none"]
        return [
            "--endpoint-reconciler-type=lease",
            f"--kubelet-client-certificate={p.crt('apiserver-kubelet-client')}",
            f"--kubelet-client-key={p.key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={p.ca_crt}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def start_apiserver(self, detach: bool) -> Component:
        p = self.pki
        c = self._add("kube-apiserver", [
            str(binaries.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--bind-address={self.bind_ip}", f"--advertise-address={self.bind_ip}", f"--secure-port={self.api_port}",
            f"--cert-dir={self.root / 'apiserver-certs'}",
            f"--tls-cert-file={p.crt('apiserver')}", f"--tls-private-key-file={p.key('apiserver')}",
            f"--client-ca-file={p.ca_crt}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            *self._node_flags(),
            "--profiling=false",
            "--v=1",
        ])
        c.start(detach)
        return c

    def start_controller_manager(self, detach: bool) -> Component:
        kc = self._kubeconfig("controller-manager")
        c = self._add("kube-controller-manager", [
            str(binaries.binary("kube-controller-manager")),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.cm_port}",
            f"--cert-dir={self.root / 'cm-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",  # each controller acts as its own SA, as in a cluster
            f"--service-account-private-key-file={self.pki.sa_key}",  # enables the SA token controller
            f"--root-ca-file={self.pki.ca_crt}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            "--profiling=false",
            "--v=1",
        ])
        c.start(detach)
        return c

    def start_scheduler(self, detach: bool) -> Component:
        kc = self._kubeconfig("scheduler")
        c = self._add("kube-scheduler", [
            str(binaries.binary("kube-scheduler")),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.sched_port}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ])
        c.start(detach)
        return c

    def start(self, detach: bool = False, timeout: float = 90.0) -> None:
        """Start etcd and the API server, then controllers; return once all are healthy.

        The kwok nodes are started by the caller between this and
        :meth:`wait_controllers` so their start overlaps with the controllers'.
        """
        self.logs.mkdir(parents=True, exist_ok=True)
        etcd = self.start_etcd(detach)
        etcd.wait_until(lambda: http_ok(f"http://127.0.0.1:{self.etcd_port}/health"), timeout, "healthy")
        api = self.start_apiserver(detach)
        rest = None

        def api_ready() -> bool:
            nonlocal rest
            rest = rest or self.admin_rest()
            status, _ = rest.request("GET", "/readyz", timeout=2)
            return status == 200

        self._kubeconfig("admin")
        api.wait_until(api_ready, timeout, "ready (/readyz)")
        self.start_controller_manager(detach)
        self.start_scheduler(detach)

    def wait_controllers(self, timeout: float = 90.0) -> None:
        """Wait for /healthz of the controllers and for the `default` ServiceAccount.

        The ServiceAccount appearing proves the controller manager runs with
        working credentials; pods cannot be admitted before it exists.
        """
        by_name = {c.name: c for c in self.components}
        cm, sched = by_name["kube-controller-manager"], by_name["kube-scheduler"]
        cm.wait_until(lambda: https_ok(f"https://127.0.0.1:{self.cm_port}/healthz"), timeout, "healthy")
        sched.wait_until(lambda: https_ok(f"https://127.0.0.1:{self.sched_port}/healthz"), timeout, "healthy")
        rest = self.admin_rest()
        cm.wait_until(
            lambda: rest.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            timeout,
            "creating the default ServiceAccount",
        )
