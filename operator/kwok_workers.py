"""``whisperop operator kwok-workers``: play the kubelet for kwok inference pods, by hand.

kwok's nodes only pretend to run pods: an inference pod becomes Running and
Ready, but no ``whisperop worker`` runs in it, so no job is ever claimed. For
a cluster brought up by hand (docs/testing.md, "By hand"), this command starts
one local ``whisperop worker`` process per Running inference pod of the
namespace (the pod's name as ``POD_NAME``, its model as
``WHISPEROP_MODEL_NAME``, the container's entrypoint run directly, as the
cluster tests do) and stops it when the pod goes. The workers inherit this
process's environment (``KUBECONFIG``, ``WHISPEROP_S3_*``), run on the CPU and
log to ``--log-dir``. Never for a real cluster: there the kubelet runs them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("whisperop.operator.kwok_workers")


def inference_pods(core: Any, namespace: str, model: str | None) -> dict[str, str]:
    """Running, not deleted inference pods → their model."""
    from whisperop.core import crds

    selector = f"{crds.LABEL_COMPONENT}=inference" + (f",{crds.LABEL_MODEL}={model}" if model else "")
    out = {}
    for p in core.list_namespaced_pod(namespace, label_selector=selector).items:
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp:
            out[p.metadata.name] = (p.metadata.labels or {}).get(crds.LABEL_MODEL, "default")
    return out


def worker_env(namespace: str, pod: str, model: str, cache: Path) -> dict[str, str]:
    return {**os.environ, "POD_NAME": pod, "POD_NAMESPACE": namespace, "WHISPEROP_MODEL_NAME": model,
            "USE_GPU": os.environ.get("USE_GPU", "false"), "WHISPEROP_MODEL_CACHE": str(cache),
            "PYTHONUNBUFFERED": "1"}


def run(namespace: str, model: str | None, log_dir: Path, interval: float = 0.5, once: bool = False) -> None:
    from kubernetes import client

    from whisperop.cluster import kube

    core = client.CoreV1Api(kube.api_client())
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop:
            try:
                pods = inference_pods(core, namespace, model)
            except Exception as exc:
                log.warning("could not list pods", extra={"error": str(exc)})
                pods = None
            if pods is not None:
                for pod, m in pods.items():
                    if pod not in procs or procs[pod].poll() is not None:
                        out = open(log_dir / f"worker-{pod}.log", "ab")
                        procs[pod] = subprocess.Popen([sys.executable, "-m", "whisperop", "worker", "--port", "0"],
                                                      env=worker_env(namespace, pod, m, log_dir / "cache"),
                                                      stdout=out, stderr=subprocess.STDOUT)
                        log.info("worker started", extra={"pod": pod, "model": m, "pid": procs[pod].pid,
                                                          "log": str(log_dir / f"worker-{pod}.log")})
                for pod, p in list(procs.items()):
                    if pod not in pods and p.poll() is None:
                        p.terminate()
                        log.info("worker stopped (pod gone)", extra={"pod": pod, "pid": p.pid})
                        del procs[pod]
            if once:
                break
            time.sleep(interval)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def cmd_kwok_workers(args: argparse.Namespace) -> int:
    from whisperop.core.logs import setup_logging

    setup_logging()
    run(args.namespace, args.model, Path(args.log_dir))
    return 0
