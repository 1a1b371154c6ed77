"""SSE fan-out: many concurrent subscribers on one job's /jobs/{id}/stream.

    python bench/api_sse_fanout.py [--subscribers 500] [--base-url URL --server-pid PID] [--json-out FILE]

One run, two passes on the same ~10-chunk job (180 s of audio, tiny model):
a baseline with 1 subscriber, then ``--subscribers`` subscribers. In each pass
a long job holds the worker while the subscribers connect, so every one of
them sees the whole event sequence; then the holder is cancelled and the
measured job runs. Reported: server CPU seconds and peak RSS over the job
(psutil on the server pid), RSS growth from the connected-but-idle
subscribers, the job's wall time, the spread of ``done`` arrival across
subscribers, and whether every subscriber got the same events.

Clients are plain asyncio sockets (one coroutine each) so the client side
stays cheap on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import audio as audio_mod  # noqa: E402
from tests.support import benchkit as bk  # noqa: E402
from tests.support.sse import SSEParser  # noqa: E402


class Sub:
    def __init__(self) -> None:
        self.status = 0
        self.events: list[str] = []
        self.done_at: float | None = None
        self.error: str | None = None
        self.connected = asyncio.Event()


async def subscribe(host: str, port: int, path: str, sub: Sub, timeout: float) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
        sub.status = int(status_line.split()[1])
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        sub.connected.set()
        parser = SSEParser()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and sub.done_at is None:
            if chunked:
                size_line = await asyncio.wait_for(reader.readline(), deadline - time.monotonic())
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                data = data[:-2]
            else:
                data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
                if not data:
                    break
            for ev in parser.feed(data):
                sub.events.append(ev.event)
                if ev.event in ("done", "error"):
                    sub.done_at = time.monotonic()
        writer.close()
    except Exception as exc:  # noqa: BLE001 - counted in the report
        sub.error = repr(exc)
        sub.connected.set()


async def one_pass(base_url: str, pid: int | None, n: int, holder_audio: Path, job_audio: Path) -> dict:
    u = urlsplit(base_url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as c:

        async def submit(p: Path) -> str:
            r = await c.post("/jobs", files={"audio": (p.name, p.read_bytes(), "audio/wav")})
            assert r.status_code == 202, r.text
            return r.json()["job_id"]

        holder = await submit(holder_audio)
        for _ in range(600):
            if (await c.get(f"/jobs/{holder}")).json()["status"] == "running":
                break
            await asyncio.sleep(0.1)
        job = await submit(job_audio)

        idle = bk.ProcSampler(pid)
        idle.__enter__()
        subs = [Sub() for _ in range(n)]
        tasks = [asyncio.create_task(subscribe(host, port, f"/jobs/{job}/stream", s, 600)) for s in subs]
        t_conn = time.monotonic()
        await asyncio.gather(*(s.connected.wait() for s in subs))
        connect_s = time.monotonic() - t_conn
        await asyncio.sleep(1.0)  # let the server settle with everyone connected
        idle.__exit__()
        idle_usage = idle.usage()

        with bk.ProcSampler(pid) as smp:
            t0 = time.monotonic()
            r = await c.delete(f"/jobs/{holder}")
            assert r.status_code == 200, r.text
            await asyncio.gather(*tasks)
            wall = time.monotonic() - t0
        usage = smp.usage()
        final = (await c.get(f"/jobs/{job}")).json()

    ok = [s for s in subs if s.status == 200 and s.error is None and s.done_at is not None]
    seqs = {tuple(s.events) for s in ok}
    done_times = [s.done_at for s in ok if s.done_at]
    return {
        "subscribers": n,
        "ok": len(ok),
        "errors": sorted({s.error or f"status {s.status}" for s in subs if s not in ok})[:5],
        "identical_sequences": len(seqs) == 1,
        "events_per_subscriber": len(next(iter(seqs))) if len(seqs) == 1 else None,
        "job_status": final.get("status"),
        "connect_all_s": round(connect_s, 3),
        "job_wall_s": round(wall, 3),
        "done_spread_ms": round(1000 * (max(done_times) - min(done_times)), 1) if done_times else None,
        "server_idle_with_subscribers": idle_usage.as_dict() if idle_usage else None,
        "server_during_job": usage.as_dict() if usage else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=500)
    bk.add_server_args(p)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.subscribers * 2 + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    srv = bk.bench_server(args, "fanout")
    tmp = tempfile.TemporaryDirectory(prefix="whisperop-bench-fanout-")
    try:
        d = Path(tmp.name)
        holder = audio_mod.bursts_wav(d / "holder.wav", 1200.0, seed=2)
        job = audio_mod.bursts_wav(d / "job.wav", 180.0, seed=1)
        bk.ensure_ready(srv.base_url)
        base = asyncio.run(one_pass(srv.base_url, srv.pid, 1, holder, job))
        print(f"[bench] baseline: {base}", file=sys.stderr)
        fan = asyncio.run(one_pass(srv.base_url, srv.pid, args.subscribers, holder, job))
        print(f"[bench] fan-out: {fan}", file=sys.stderr)

        def g(r: dict, *ks: str):
            v = r
            for k in ks:
                v = (v or {}).get(k)
            return v

        def ratio(a, b):
            return round(a / b, 2) if a is not None and b else None

        extra_cpu = None
        if g(fan, "server_during_job", "cpu_s") is not None and g(base, "server_during_job", "cpu_s") is not None:
            extra_cpu = round(1000 * (g(fan, "server_during_job", "cpu_s") - g(base, "server_during_job", "cpu_s")) / max(1, args.subscribers - 1), 2)
        extra_rss = None
        if g(fan, "server_idle_with_subscribers", "rss_growth_mb") is not None:
            extra_rss = round(1024 * g(fan, "server_idle_with_subscribers", "rss_growth_mb") / args.subscribers, 1)
        ratios = {
            "cpu_s": ratio(g(fan, "server_during_job", "cpu_s"), g(base, "server_during_job", "cpu_s")),
            "job_wall_s": ratio(fan["job_wall_s"], base["job_wall_s"]),
            "rss_peak_mb": ratio(g(fan, "server_during_job", "rss_peak_mb"), g(base, "server_during_job", "rss_peak_mb")),
        }
        rows = []
        for label, r in (("1 subscriber (baseline)", base), (f"{args.subscribers} subscribers", fan)):
            rows.append([
                label, f"{r['ok']}/{r['subscribers']}", r["identical_sequences"], r["events_per_subscriber"], r["job_wall_s"],
                g(r, "server_during_job", "cpu_s"), g(r, "server_during_job", "cpu_pct_mean"),
                g(r, "server_during_job", "rss_peak_mb"), g(r, "server_idle_with_subscribers", "rss_growth_mb"),
                r["done_spread_ms"],
            ])
        bk.report(
            "api_sse_fanout",
            {"baseline": base, "fanout": fan, "ratios": ratios,
             "extra_server_cpu_ms_per_subscriber": extra_cpu, "server_rss_kb_per_connected_subscriber": extra_rss},
            rows,
            ["pass", "got done", "same events", "events each", "job wall s", "server CPU s", "server CPU %", "server peak RSS MB", "RSS growth on connect MB", "done spread ms"],
            args.json_out,
        )
        print()
        print(f"ratios (fan-out / baseline): {ratios}")
        print(f"extra server CPU per subscriber over the job: {extra_cpu} ms; RSS per connected subscriber: {extra_rss} KB")
        return 0
    finally:
        srv.close()
        tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
