"""The cluster facade (``whisperop serve --cluster``): submit throughput and SSE fan-out.

    python bench/facade_cluster.py [--jobs 100] [--subscribers 1000] [--submit 200] [--concurrency 8] [--json-out FILE]

Real control plane and MinIO (whisperop.testenv, or an external cluster via its
env vars), the facade as a subprocess. No operator and no worker: this measures
the facade and the API server, not transcription.

* **submit**: ``--submit`` POST /jobs of a 32 KiB WAV from ``--concurrency``
  client threads (QUEUE_WHILE_LOADING=true, so each becomes an S3 object plus a
  TranscriptionJob): jobs/s and latency p50/p99.
* **fan-out**: ``--subscribers`` SSE connections spread over ``--jobs`` of
  those jobs; then this script plays the worker for every job through the API
  server (status patches: Running, 5 progress steps, Done), the way
  ``whisperop worker`` writes them. Reported: time until every subscriber got
  its ``done``, events per subscriber, facade CPU seconds and RSS (psutil), and
  the API server's count of open TranscriptionJob watches
  (``apiserver_longrunning_requests{verb="WATCH",resource="transcriptionjobs"}``)
  before any subscriber, with all of them connected, and after — it must not
  grow with the subscribers (the facade keeps one watch per kind).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from operator_common import Bench, pct, wait_for  # type: ignore[import-not-found]


def small_wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 16000)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def watch_count(api: object) -> dict[str, float]:
    """Open WATCH requests on transcriptionjobs by scope (the facade's is namespaced; the
    controller-manager's garbage collector keeps a cluster-wide one), from the API server's metrics."""
    resp = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)  # type: ignore[attr-defined]
    text = resp[0].data.decode() if isinstance(resp, tuple) else resp.data.decode()
    n: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line and 'resource="transcriptionjobs"' in line:
            m = re.search(r'scope="([^"]*)"', line)
            scope = m.group(1) if m else "?"
            n[scope] = n.get(scope, 0.0) + float(line.rsplit(" ", 1)[1])
    return n


async def subscribe(url: str, job_id: str, out: dict[str, list[str]], connected: list[int]) -> None:
    host, port = re.match(r"http://([^:]+):(\d+)", url).groups()  # type: ignore[union-attr]
    r, w = await asyncio.open_connection(host, int(port))
    w.write(f"GET /jobs/{job_id}/stream HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await w.drain()
    events: list[str] = []
    first = True
    while True:
        line = await r.readline()
        if not line:
            break
        if first:
            connected[0] += 1
            first = False
        if line.startswith(b"event: "):
            events.append(line[7:].strip().decode())
            if events[-1] == "done":
                break
    out.setdefault(job_id, []).append(",".join(events))
    w.close()


def play_worker(res: object, name: str) -> None:
    from whisperop.cluster import kube

    t = kube.ts()
    res.patch_status(name, {"phase": "Running", "worker": "bench", "startTime": t, "heartbeatTime": t,  # type: ignore[attr-defined]
                            "chunk": 0, "chunksTotal": 5})
    for i in range(1, 6):
        res.patch_status(name, {"chunk": i, "chunksTotal": 5, "progress": i * 20, "durationSecs": 10.0})  # type: ignore[attr-defined]
    res.patch_status(name, {"phase": "Done", "completionTime": kube.ts(), "progress": 100})  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--submit", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds between the last connect and the first write")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    import psutil

    from whisperop.cluster import kube

    b = Bench()
    out: dict[str, object] = {}
    facade = None
    try:
        ns = b.namespace()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(b.tmp / "facade.log", "ab")
        facade = subprocess.Popen([sys.executable, "-m", "whisperop", "serve", "--cluster"], stdout=log, stderr=subprocess.STDOUT,
                                  env=b.proc_env(HOST="127.0.0.1", PORT=str(port), WHISPEROP_NAMESPACE=ns,
                                                 QUEUE_WHILE_LOADING="true", LOG_LEVEL="WARNING"))
        b.procs.append(facade)
        def healthy() -> bool:
            if facade.poll() is not None:
                raise RuntimeError((b.tmp / "facade.log").read_text()[-3000:])
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "facade", interval=0.5)
        proc = psutil.Process(facade.pid)
        audio = small_wav()

        # ── submit throughput
        lat: list[float] = []
        ids: list[str] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            with httpx.Client(timeout=60) as c:
                t0 = time.perf_counter()
                r = c.post(url + "/jobs", files={"audio": (f"a{i}.wav", audio, "audio/wav")})
                dt = time.perf_counter() - t0
                assert r.status_code == 202, r.text
                with lock:
                    lat.append(dt)
                    ids.append(r.json()["job_id"])

        cpu0 = sum(proc.cpu_times()[:2])
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.submit)))
        wall = time.perf_counter() - t0
        out["submit"] = {"jobs": args.submit, "concurrency": args.concurrency, "jobs_per_s": round(args.submit / wall, 1),
                         "p50_ms": round(pct(lat, 50) * 1000, 1), "p99_ms": round(pct(lat, 99) * 1000, 1),
                         "facade_cpu_s": round(sum(proc.cpu_times()[:2]) - cpu0, 2)}
        print(json.dumps(out["submit"]), flush=True)

        # ── SSE fan-out
        targets = ids[: args.jobs]
        res = kube.jobs(b.api, ns)
        watches_before = watch_count(b.api)
        rss_before = proc.memory_info().rss
        results: dict[str, list[str]] = {}
        connected = [0]

        async def fan_out() -> dict[str, float]:
            tasks = [asyncio.create_task(subscribe(url, targets[i % len(targets)], results, connected))
                     for i in range(args.subscribers)]
            t_wait = time.perf_counter()
            while connected[0] < args.subscribers and time.perf_counter() - t_wait < 120:
                await asyncio.sleep(0.1)
            # the HTTP status line comes before the stream subscribes on the server: give the
            # subscriptions time to settle (2 cores) before the first status write
            await asyncio.sleep(args.settle)
            figures = {"connected": connected[0], "watches_connected": await asyncio.to_thread(watch_count, b.api),
                       "rss_connected_mb": proc.memory_info().rss / 2**20}
            c0 = sum(proc.cpu_times()[:2])
            t1 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                await asyncio.gather(*[asyncio.get_running_loop().run_in_executor(pool, play_worker, res, n) for n in targets])
            t_written = time.perf_counter() - t1
            await asyncio.wait_for(asyncio.gather(*tasks), 300)
            figures.update(all_done_s=time.perf_counter() - t1, status_writes_s=t_written,
                           facade_cpu_s=sum(proc.cpu_times()[:2]) - c0)
            return figures

        f = asyncio.run(fan_out())
        seqs = [s for v in results.values() for s in v]
        complete = sum(1 for s in seqs if s.endswith("done") and s.count("progress") == 5)
        out["fanout"] = {
            "jobs": len(targets), "subscribers": args.subscribers, "connected": f["connected"],
            "subscribers_with_5_progress_and_done": complete,
            "progress_events_per_subscriber": {str(k): sum(1 for s in seqs if s.count("progress") == k) for k in range(7)},
            "subscribers_with_done": sum(1 for s in seqs if s.endswith("done")),
            "all_done_after_s": round(f["all_done_s"], 2), "status_writes_s": round(f["status_writes_s"], 2),
            "facade_cpu_s": round(f["facade_cpu_s"], 2),
            "facade_rss_mb_before": round(rss_before / 2**20, 1), "facade_rss_mb_connected": round(f["rss_connected_mb"], 1),
            "apiserver_tj_watches_before": watches_before, "apiserver_tj_watches_connected": f["watches_connected"],
            "apiserver_tj_watches_after": watch_count(b.api),
        }
        print(json.dumps(out["fanout"]), flush=True)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(out, indent=1))
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
