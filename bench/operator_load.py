"""Operator CPU and RSS with many TranscriptionJobs.

    python bench/operator_load.py [--sizes 1000,10000] [--steady-secs 30]

For each N, in a fresh namespace: N jobs are created for a model whose pod runs
no worker (so they stay Queued), with the operator stopped; then the operator
starts and we measure

* catch-up: wall time and operator CPU seconds until all N are accepted
  (finalizer + Queued: 2 writes each) and the model reports queueDepth = N;
* steady state: after ``--settle-secs``, operator CPU % and RSS over
  ``--steady-secs`` with nothing changing (timers and watches only);
* restart: a second operator start over the same N accepted jobs (no writes
  needed): time and CPU until its first reconcile reports queueDepth = N,
  then its RSS.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
from operator_common import Bench, run_sizes, wait_for


def cpu_of(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def run_size(b: Bench, n: int, steady: float, settle: float = 30.0) -> dict:
    from whisperop.cluster import kube

    ns = b.namespace()
    res = kube.jobs(b.api, ns)
    b.create_model(ns, "backlog", maxReplicas=1, idleTimeoutSeconds=600)
    body = lambda i: {"apiVersion": "whisperop.io/v1alpha1", "kind": "TranscriptionJob",  # noqa: E731
                      "metadata": {"name": f"j-{i:06d}"}, "spec": {"audio": "s3://bench/a.wav", "model": "backlog"}}
    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: res.create(body(i)), range(n)))
    create_s = time.time() - t0

    def depth() -> int:
        return int((kube.models(b.api, ns).get("backlog").get("status") or {}).get("queueDepth") or 0)

    op = b.start_operator(ns, f"load-{n}")
    ps = psutil.Process(op.pid)
    t0 = time.time()
    wait_for(lambda: depth() == n, 3600, f"{n} accepted", interval=1.0)
    catch_wall = time.time() - t0
    catch_cpu = cpu_of(ps)
    rss_peak = ps.memory_info().rss
    time.sleep(settle)  # let the tail of kopf's event processing finish
    c0, s0 = cpu_of(ps), time.time()
    samples = []
    while time.time() - s0 < steady:
        time.sleep(1)
        samples.append(ps.memory_info().rss)
    steady_cpu_pct = 100 * (cpu_of(ps) - c0) / (time.time() - s0)
    rss_steady = max(samples)
    b.stop(op)

    # restart over accepted jobs: reset the stored depth so we see the new operator's first count
    kube.models(b.api, ns).patch_status("backlog", {"queueDepth": 0})
    op2 = b.start_operator(ns, f"load-{n}-restart")
    ps2 = psutil.Process(op2.pid)
    t0 = time.time()
    wait_for(lambda: depth() == n, 3600, "restart resync", interval=0.5)
    restart_wall = time.time() - t0
    restart_cpu = cpu_of(ps2)
    time.sleep(3)
    restart_rss = ps2.memory_info().rss
    b.stop(op2)
    b.delete_namespace(ns)
    mb = 1024 * 1024
    return {
        "jobs": n, "create_s": round(create_s, 1),
        "catchup_wall_s": round(catch_wall, 1), "catchup_cpu_s": round(catch_cpu, 1),
        "catchup_rss_mb": round(rss_peak / mb, 1),
        "steady_cpu_pct": round(steady_cpu_pct, 2), "steady_rss_mb": round(rss_steady / mb, 1),
        "restart_wall_s": round(restart_wall, 1), "restart_cpu_s": round(restart_cpu, 1),
        "restart_rss_mb": round(restart_rss / mb, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--steady-secs", type=float, default=30)
    ap.add_argument("--settle-secs", type=float, default=30)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    run_sizes(args.sizes, lambda b, n: run_size(b, n, args.steady_secs, args.settle_secs), args.json_out)


if __name__ == "__main__":
    main()
