"""Scale from zero on the real node, beside the same flow on kwok, in one run.

    python bench/node_scale.py [--rounds 3] [--models base-q8_0,tiny] [--json-out bench/results/node-scale.json]

The flow a `kubectl apply` user waits for: the WhisperModel is at 0 replicas,
a TranscriptionJob for jfk.wav (in S3) is created, the operator scales the
inference Deployment to 1, the pod starts, the worker downloads the model from
S3, loads it, claims the job and transcribes it. Timed from the job's creation
(this process's clock): inference pod Running → job Running → job Done. Then
the idle timeout (5 s) takes the model back to zero before the next round.

* **node**: the machine's own kubelet + containerd (:mod:`whisperop.testenv.node`),
  the images built from the Dockerfiles (image pull excluded: they are in the
  node's store), MinIO as a pod, the chart installed with helm
  (`ci/cpu-values.yaml`), operator defaults (5 s reconcile).
* **kwok**: the same control plane with a kwok node; the operator and the
  worker run as processes of this machine (the worker is started the moment
  kwok reports its pod Running, as a kubelet would start the container), MinIO
  as a process, the same operator defaults, the same job.

Models: ``base-q8_0`` (the real whisper base weights, q8_0) and ``tiny`` (the
random-weight model of tiny's shape, 3.3 MB: whisper tiny's own weights cannot
be fetched here, and its text is noise; what it shows is the cost of
everything but the model). The real node needs root and the node packages
(scripts/install-node-packages.sh); one node per machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IDLE_SECS = 5


def model_file(name: str, work: Path) -> Path:
    from whisperop.core.settings import EngineSettings
    from whisperop.modelstore.cache import resolve_model
    from whisperop.modelstore.tiny import build_tiny_model

    if name == "tiny":
        return build_tiny_model(work / "ggml-tiny-random.bin")
    return resolve_model(name, EngineSettings().model_cache_dir)


def job_body(audio: str, name: str) -> dict[str, Any]:
    from whisperop.core import crds

    return {"apiVersion": crds.API_VERSION, "kind": crds.JOB_KIND, "metadata": {"name": name},
            "spec": {"audio": audio, "model": "default", "language": "en"}}


def timed_round(create: Any, pod_running: Any, phase: Any, at_zero: Any, on_pod: Any = None) -> dict[str, float]:
    """One job from a model at zero; ``create()`` makes it; the others poll."""
    from whisperop.testenv.process import poll

    poll(at_zero, 180, "the model at zero replicas", 0.5)
    name = f"scale-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    create(name)
    pod = poll(pod_running, 180, "an inference pod Running", 0.1)
    t_pod = time.monotonic() - t0
    if on_pod is not None:
        on_pod(pod)
    poll(lambda: phase(name) in ("Running", "Done"), 300, "the job Running", 0.1)
    t_run = time.monotonic() - t0
    final = poll(lambda: (p := phase(name)) in ("Done", "Failed") and p, 600, "the job Done", 0.1)
    t_done = time.monotonic() - t0
    if final != "Done":
        raise RuntimeError(f"job {name} ended {final}")
    return {"pod_running_s": round(t_pod, 2), "job_running_s": round(t_run, 2), "done_s": round(t_done, 2)}


# ── the real node ────────────────────────────────────────────────────────────


def run_node(models: dict[str, Path], rounds: int) -> dict[str, list[dict[str, float]]]:
    from whisperop.cluster import kube as k
    from whisperop.testenv.environment import Environment

    from tests.support.kube_e2e import RELEASE, RELEASE_NS, Kube, build_images, deploy_minio, install_release

    env = Environment(node=True)
    out: dict[str, list[dict[str, float]]] = {}
    try:
        k8s = env.start_kubernetes()
        assert env.node is not None
        kube = Kube(k8s.kubeconfig, env.log_dir)
        build_images(env.node)
        minio = deploy_minio(env.node, kube)
        first = next(iter(models.values()))
        s3, _ = install_release(kube, minio, first, f"model.idleTimeoutSeconds={IDLE_SECS}")
        jobs = k.jobs(k8s.client, RELEASE_NS)

        def replicas() -> int:
            dep = kube.get("-n", RELEASE_NS, "deployment", "whisper-default")
            return int((dep or {}).get("spec", {}).get("replicas") or 0)

        def pods() -> list[dict[str, Any]]:
            got = kube.get("-n", RELEASE_NS, "pods", "-l", "app.kubernetes.io/component=inference") or {"items": []}
            return [p for p in got["items"] if not p["metadata"].get("deletionTimestamp")]

        def running() -> dict[str, Any] | None:
            return next((p for p in pods() if p["status"].get("phase") == "Running"), None)

        def phase(name: str) -> str | None:
            return (jobs.get(name).get("status") or {}).get("phase")

        for label, path in models.items():
            if path != first:
                s3.upload_file(str(path), "whisperop-models", path.name)
                kube.helm("upgrade", RELEASE, "charts/whisper-operator", "-n", RELEASE_NS, "--reuse-values",
                          "--set", f"model.uri=s3://whisperop-models/{path.name}", "--wait", "--timeout", "5m")
            out[label] = []
            for _ in range(rounds):
                r = timed_round(lambda n: jobs.create(job_body("s3://whisperop-inputs/jfk.wav", n)), running, phase,
                                lambda: replicas() == 0 and not pods())
                print(json.dumps({"where": "node", "model": label, **r}), flush=True)
                out[label].append(r)
    finally:
        env.stop(remove=True)
    return out


# ── kwok ─────────────────────────────────────────────────────────────────────


def run_kwok(models: dict[str, Path], rounds: int, work: Path) -> dict[str, list[dict[str, float]]]:
    from kubernetes import client

    from whisperop.cluster import kube as k
    from whisperop.core import crds
    from whisperop.testenv import binaries
    from whisperop.testenv.environment import Environment
    from whisperop.testenv.process import poll

    env = Environment(gpus=0)
    procs: list[subprocess.Popen[bytes]] = []
    workers: dict[str, subprocess.Popen[bytes]] = {}
    out: dict[str, list[dict[str, float]]] = {}
    try:
        k8s, s3env = env.start_kubernetes(), env.start_s3()
        kenv = dict(os.environ, KUBECONFIG=str(k8s.kubeconfig))
        subprocess.run([str(binaries.binary("kubectl")), "apply", "--server-side", "-f", str(REPO / "crds")],
                       check=True, capture_output=True, env=kenv)
        subprocess.run([str(binaries.binary("kubectl")), "wait", "--for=condition=Established", "--timeout=30s",
                        "crd", "--all"], check=True, capture_output=True, env=kenv)
        ns = f"scale-{uuid.uuid4().hex[:6]}"
        core = client.CoreV1Api(k8s.client)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        penv = dict(kenv, **s3env.env(), PYTHONUNBUFFERED="1", WHISPEROP_METRICS_PORT="0", LOG_FORMAT="json")
        penv.pop("WHISPEROP_RECONCILE_SECS", None)  # the operator's default, as on the node
        s3c = s3env.client()
        s3c.upload_file(str(REPO / "tests" / "data" / "jfk.wav"), s3env.bucket, "inputs/jfk.wav")
        log = open(work / "operator.log", "ab")
        procs.append(subprocess.Popen([sys.executable, "-m", "kopf", "run", "-m", "whisperop.operator.main",
                                       "--namespace", ns, "--standalone"], env=penv, stdout=log, stderr=subprocess.STDOUT))
        jobs, wms = k.jobs(k8s.client, ns), k.models(k8s.client, ns)

        def pods() -> list[Any]:
            return [p for p in core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/component=inference").items
                    if not p.metadata.deletion_timestamp]

        def running() -> Any:
            return next((p for p in pods() if p.status.phase == "Running"), None)

        def start_worker(pod: Any) -> None:
            # what the kubelet does for the real pod: start the container's command
            name = pod.metadata.name
            wlog = open(work / f"worker-{name}.log", "ab")
            workers[name] = subprocess.Popen(
                [sys.executable, "-m", "whisperop", "worker", "--port", "0"], stdout=wlog, stderr=subprocess.STDOUT,
                env=dict(penv, POD_NAME=name, POD_NAMESPACE=ns, WHISPEROP_MODEL_NAME="default", USE_GPU="false",
                         WHISPEROP_MODEL_CACHE=str(work / f"cache-{name}")))

        def at_zero() -> bool:
            for name, p in list(workers.items()):  # the pod is gone: its container stops
                if name not in {q.metadata.name for q in pods()} and p.poll() is None:
                    p.terminate()
                    p.wait(20)
            return not pods()

        def phase(name: str) -> str | None:
            return (jobs.get(name).get("status") or {}).get("phase")

        def model_exists() -> bool:
            try:
                wms.get("default")
                return True
            except k.NotFound:
                return False

        for label, path in models.items():
            key = f"models/{path.name}"
            s3c.upload_file(str(path), s3env.bucket, key)
            uri = f"s3://{s3env.bucket}/{key}"
            if model_exists():
                wms.delete("default")
                poll(lambda: at_zero() and not model_exists(), 120, "the previous model and its pods to go", 0.5)
            wms.create({"apiVersion": crds.API_VERSION, "kind": crds.MODEL_KIND, "metadata": {"name": "default"},
                        "spec": {"modelURI": uri, "resources": {"gpus": 0}, "idleTimeoutSeconds": IDLE_SECS}})
            out[label] = []
            for _ in range(rounds):
                r = timed_round(lambda n: jobs.create(job_body(f"s3://{s3env.bucket}/inputs/jfk.wav", n)), running,
                                phase, at_zero, on_pod=start_worker)
                print(json.dumps({"where": "kwok", "model": label, **r}), flush=True)
                out[label].append(r)
    finally:
        for p in procs + list(workers.values()):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        env.stop(remove=True)
    return out


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else round((s[len(s) // 2 - 1] + s[len(s) // 2]) / 2, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="base-q8_0,tiny")
    ap.add_argument("--only", choices=("node", "kwok"), default=None)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="node-scale-"))
    models = {m: model_file(m, work) for m in args.models.split(",")}
    load = os.getloadavg()
    result: dict[str, Any] = {"rounds": args.rounds, "idle_timeout_s": IDLE_SECS, "loadavg_start": load}
    if args.only != "kwok":
        result["node"] = run_node(models, args.rounds)
    if args.only != "node":
        result["kwok"] = run_kwok(models, args.rounds, work)
    result["loadavg_end"] = os.getloadavg()
    print()
    print(f"{'where':6} {'model':10} {'pod Running s':>14} {'job Running s':>14} {'Done s':>8}   (medians of {args.rounds})")
    for where in ("node", "kwok"):
        for label, rows in result.get(where, {}).items():
            print(f"{where:6} {label:10} {median([r['pod_running_s'] for r in rows]):14} "
                  f"{median([r['job_running_s'] for r in rows]):14} {median([r['done_s'] for r in rows]):8}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
