"""Dispatch latency: TranscriptionJob created → claimed by a Ready, idle worker.

    python bench/operator_dispatch.py [--sizes 1,100,1000] [--probes 20] [--workers 2]

For each N, in a fresh namespace with the operator running:

* **probe**: N jobs wait in the queue (model ``backlog``: its pod runs no
  worker), then ``--probes`` jobs are created one at a time for model
  ``default``, whose claim-only workers are idle; latency = claim − create of
  each probe. This is the dispatch latency with N jobs queued.
* **burst**: N jobs created at once for ``default`` (8 client threads) with
  ``--workers`` claim-only workers draining; per-job create → claim latency and
  the drain rate (includes waiting behind earlier jobs: a throughput figure).

Clock: creation and claim times are taken in this process (same clock).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from operator_common import Bench, ClaimOnlyWorker, pct, run_sizes, wait_for


def job_body(name: str, model: str) -> dict:
    return {"apiVersion": "whisperop.io/v1alpha1", "kind": "TranscriptionJob", "metadata": {"name": name},
            "spec": {"audio": "s3://bench/audio.wav", "model": model}}


def run_size(b: Bench, n: int, probes: int, workers: int) -> dict:
    from whisperop.cluster import kube

    ns = b.namespace()
    op = b.start_operator(ns, f"operator-{n}")
    res = kube.jobs(b.api, ns)
    b.create_model(ns, "default", maxReplicas=workers, minReplicas=workers, idleTimeoutSeconds=600)
    b.create_model(ns, "backlog", maxReplicas=1, idleTimeoutSeconds=600)
    pods = wait_for(lambda: (p := b.running_pods(ns)) and len(p) == workers and p, 60, "worker pods")
    ws = [ClaimOnlyWorker(b.api, ns, pod) for pod in pods]
    for w in ws:
        w.start()

    # backlog of N queued jobs for the other model
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: res.create(job_body(f"backlog-{i:05d}", "backlog")), range(n)))
    wait_for(lambda: (kube.models(b.api, ns).get("backlog").get("status") or {}).get("queueDepth") == n, 300,
             f"{n} backlog jobs queued")

    lat = []
    for i in range(probes):
        name = f"probe-{i:03d}"
        t0 = time.time()
        res.create(job_body(name, "default"))
        wait_for(lambda: any(name in w.claimed for w in ws), 60, f"claim of {name}", interval=0.005)
        lat.append(next(w.claimed[name] for w in ws if name in w.claimed) - t0)
        time.sleep(0.2)

    # burst of N jobs for the workers' model
    created: dict[str, float] = {}

    def create(i: int) -> None:
        name = f"burst-{i:05d}"
        t = time.time()
        res.create(job_body(name, "default"))
        created[name] = t

    t_start = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))
    t_created = time.time()
    wait_for(lambda: sum(1 for w in ws for k in w.claimed if k.startswith("burst-")) >= n, 600, "burst drained",
             interval=0.05)
    claimed = {k: v for w in ws for k, v in w.claimed.items() if k.startswith("burst-")}
    burst = [claimed[k] - created[k] for k in created]
    drain = max(claimed.values()) - t_start
    for w in ws:
        w.stop.set()
        w.cache.stop.set()
    b.stop(op)
    b.delete_namespace(ns)
    return {
        "queued": n,
        "probe_p50_ms": round(pct(lat, 50) * 1000, 1), "probe_p99_ms": round(pct(lat, 99) * 1000, 1),
        "probe_max_ms": round(max(lat) * 1000, 1),
        "burst_p50_ms": round(pct(burst, 50) * 1000, 1), "burst_p99_ms": round(pct(burst, 99) * 1000, 1),
        "burst_create_s": round(t_created - t_start, 2), "burst_drain_s": round(drain, 2),
        "burst_jobs_per_s": round(n / drain, 1) if drain > 0 else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,100,1000")
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    run_sizes(args.sizes, lambda b, n: run_size(b, n, args.probes, args.workers), args.json_out)


if __name__ == "__main__":
    main()
