"""Submit latency and throughput of POST /jobs for small uploads, model loaded.

    python bench/api_submit.py [--n 200] [--concurrency 8] [--base-url URL] [--json-out FILE]

Starts ``whisperop serve`` with the tiny test model (or uses ``--base-url``),
loads the model, then measures in one run:

* baseline: ``GET /health`` latency, sequential and with ``--concurrency``
  clients (the server's cheapest request: HTTP + framework overhead);
* ``POST /jobs`` of a small WAV (1.5 s, ~48 KB), sequential and concurrent:
  202 latency p50/p99 and accepted jobs/s.

Ratios are against the baseline of the same run (the machine is noisy).
Submitted jobs are cancelled at the end. The worker transcribes accepted jobs
meanwhile, as it would in production, so it competes for the CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import audio as audio_mod  # noqa: E402
from tests.support import benchkit as bk  # noqa: E402


def run_requests(base_url: str, n: int, concurrency: int, make_request) -> tuple[list[float], float, int, list[str]]:
    """``n`` requests split over ``concurrency`` threads; (latencies, wall, errors, job ids)."""
    lat: list[float] = []
    ids: list[str] = []
    errors = 0
    lock = threading.Lock()
    per = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)

    def worker(count: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=base_url, timeout=60.0) as c:
            c.get("/health")  # open the connection before the clock starts
            barrier.wait()
            for _ in range(count):
                t0 = time.perf_counter()
                r = make_request(c)
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code in (200, 202):
                        lat.append(dt)
                        if r.status_code == 202:
                            ids.append(r.json()["job_id"])
                    else:
                        errors += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in per]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0, errors, ids


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="requests per measurement")
    p.add_argument("--concurrency", type=int, default=8)
    bk.add_server_args(p)
    args = p.parse_args()

    srv = bk.bench_server(args, "submit")
    tmp = tempfile.TemporaryDirectory(prefix="whisperop-bench-submit-")
    try:
        wav = audio_mod.tone_wav(Path(tmp.name) / "small.wav", 1.5)
        payload = wav.read_bytes()
        bk.ensure_ready(srv.base_url)

        def health(c: httpx.Client) -> httpx.Response:
            return c.get("/health")

        def submit(c: httpx.Client) -> httpx.Response:
            return c.post("/jobs", files={"audio": ("small.wav", payload, "audio/wav")}, data={"language": "en"})

        results: dict[str, dict] = {}
        all_ids: list[str] = []
        for label, fn, conc in (
            ("health_seq", health, 1),
            ("submit_seq", submit, 1),
            ("health_conc", health, args.concurrency),
            ("submit_conc", submit, args.concurrency),
        ):
            with bk.ProcSampler(srv.pid) as smp:
                lat, wall, errors, ids = run_requests(srv.base_url, args.n, conc, fn)
            all_ids += ids
            results[label] = {**bk.latency_summary(lat, wall), "concurrency": conc, "errors": errors}
            u = smp.usage()
            if u:
                results[label]["server"] = u.as_dict()
            print(f"[bench] {label}: {results[label]}", file=sys.stderr)

        # leave the server as we found it
        with httpx.Client(base_url=srv.base_url, timeout=30.0) as c:
            for jid in all_ids:
                try:
                    c.delete(f"/jobs/{jid}")
                except httpx.HTTPError:
                    pass

        def ratio(a: str, b: str, key: str) -> float:
            return round(results[a][key] / results[b][key], 2) if results[b][key] else float("nan")

        ratios = {
            "submit_vs_health_p50_seq": ratio("submit_seq", "health_seq", "p50_ms"),
            "submit_vs_health_p99_seq": ratio("submit_seq", "health_seq", "p99_ms"),
            "submit_vs_health_rate_conc": ratio("submit_conc", "health_conc", "per_s"),
        }
        table = [
            [k, v["concurrency"], v["n"], v["per_s"], v["p50_ms"], v["p99_ms"], v["errors"]]
            for k, v in results.items()
        ]
        bk.report(
            "api_submit",
            {"upload_bytes": len(payload), "results": results, "ratios": ratios},
            table,
            ["measurement", "clients", "requests", "req/s (jobs/s)", "p50 ms", "p99 ms", "errors"],
            args.json_out,
        )
        print()
        print(f"ratios: {ratios}")
        return 0
    finally:
        srv.close()
        tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
