"""Shared set-up of the operator benchmarks: the real control plane + MinIO of
whisperop.testenv (or an external cluster via its env vars), CRDs, a namespace,
the operator as a subprocess, and claim-only workers.

A claim-only worker runs the worker's real queue code (the watch-fed
job cache, ``kube.claim`` guarded by resourceVersion, the lease's guarded
writes) but skips transcription: it marks each claimed job Done at once. That
isolates dispatch from model speed. It uses the names of real (kwok) inference
pods, so the operator sees live workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Bench:
    def __init__(self, gpus: int = 1) -> None:
        from whisperop.testenv import external
        from whisperop.testenv.environment import Environment

        if external.enabled():
            self.env = None
            self.k8s, self.s3 = external.kubernetes(), external.s3()
        else:
            self.env = Environment(gpus=gpus)
            self.k8s, self.s3 = self.env.start_kubernetes(), self.env.start_s3()
        self.api = self.k8s.client
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"opbench-{uuid.uuid4().hex[:6]}"
        self.tmp.mkdir(parents=True)
        self.apply_crds()

    def kubectl(self) -> str:
        from whisperop.testenv import binaries

        b = binaries.binary("kubectl")
        return str(b) if b.exists() else "kubectl"

    def apply_crds(self) -> None:
        env = dict(os.environ, KUBECONFIG=str(self.k8s.kubeconfig))
        subprocess.run([self.kubectl(), "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")],
                       check=True, capture_output=True, env=env)
        subprocess.run([self.kubectl(), "wait", "--for=condition=Established", "--timeout=30s", "crd", "--all"],
                       check=True, capture_output=True, env=env)

    def namespace(self) -> str:
        from kubernetes import client

        name = f"bench-{uuid.uuid4().hex[:8]}"
        client.CoreV1Api(self.api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def delete_namespace(self, ns: str) -> None:
        from kubernetes import client

        try:
            client.CoreV1Api(self.api).delete_namespace(ns)
        except Exception:
            pass

    def proc_env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.k8s.kubeconfig), **self.s3.env(), PYTHONUNBUFFERED="1",
                    WHISPEROP_METRICS_PORT="0", WHISPEROP_RECONCILE_SECS=os.environ.get("WHISPEROP_RECONCILE_SECS", "2"),
                    **extra)

    def start_operator(self, ns: str, log: str = "operator") -> subprocess.Popen[bytes]:
        f = open(self.tmp / f"{log}.log", "ab")
        p = subprocess.Popen([sys.executable, "-m", "kopf", "run", "-m", "whisperop.operator.main", "--namespace", ns,
                              "--standalone"], env=self.proc_env(), stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def create_model(self, ns: str, name: str = "default", **spec: Any) -> dict[str, Any]:
        from whisperop.cluster import kube
        from whisperop.core import crds

        body = {"apiVersion": crds.API_VERSION, "kind": crds.MODEL_KIND, "metadata": {"name": name},
                "spec": {"modelURI": "/models/bench.bin", "resources": {"gpus": 0}, **spec}}
        return kube.models(self.api, ns).create(body)

    def running_pods(self, ns: str, model: str = "default") -> list[str]:
        from kubernetes import client

        pods = client.CoreV1Api(self.api).list_namespaced_pod(
            ns, label_selector=f"whisperop.io/model={model},app.kubernetes.io/component=inference").items
        return sorted(p.metadata.name for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp)

    def close(self) -> None:
        for p in self.procs:
            self.stop(p)
        if self.env is not None:
            self.env.stop(remove=True)


def wait_for(fn: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    from whisperop.testenv.process import poll

    return poll(fn, timeout, what, interval)


class ClaimOnlyWorker:
    """The worker's queue code without transcription (see the module doc)."""

    def __init__(self, api: Any, ns: str, pod: str, model: str = "default") -> None:
        from whisperop.cluster import kube
        from whisperop.cluster.watch import ResourceWatch
        from whisperop.core import crds

        self.kube = kube
        self.res = kube.jobs(api, ns)
        self.pod = pod
        self.cache = ResourceWatch(self.res, field_selector=f"spec.model={model}", transform=crds.as_job)
        self.claimed: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> None:
        self.cache.start(wait=False)
        self.cache.synced.wait(30)
        self.thread.start()

    def run(self) -> None:
        tried: set[tuple[str, str]] = set()
        while not self.stop.is_set():
            got = None
            for job in sorted((j for j in self.cache.items() if j.claimable), key=self.kube.queue_key):
                key = (job.name, job.resource_version)
                if key in tried:
                    continue
                tried.add(key)
                got = self.kube.claim(self.res, job, self.pod)
                if got is not None:
                    break
            if got is None:
                self.cache.wait_changed(0.5)
                continue
            self.claimed[got.name] = time.time()
            try:  # the lease's guarded write (cluster/work_queue.py), without the re-check on 409
                self.res.patch_status(got.name, {
                    "phase": "Done", "progress": 100, "completionTime": self.kube.ts(),
                    "result": {"json": "s3://bench/none.json", "segments": 0}}, rv=got.resource_version)
            except (self.kube.Conflict, self.kube.NotFound):
                pass


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def run_sizes(sizes: str, run: Any, json_out: str | None) -> list[dict[str, Any]]:
    """Run ``run(bench, n)`` for each queue size in ``sizes`` ("1,100,1000") on one
    control plane, print each result as a JSON line, and write them all to
    ``json_out`` when given."""
    import json

    b = Bench()
    out = []
    try:
        for n in (int(x) for x in sizes.split(",")):
            r = run(b, n)
            print(json.dumps(r), flush=True)
            out.append(r)
    finally:
        b.close()
    if json_out:
        with open(json_out, "w") as f:
            json.dump(out, f, indent=1)
    return out
