"""kubectl, helm, port-forward and the in-cluster MinIO for the real-node suite.

Why plain subprocesses: the suite must drive the cluster the way a user does
(kubectl, helm, a port-forward to a Service), and a failure must show the
command and its output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from whisperop.testenv import binaries, images
from whisperop.testenv.node import RealNode
from whisperop.testenv.process import poll

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "whisper-operator"
MINIO_IMAGE = "localhost/whisperop/minio:testenv"
_APP_VERSION = re.search(r'^appVersion:\s*"?([^"\s]+)', (CHART / "Chart.yaml").read_text(), re.M)
APP_VERSION = _APP_VERSION.group(1) if _APP_VERSION else "0.0.0"
# the names scripts/build-images.sh gives them (the chart's defaults; the CPU variant's tag in values-cpu.yaml)
OPERATOR_IMAGE = f"ghcr.io/whisper-operator/whisperop-operator:{APP_VERSION}"
INFERENCE_IMAGE = f"ghcr.io/whisper-operator/whisperop-inference:{APP_VERSION}-cpu"
RELEASE_NS = "whisper"
RELEASE = "wo"
CPU_VALUES = CHART / "ci" / "cpu-values.yaml"
MINIO_NS = "whisperop-s3"
MINIO_USER = "e2e-access"
MINIO_PASSWORD = "e2e-secret-key-0123"


def required() -> bool:
    return os.environ.get("WHISPEROP_REQUIRE_CLUSTER", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    if required():
        pytest.fail(f"WHISPEROP_REQUIRE_CLUSTER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for(what: str, pred: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """:func:`whisperop.testenv.process.poll`, with ``what`` first (this module's call style)."""
    return poll(pred, timeout, what, interval)


@dataclass
class Kube:
    """kubectl and helm against one cluster."""

    kubeconfig: Path
    log_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(binaries.binary("kubectl")), *args], input=stdin, capture_output=True,
                           text=True, env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(binaries.binary("helm")), *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout, cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def get(self, *args: str) -> Any:
        """``kubectl get ... -o json`` decoded (None when not found)."""
        r = self.kubectl("get", *args, "-o", "json", check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr or "not found" in r.stderr:
                return None
            raise AssertionError(f"kubectl get {' '.join(args)}: {r.stderr}")
        return json.loads(r.stdout)

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
        docs = manifest if isinstance(manifest, list) else [manifest]
        self.kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))

    @contextlib.contextmanager
    def port_forward(self, ns: str, target: str, remote_port: int) -> Iterator[int]:
        """``kubectl port-forward`` to ``target`` (e.g. svc/name); yields the local port."""
        log = open(self.log_dir / f"port-forward-{target.replace('/', '-')}.log", "a+")
        start = log.tell()  # the log is appended to by every forward to this target: read only ours
        p = subprocess.Popen(
            [str(binaries.binary("kubectl")), "-n", ns, "port-forward", "--address", "127.0.0.1", target,
             f":{remote_port}"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, text=True,
        )
        try:
            def port() -> int | None:
                log.seek(start)
                m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", log.read())
                if p.poll() is not None:
                    log.seek(start)
                    raise AssertionError(f"port-forward {target} exited: {log.read()[-2000:]}")
                return int(m.group(1)) if m else None

            yield wait_for(f"port-forward to {target}", port, 60, 0.2)
        finally:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
            log.close()


def deploy_minio(node: RealNode, kube: Kube) -> dict[str, str]:
    """MinIO (the binary the test environment builds) as a pod with a Service.

    The image is that static binary on an empty filesystem; the data lives
    in an emptyDir. Returns the endpoint pods use (cluster DNS) and the one
    this machine uses (the Service's ClusterIP, routed by kube-proxy).
    """
    archive = images.write_archive(
        images.FileImage(MINIO_IMAGE, {"minio": binaries.binary("minio")}, ["/minio"], dirs=("tmp", "data")),
        node.dir / "images" / "minio.tar",
    )
    node.import_image(archive)
    labels = {"app": "minio"}
    kube.apply([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MINIO_NS, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "minio", "namespace": MINIO_NS},
         "stringData": {"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "minio", "namespace": MINIO_NS},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{
                     "name": "minio", "image": MINIO_IMAGE, "imagePullPolicy": "Never",
                     "args": ["server", "/data", "--address", ":9000"],
                     "envFrom": [{"secretRef": {"name": "minio"}}],
                     "env": [{"name": "HOME", "value": "/tmp"}, {"name": "MINIO_BROWSER", "value": "off"}],
                     "ports": [{"containerPort": 9000}],
                     "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000},
                                        "periodSeconds": 1},
                     "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                         "readOnlyRootFilesystem": True},
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
                 }],
                 "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
             }}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "minio", "namespace": MINIO_NS},
         "spec": {"selector": labels, "ports": [{"port": 9000, "targetPort": 9000}]}},
    ])
    kube.kubectl("-n", MINIO_NS, "rollout", "status", "deployment/minio", "--timeout=180s", timeout=200)
    svc = kube.get("-n", MINIO_NS, "service", "minio")
    ip = svc["spec"]["clusterIP"]
    # Ready pod != programmed Service: kube-proxy rejects until its next sync sees the endpoint
    wait_for(f"kube-proxy to route {ip}:9000", lambda: _connects(ip, 9000), 60, 0.2)
    return {
        "endpoint": f"http://minio.{MINIO_NS}.svc:9000",
        "host_endpoint": f"http://{svc['spec']['clusterIP']}:9000",
        "access_key": MINIO_USER,
        "secret_key": MINIO_PASSWORD,
    }


def _connects(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def s3_client(minio: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=minio["host_endpoint"], aws_access_key_id=minio["access_key"],
        aws_secret_access_key=minio["secret_key"], region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def build_images(node: RealNode) -> dict[str, str]:
    """Both images from the Dockerfiles (scripts/build-images.sh), imported into the node.

    The container engine (dockerd on Debian's containerd) is started by
    scripts/container-engine.sh when it is not running; the build itself is
    cached by its inputs, so a warm run only re-imports (the node's image store
    is new at every start). Returns name -> image reference.
    """
    for exe in ("dockerd", "docker", "mmdebstrap"):
        if shutil.which(exe) is None:
            skip_or_fail(f"{exe} not found: install with scripts/install-node-packages.sh")
    r = subprocess.run(["bash", str(REPO / "scripts" / "container-engine.sh"), "start"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"container-engine.sh start: {r.stdout}\n{r.stderr}"
    r = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], capture_output=True, text=True,
                       timeout=3600, env={**os.environ, "CONTAINERD_SOCK": str(node.containerd_socket)})
    assert r.returncode == 0, f"build-images.sh: {r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    refs = {"operator": OPERATOR_IMAGE, "inference": INFERENCE_IMAGE}
    have = node.images()
    for ref in refs.values():
        assert ref in have, f"{ref} not in the node's image store: {have}"
    return refs


def install_release(kube: Kube, minio: dict[str, str], model: Path, *sets: str) -> tuple[Any, float]:
    """The README's `helm install`, after the Secret and buckets it expects exist; returns an S3
    client and the seconds `helm install --wait` took.

    ``model`` is uploaded as the release's model (``s3://whisperop-models/<name>``) and jfk.wav as
    ``s3://whisperop-inputs/jfk.wav``; ``sets`` are extra ``--set`` values. The results bucket is
    versioned: every write of a result is a version (the worker-loss test counts them)."""
    import yaml

    s3 = s3_client(minio)
    for bucket in ("whisperop", "whisperop-models", "whisperop-inputs"):
        try:
            s3.create_bucket(Bucket=bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    s3.put_bucket_versioning(Bucket="whisperop", VersioningConfiguration={"Status": "Enabled"})
    s3.upload_file(str(model), "whisperop-models", model.name)
    s3.upload_file(str(REPO / "tests" / "data" / "jfk.wav"), "whisperop-inputs", "jfk.wav")

    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NS, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    secret = yaml.safe_load((REPO / "docs" / "examples" / "s3-secret.yaml").read_text())
    secret["metadata"]["namespace"] = RELEASE_NS
    secret["stringData"].update({
        "WHISPEROP_S3_ENDPOINT": minio["endpoint"], "WHISPEROP_S3_BUCKET": "whisperop",
        "WHISPEROP_S3_ACCESS_KEY": minio["access_key"], "WHISPEROP_S3_SECRET_KEY": minio["secret_key"],
    })
    kube.apply(secret)
    # README, "On Kubernetes (Helm)", word for word, plus the CPU values file it documents
    extra = [arg for value in sets for arg in ("--set", value)]
    t0 = time.monotonic()
    kube.helm("install", RELEASE, "charts/whisper-operator", "-n", RELEASE_NS, "--create-namespace",
              "--set", "s3.existingSecret=whisperop-s3",
              "--set", f"model.uri=s3://whisperop-models/{model.name}",
              "-f", str(CPU_VALUES.relative_to(REPO)), *extra, "--wait", "--timeout", "5m")
    return s3, time.monotonic() - t0
