"""Throw-away certificates and service-account keys, generated at every start.

Why: nothing secret is shipped in the repo; each environment gets its own CA,
an API-server serving certificate, client certificates for the admin and the
control-plane components (so RBAC sees real identities), and a key pair for
signing service-account tokens. EC P-256 via the openssl CLI keeps it to a few
milliseconds per certificate.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

# Client identities: file stem -> (CN, O). RBAC's bootstrap policy grants the
# system:kube-* users what their components need; system:masters is admin.
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("whisperop-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
}

APISERVER_SANS = (
    "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
    "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
)


@dataclass(frozen=True)
class Pki:
    """Paths of the generated material."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("openssl not found: run scripts/build-testenv.sh (it installs it)")
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()}")


def _leaf(pki: Pki, name: str, subj: str, eku: str, sans: str | None) -> None:
    ext = [
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", f"extendedKeyUsage={eku}",
    ]
    if sans:
        ext += ["-addext", f"subjectAltName={sans}"]
    _openssl(
        "req", "-x509", "-new", *_CURVE, "-CA", str(pki.ca_crt), "-CAkey", str(pki.ca_key),
        "-keyout", str(pki.key(name)), "-out", str(pki.crt(name)), "-days", "30",
        "-subj", subj, *ext,
    )


def generate(directory: Path, node_ip: str | None = None, node_name: str | None = None) -> Pki:
    """Create CA, serving and client certificates and the SA key pair in ``directory``.

    With ``node_ip``/``node_name`` (the real node, :mod:`whisperop.testenv.node`)
    the API server's certificate also names the node address it advertises,
    and the node's identities are made: the kubelet's client certificate in
    ``system:nodes`` (what the Node authorizer checks), the kubelet's serving
    certificate (so the API server verifies it for ``kubectl logs/exec``), the
    API server's client certificate towards kubelets, and kube-proxy's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _openssl(
        "req", "-x509", "-new", *_CURVE, "-keyout", str(pki.ca_key), "-out", str(pki.ca_crt),
        "-days", "30", "-subj", "/CN=whisperop-testenv-ca",
    )
    sans = APISERVER_SANS + (f",IP:{node_ip}" if node_ip else "")
    _leaf(pki, "apiserver", "/CN=kube-apiserver", "serverAuth", sans)
    clients = dict(CLIENTS)
    if node_ip and node_name:
        clients.update({
            "kubelet": (f"system:node:{node_name}", "system:nodes"),
            "kube-proxy": ("system:kube-proxy", None),
            "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
            "coredns": ("whisperop-coredns", "system:masters"),
        })
        _leaf(pki, "kubelet-serving", f"/CN={node_name}", "serverAuth", f"IP:{node_ip},DNS:{node_name}")
    for name, (cn, org) in clients.items():
        subj = (f"/O={org}" if org else "") + f"/CN={cn}"
        _leaf(pki, name, subj, "clientAuth", None)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(pki.sa_key))
    _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    for p in directory.iterdir():
        if p.suffix == ".key":
            p.chmod(0o600)
    return pki
