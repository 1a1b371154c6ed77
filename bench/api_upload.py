"""Upload of a large file to POST /jobs: throughput and server peak RSS.

    python bench/api_upload.py [--size-mb 1024] [--base-url URL --server-pid PID] [--json-out FILE]

One run, the same bytes, the same client (httpx, streaming the file from disk
as multipart/form-data):

* baselines: a trivial loopback HTTP server (``http.server`` in its own
  process) that reads the request body in 1 MiB pieces and throws it away
  ("sink"), and the same writing it to a file beside the upload ("sink+disk",
  the floor for anything that stores the upload);
* ``whisperop serve`` (tiny model, loaded): POST /jobs with the file as
  ``audio``. The bytes are not audio, so the accepted job fails at decode
  right after; what is measured is the upload path (multipart parsing,
  streaming to the BlobStore).

Reported: MB/s of each, the ratio, and the peak RSS growth of each server
process during the upload (issue 3: an upload of 2 GB must not raise the
server's RSS by more than 100 MB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import benchkit as bk  # noqa: E402
from tests.support.server import free_port  # noqa: E402

SINK = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a):
            pass
        def do_POST(self):
            left = int(self.headers.get("Content-Length") or 0)
            out = open(sys.argv[2], "wb") if sys.argv[2] != "-" else None
            while left:
                got = self.rfile.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
                if out:
                    out.write(got)
            if out:
                out.close()
            body = b'{"job_id":"sink"}'
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def make_file(path: Path, size_mb: int) -> None:
    line = b"this is definitely not audio, just bytes in a file\n"
    block = (line * ((1 << 20) // len(line) + 1))[: 1 << 20]
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(block)


def upload(url: str, path: Path, pid: int | None) -> dict:
    with bk.ProcSampler(pid, interval=0.02) as smp, open(path, "rb") as f:
        t0 = time.perf_counter()
        with httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0)) as c:
            r = c.post(url, files={"audio": (path.name, f, "application/octet-stream")})
        wall = time.perf_counter() - t0
    size_mb = path.stat().st_size / (1 << 20)
    out = {"status": r.status_code, "body": r.text[:200], "wall_s": round(wall, 3), "mb_per_s": round(size_mb / wall, 1)}
    u = smp.usage()
    if u:
        out["server"] = u.as_dict()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--tmp-dir", type=Path, default=None, help="where to write the upload file")
    bk.add_server_args(p)
    args = p.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="whisperop-bench-upload-", dir=args.tmp_dir)
    path = Path(tmp.name) / "big.bin"
    make_file(path, args.size_mb)
    port, port_disk = free_port(), free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port), "-"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink_disk = subprocess.Popen(
        [sys.executable, "-c", SINK, str(port_disk), str(Path(tmp.name) / "sink-copy.bin")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    srv = bk.bench_server(args, "upload")
    try:
        sink_url = f"http://127.0.0.1:{port}"
        disk_url = f"http://127.0.0.1:{port_disk}"
        for u in (sink_url, disk_url):
            for _ in range(100):
                try:
                    httpx.get(u, timeout=1.0)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
        bk.ensure_ready(srv.base_url)
        # warm both paths with a small upload so the first big one measures steady state
        small = Path(tmp.name) / "small.bin"
        make_file(small, 1)
        upload(sink_url + "/jobs", small, None)
        upload(disk_url + "/jobs", small, None)
        upload(srv.base_url + "/jobs", small, None)

        base = upload(sink_url + "/jobs", path, sink.pid)
        print(f"[bench] baseline sink: {base}", file=sys.stderr)
        base_disk = upload(disk_url + "/jobs", path, sink_disk.pid)
        (Path(tmp.name) / "sink-copy.bin").unlink(missing_ok=True)
        print(f"[bench] baseline sink+disk: {base_disk}", file=sys.stderr)
        ours = upload(srv.base_url + "/jobs", path, srv.pid)
        print(f"[bench] whisperop: {ours}", file=sys.stderr)
        job_status = None
        if ours["status"] == 202:
            import json

            job_id = json.loads(ours["body"])["job_id"]
            with httpx.Client(base_url=srv.base_url, timeout=30.0) as c:
                for _ in range(300):
                    job_status = c.get(f"/jobs/{job_id}").json()["status"]
                    if job_status in ("done", "failed", "cancelled"):
                        break
                    time.sleep(0.2)
                if job_status not in ("done", "failed", "cancelled"):
                    c.delete(f"/jobs/{job_id}")

        ratio = round(ours["mb_per_s"] / base["mb_per_s"], 3) if base["mb_per_s"] else None
        ratio_disk = round(ours["mb_per_s"] / base_disk["mb_per_s"], 3) if base_disk["mb_per_s"] else None
        rows = []
        for label, r in (("loopback sink (baseline)", base), ("loopback sink + write to disk (baseline)", base_disk), ("whisperop POST /jobs", ours)):
            s = r.get("server") or {}
            rows.append([label, r["status"], args.size_mb, r["wall_s"], r["mb_per_s"], s.get("cpu_s"), s.get("rss_start_mb"), s.get("rss_peak_mb"), s.get("rss_growth_mb")])
        bk.report(
            "api_upload",
            {
                "size_mb": args.size_mb, "baseline": base, "baseline_disk": base_disk, "whisperop": ours,
                "job_status_after": job_status, "throughput_ratio": ratio, "throughput_ratio_vs_disk": ratio_disk,
            },
            rows,
            ["target", "HTTP", "MiB", "wall s", "MiB/s", "server CPU s", "RSS start MB", "RSS peak MB", "RSS growth MB"],
            args.json_out,
        )
        print()
        print(f"throughput ratio whisperop / sink: {ratio}; whisperop / sink+disk: {ratio_disk}")
        return 0
    finally:
        srv.close()
        for p_ in (sink, sink_disk):
            p_.terminate()
            p_.wait(timeout=10)
        tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
