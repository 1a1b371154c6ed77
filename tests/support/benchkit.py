"""Shared plumbing of the API benchmarks in bench/api_*.py.

- a server to measure: ``--base-url`` (and ``--server-pid`` for CPU/RSS when it
  runs on this machine), or a ``whisperop serve`` started here with the tiny
  random-weight model (the API path is what is measured, not transcription);
- ``ProcSampler``: CPU and RSS of a process (and its children) sampled with psutil;
- percentiles, and the report: one JSON document and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]


def add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", help="measure this server instead of starting one")
    p.add_argument("--server-pid", type=int, help="pid of the --base-url server, for CPU/RSS (same machine only)")
    p.add_argument("--json-out", type=Path, help="also write the JSON report here")


@dataclass
class BenchServer:
    base_url: str
    pid: int | None
    _server: Any = None
    _tmp: Any = None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def bench_server(args: argparse.Namespace, name: str, **env: str) -> BenchServer:
    if args.base_url:
        return BenchServer(args.base_url.rstrip("/"), args.server_pid)
    from whisperop.modelstore.tiny import build_tiny_model

    from tests.support.server import ServerProcess

    tmp = tempfile.TemporaryDirectory(prefix=f"whisperop-bench-{name}-")
    d = Path(tmp.name)
    model = build_tiny_model(d / "ggml-tiny-test.bin")
    full_env = {
        "WHISPER_MODEL_PATH": str(model),
        "WHISPER_MODEL": "tiny-test",
        "IDLE_TIMEOUT_SECS": "0",
        "CHUNK_MAX_SECS": "20",
        "TEMPERATURE_INC": "0",  # the tiny model's noise would trigger every fallback
        **env,
    }
    srv = ServerProcess(name, d / "data", d / "logs", env=full_env)
    srv.start()
    print(f"[bench] started whisperop serve pid {srv.pid} at {srv.base_url} (log {srv.log_path})", file=sys.stderr)
    return BenchServer(srv.base_url, srv.pid, srv, tmp)


def ensure_ready(base_url: str, timeout: float = 300.0) -> None:
    from tests.support.client import ApiClient

    with ApiClient(base_url) as c:
        c.ensure_ready(timeout)


@dataclass
class Usage:
    wall_s: float
    cpu_s: float
    cpu_pct_mean: float
    rss_start_mb: float
    rss_peak_mb: float
    samples: int

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_start_mb

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_pct_mean": round(self.cpu_pct_mean, 1),
            "rss_start_mb": round(self.rss_start_mb, 1),
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "rss_growth_mb": round(self.rss_growth_mb, 1),
        }


class ProcSampler:
    """Samples CPU time and RSS of ``pid`` (plus children) every ``interval`` seconds."""

    def __init__(self, pid: int | None, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0
        self.start_rss = 0
        self.n = 0

    def _procs(self) -> list[psutil.Process]:
        p = psutil.Process(self.pid)
        try:
            return [p, *p.children(recursive=True)]
        except psutil.Error:
            return [p]

    def _cpu(self) -> float:
        total = 0.0
        for p in self._procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def _rss(self) -> int:
        total = 0
        for p in self._procs():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self) -> "ProcSampler":
        if self.pid is None:
            return self
        self.t0 = time.monotonic()
        self.cpu0 = self._cpu()
        self.start_rss = self.peak = self._rss()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._rss())
                self.n += 1
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        if self.pid is None:
            return
        self._stop.set()
        self._thread.join()
        self.wall = time.monotonic() - self.t0
        self.cpu = self._cpu() - self.cpu0
        self.peak = max(self.peak, self._rss())

    def usage(self) -> Usage | None:
        if self.pid is None:
            return None
        mb = 1024 * 1024
        return Usage(self.wall, self.cpu, 100.0 * self.cpu / self.wall if self.wall else 0.0, self.start_rss / mb, self.peak / mb, self.n)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def latency_summary(lat_s: list[float], wall_s: float) -> dict[str, float]:
    return {
        "n": len(lat_s),
        "per_s": round(len(lat_s) / wall_s, 1) if wall_s else 0.0,
        "p50_ms": round(1000 * pct(lat_s, 50), 2),
        "p99_ms": round(1000 * pct(lat_s, 99), 2),
        "mean_ms": round(1000 * statistics.fmean(lat_s), 2) if lat_s else 0.0,
        "max_ms": round(1000 * max(lat_s), 2) if lat_s else 0.0,
    }


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": psutil.cpu_count(),
        "load_avg": [round(x, 2) for x in psutil.getloadavg()],
        "platform": platform.platform(),
    }


def report(name: str, result: dict[str, Any], table: list[list[Any]], header: list[str], json_out: Path | None) -> None:
    doc = {"bench": name, "machine": machine(), **result}
    text = json.dumps(doc, indent=2)
    print(text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in table:
        print("| " + " | ".join(str(c) for c in row) + " |")
