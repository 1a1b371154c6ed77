"""Scale from zero: TranscriptionJob created → model ready → job Running, on kwok.

    WHISPEROP_RECONCILE_SECS=5 python bench/operator_scale_from_zero.py [--rounds 5] [--json out.json]

One namespace, the operator with the given reconcile period (5 s is its
default), a WhisperModel at zero replicas (tiny random-weight model, idle
timeout 300 s). Each round creates one job and records, on this process's
clock (the worker runs on the same machine):

* ``scaled_s``: job created → ``status.replicas`` ≥ 1 (the operator's scale-up);
* ``loaded_s``: job created → the worker's ``loadedAt`` (kwok scheduling, the
  worker process's start and its load: the same before and after);
* ``ready_s``: job created → ``status.state`` ready seen by a watch;
* ``ready_lag_s``: the worker's ``loadedAt`` → ``status.state`` ready (what the
  operator adds; the rest is kwok scheduling, the worker's start and its load);
* ``running_s``: job created → the job ``Running``.

Then the model is unloaded (demand annotation) and the round waits for the
pods to go. Inference pods are kwok pods; a worker is ``whisperop worker``
started as a local process with the pod's name (as tests/operator does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

import psutil
from operator_common import Bench, wait_for


class PodWorkers:
    """A local ``whisperop worker`` per Running kwok pod of the model (plays kubelet)."""

    def __init__(self, b: Bench, ns: str, model_path: str) -> None:
        self.b, self.ns = b, ns
        self.env = b.proc_env(POD_NAMESPACE=ns, WHISPEROP_MODEL_NAME="default", USE_GPU="false", WHISPER_THREADS="1",
                              WHISPEROP_MODEL_CACHE=str(b.tmp / "cache"), WHISPEROP_OUTBOUND_ALLOW="127.0.0.1")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                running = set(self.b.running_pods(self.ns))
            except Exception:
                continue
            for pod in running - set(self.procs):
                log = open(self.b.tmp / f"worker-{pod}.log", "ab")
                self.procs[pod] = subprocess.Popen([sys.executable, "-m", "whisperop", "worker", "--port", "0"],
                                                   env={**self.env, "POD_NAME": pod}, stdout=log,
                                                   stderr=subprocess.STDOUT)
            for pod, p in list(self.procs.items()):
                if pod not in running and p.poll() is None:
                    p.terminate()

    def close(self) -> None:
        self.stop.set()
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(20)


class Watch:
    """First time (this clock) each model state and each job phase is seen."""

    def __init__(self, b: Bench, ns: str, plural: str) -> None:
        self.b, self.ns, self.plural = b, ns, plural
        self.events: list[tuple[float, str, str, dict[str, Any]]] = []  # (t, name, state/phase, status)
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        from kubernetes import client, watch

        co = client.CustomObjectsApi(self.b.api)
        while True:
            try:
                for ev in watch.Watch().stream(co.list_namespaced_custom_object, "whisperop.io", "v1alpha1", self.ns,
                                               self.plural, timeout_seconds=60):
                    obj = ev["object"]
                    st = obj.get("status") or {}
                    val = st.get("state") or st.get("phase")
                    if val:
                        with self.lock:
                            self.events.append((time.time(), obj["metadata"]["name"], val, st))
            except Exception:
                time.sleep(0.2)

    def first(self, name: str, val: str, after: float) -> tuple[float, dict[str, Any]] | None:
        with self.lock:
            return next(((t, st) for t, n, v, st in self.events if n == name and v == val and t >= after), None)

    def first_where(self, name: str, pred: Any, after: float) -> tuple[float, dict[str, Any]] | None:
        with self.lock:
            return next(((t, st) for t, n, _, st in self.events if n == name and pred(st) and t >= after), None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from whisperop.cluster import kube
    from whisperop.modelstore.tiny import build_tiny_model
    from whisperop.operator import scaling

    b = Bench()
    ns = b.namespace()
    model = build_tiny_model(b.tmp / "models" / "ggml-tiny-test.bin")
    wav = b.tmp / "tone.wav"
    from tests.support.audio import tone_wav

    tone_wav(wav, 1.5)
    key = f"inputs/{ns}/tone.wav"
    b.s3.client().upload_file(str(wav), b.s3.bucket, key)
    op = b.start_operator(ns)
    b.create_model(ns, "default", modelURI=str(model), minReplicas=0, maxReplicas=1, idleTimeoutSeconds=300)
    models, jobs = Watch(b, ns, "whispermodels"), Watch(b, ns, "transcriptionjobs")
    workers = PodWorkers(b, ns, str(model))
    rounds = []
    try:
        wait_for(lambda: (kube.models(b.api, ns).get("default").get("status") or {}).get("state") == "unloaded", 60,
                 "model unloaded")
        for i in range(args.rounds):
            name = f"sfz-{i:02d}"
            t0 = time.time()
            kube.jobs(b.api, ns).create({"apiVersion": "whisperop.io/v1alpha1", "kind": "TranscriptionJob",
                                         "metadata": {"name": name},
                                         "spec": {"audio": f"s3://{b.s3.bucket}/{key}", "model": "default"}})
            t_ready, st = wait_for(lambda: models.first("default", "ready", t0), 120, "model ready")
            t_scaled, _ = wait_for(lambda: models.first_where("default", lambda s: (s.get("replicas") or 0) >= 1, t0),
                                   10, "replicas 1")
            t_run, _ = wait_for(lambda: jobs.first(name, "Running", t0) or jobs.first(name, "Done", t0), 120, "job running")
            loaded = datetime.fromisoformat(st["loadedAt"].replace("Z", "+00:00")).timestamp()
            r = {"round": i, "scaled_s": round(t_scaled - t0, 3), "loaded_s": round(loaded - t0, 3),
                 "ready_s": round(t_ready - t0, 3), "ready_lag_s": round(t_ready - loaded, 3),
                 "running_s": round(t_run - t0, 3)}
            print(json.dumps(r), flush=True)
            rounds.append(r)
            wait_for(lambda: jobs.first(name, "Done", t0), 120, "job done")
            kube.models(b.api, ns).patch("default", scaling.demand_annotation("unload", datetime.now(timezone.utc)))
            wait_for(lambda: not b.running_pods(ns), 120, "pods gone")
            wait_for(lambda: (kube.models(b.api, ns).get("default").get("status") or {}).get("state") == "unloaded",
                     60, "model unloaded")
            time.sleep(1)
    finally:
        try:
            t = psutil.Process(op.pid).cpu_times()
            op_cpu = t.user + t.system
        except psutil.Error:
            op_cpu = float("nan")
        workers.close()
        b.stop(op)
        b.delete_namespace(ns)
        b.close()
    summary: dict[str, Any] = {k: {"median": round(statistics.median(r[k] for r in rounds), 3), "max": max(r[k] for r in rounds)}
               for k in ("scaled_s", "loaded_s", "ready_s", "ready_lag_s", "running_s")}
    summary["operator_cpu_s"] = round(op_cpu, 2)
    print(json.dumps({"summary": summary}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
