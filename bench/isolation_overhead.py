"""What ``ENGINE_ISOLATION=process`` costs on the CPU: in-process engine against
the isolated one (whisper.cpp in a child process), same weights, same files.

    python bench/isolation_overhead.py --model ggml-base-q8_0.bin --jfk jfk.wav [--rounds 3] [--out FILE.json]

Per round and mode (interleaved: off, process, off, process… so machine load
drifts hit both): the load (constructor returns: first stream loaded and
warmed up), jfk.wav (11 s) and a 94 s file (jfk.wav 8 times with 0.8 s
pauses), wall seconds of ``transcribe_file``, and the CPU seconds the work
took (this process + the engine's child: the cost on a busy machine, where
wall time mostly measures the neighbours). Reported: the minimum and the
median per mode and the overhead of ``process`` in percent (on a shared,
loaded machine the minimum is the least disturbed figure).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from whisperop.core.settings import EngineSettings
from whisperop.inference.engine import TranscribeRequest
from whisperop.inference.isolated import make_engine


def long_wav(jfk: Path, repeats: int, out: Path) -> Path:
    with wave.open(str(jfk)) as w:
        params = w.getparams()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    gap = np.zeros(int(params.framerate * 0.8), dtype=np.int16)
    with wave.open(str(out), "wb") as w:
        w.setparams(params)
        w.writeframes(np.concatenate([np.concatenate([pcm, gap]) for _ in range(repeats)]).tobytes())
    return out


def cpu_secs(eng: object | None) -> float:
    """CPU seconds (user + system, all threads) of this process plus the engine's child, if any:
    unlike wall time, hardly moved by other processes competing for the cores."""
    total = time.process_time()
    pid = getattr(eng, "child_pid", None)
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def one(model: Path, mode: str, files: dict[str, Path]) -> dict[str, float]:
    settings = EngineSettings(ENGINE_ISOLATION=mode, USE_GPU=False)  # type: ignore[call-arg]
    c0, t0 = cpu_secs(None), time.perf_counter()
    eng = make_engine(model, settings)
    out = {"load": time.perf_counter() - t0, "load_cpu": cpu_secs(eng) - c0}
    try:
        for name, path in files.items():
            c1, t1 = cpu_secs(eng), time.perf_counter()
            eng.transcribe_file(path, TranscribeRequest(language="en"))
            out[name] = time.perf_counter() - t1
            out[f"{name}_cpu"] = cpu_secs(eng) - c1
    finally:
        eng.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--jfk", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    files = {"jfk_11s": args.jfk, "speech_94s": long_wav(args.jfk, 8, Path(tempfile.mkdtemp()) / "jfk8.wav")}
    runs: dict[str, list[dict[str, float]]] = {"off": [], "process": []}
    for r in range(args.rounds):
        for mode in ("off", "process"):
            res = one(args.model, mode, files)
            runs[mode].append(res)
            print(r, mode, {k: round(v, 3) for k, v in res.items()}, flush=True)
    med = {mode: {k: round(statistics.median(x[k] for x in rs), 3) for k in rs[0]} for mode, rs in runs.items()}
    best = {mode: {k: round(min(x[k] for x in rs), 3) for k in rs[0]} for mode, rs in runs.items()}
    report = {"min_secs": best, "median_secs": med,
              "overhead_pct_min": {k: round(100 * (best["process"][k] / best["off"][k] - 1), 1) for k in best["off"]},
              "overhead_pct_median": {k: round(100 * (med["process"][k] / med["off"][k] - 1), 1) for k in med["off"]},
              "runs": runs}
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
