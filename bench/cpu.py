"""CPU benchmark of the transcription engine against its baselines, one run.

    python bench/cpu.py [--minutes 10] [--threads 2] [--out bench/results/cpu.json]

Measures, on the same audio and threads, × real time, word error rate and
peak RSS for:

* ``ours-<precision>``: the engine end to end (decode + chunk + whisper.cpp +
  normalise), the path every job takes;
* ``pywhispercpp-<precision>``: pywhispercpp's ``Model.transcribe`` called
  directly on the same PCM in one call (the floor our overhead is measured on);
* modifiers on ``ours-…``/``pywhispercpp-…`` (any order): ``-pN`` N parallel
  decode streams with the threads split between them (``ours-q8_0-p2``),
  ``-fa`` / ``-nofa`` flash attention on / off (unset: the engine's default,
  on; pywhispercpp's, off), ``-native`` the pywhispercpp build in
  ``--native-site`` (e.g. a ``GGML_NATIVE=ON`` build with AVX-512) instead of
  the installed one;
* ``ours-ct2-<compute>``: the engine end to end with ``ENGINE=ctranslate2``
  (the same pipeline; CTranslate2 decodes the ≤ 30 s windows in batches) on
  the ``base-ct2`` directory; ``-bN`` sets the batch size (``CT2_BATCH_SIZE``);
  its ``load_secs`` is the cold start (load + warm-up, ready to serve);
  ``-jN`` is the many-jobs mode: N jobs of the same audio at once on one
  engine (threads, as ``JOB_CONCURRENCY=N`` runs them), their windows in
  shared batches — × real time counts the audio of all N, the row carries the
  batcher's counts (``batches``, ``multi_job_batches``);
  ``-nowords`` turns word timestamps off (``WORD_TIMESTAMPS=false``; on by
  default, as in every ``ours`` row);
* ``faster-whisper-<compute>``: CTranslate2 on the *source* weights of our
  converted model (int8 and float32), greedy, no VAD, no conditioning on
  previous text (our chunks are independent too); ``-words`` with
  ``word_timestamps=True`` (what our rows compute by default).

Each configuration runs in a fresh subprocess so its peak RSS is its own, and
figures are reported as ratios against baselines measured in the same run
(this machine is noisy). A decode-and-chunk-only pass over a 2-hour file
measures the memory of the streaming decoder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JFK = REPO / "tests" / "data" / "jfk.wav"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


# ── one configuration (runs in its own process) ────────────────────────────


def modifiers(kind: str) -> tuple[str, dict]:
    """``ours-q8_0-p2-fa-native`` → (``ours-q8_0``, {parallelism: 2, fa: True, native: True})."""
    parts = kind.split("-")
    mods: dict = {"parallelism": 1, "fa": None, "native": False, "batch": 0, "words": None, "jobs": 1}
    while len(parts) > 2 and (parts[-1] in ("fa", "nofa", "native", "words", "nowords") or re.fullmatch(r"[pbj]\d+", parts[-1])):
        last = parts.pop()
        if last in ("words", "nowords"):
            mods["words"] = last == "words"
        elif last.startswith("j"):
            mods["jobs"] = int(last[1:])
        elif last.startswith("b"):
            mods["batch"] = int(last[1:])
        elif last.startswith("p"):
            mods["parallelism"] = int(last[1:])
        elif last in ("fa", "nofa"):
            mods["fa"] = last == "fa"
        else:
            mods[last] = True
    return "-".join(parts), mods


def run_one(kind: str, audio: Path, threads: int, beam: int) -> dict:
    from whisperop.core.settings import EngineSettings
    from whisperop.modelstore.cache import resolve_model

    cache = EngineSettings().model_cache_dir
    t_start = time.perf_counter()
    base_kind, mods = modifiers(kind)
    if kind.startswith("ours-ct2-"):
        from whisperop.inference.engine import TranscribeRequest, create_engine

        ct2_engine = create_engine(resolve_model("base-ct2", cache), EngineSettings(
            USE_GPU=False, ENGINE="ctranslate2", WHISPER_THREADS=threads, BEAM_SIZE=beam,
            CT2_COMPUTE_TYPE=base_kind.removeprefix("ours-ct2-"), CT2_BATCH_SIZE=mods["batch"],
            WORD_TIMESTAMPS=mods["words"] is not False))
        load = time.perf_counter() - t_start
        from concurrent.futures import ThreadPoolExecutor

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=mods["jobs"]) as pool:  # -jN: N jobs at once, shared batches
            results = list(pool.map(lambda _: ct2_engine.transcribe_file(audio, TranscribeRequest()), range(mods["jobs"])))
        wall = time.perf_counter() - t0
        result = results[0]
        text = " ".join(s.text for s in result.segments)
        stats = ct2_engine.batch_stats  # type: ignore[attr-defined]
        extra = {"chunks": result.chunks, "language": result.language, "jobs": mods["jobs"],
                 "engine_load_secs": ct2_engine.load_secs, "engine_warmup_secs": ct2_engine.warmup_secs,
                 "batches": stats.batches, "multi_job_batches": stats.multi_job_batches,
                 "same_text_all_jobs": all(" ".join(s.text for s in r.segments) == text for r in results)}
    elif kind.startswith("ours-"):
        from whisperop.inference.engine import TranscribeRequest, WhisperEngine

        model = resolve_model("base" if base_kind.endswith("f16") else "base-q8_0", cache)
        engine = WhisperEngine(model, EngineSettings(USE_GPU=False, WHISPER_THREADS=threads, BEAM_SIZE=beam,
                                                     PARALLELISM=mods["parallelism"], FLASH_ATTN=mods["fa"]))
        engine.wait_all_loaded()
        load = time.perf_counter() - t_start
        t0 = time.perf_counter()
        result = engine.transcribe_file(audio, TranscribeRequest())
        wall = time.perf_counter() - t0
        text = " ".join(s.text for s in result.segments)
        extra = {"chunks": result.chunks, "language": result.language}
    elif kind.startswith("pywhispercpp-"):
        from pywhispercpp.model import Model

        from whisperop.inference.audio import decode_audio

        model = resolve_model("base" if base_kind.endswith("f16") else "base-q8_0", cache)
        with decode_audio(audio) as decoded:
            pcm = decoded.read()
        params = dict(n_threads=threads, print_progress=False, print_realtime=False, language="", no_context=True,
                      temperature_inc=0.2, context_params={"use_gpu": False, "flash_attn": bool(mods["fa"])})
        if beam > 1:
            m = Model(str(model), params_sampling_strategy=1, beam_search={"beam_size": beam, "patience": -1.0}, redirect_whispercpp_logs_to=None, **params)
        else:
            m = Model(str(model), redirect_whispercpp_logs_to=None, **params)
        load = time.perf_counter() - t_start
        t0 = time.perf_counter()
        segments = m.transcribe(pcm)
        wall = time.perf_counter() - t0
        text = " ".join(s.text for s in segments)
        extra = {}
    elif kind.startswith("faster-whisper-"):
        from faster_whisper import WhisperModel

        ct2 = resolve_model("base-ct2", cache)  # the same CTranslate2 directory ENGINE=ctranslate2 loads
        compute = base_kind.removeprefix("faster-whisper-")
        model = WhisperModel(str(ct2), device="cpu", compute_type=compute, cpu_threads=threads)
        load = time.perf_counter() - t_start
        t0 = time.perf_counter()
        segments, info = model.transcribe(str(audio), beam_size=beam, vad_filter=False, condition_on_previous_text=False,
                                          word_timestamps=bool(mods["words"]))
        text = " ".join(s.text for s in segments)
        wall = time.perf_counter() - t0
        extra = {"language": info.language}
    elif kind == "decode-chunk":
        from whisperop.inference.audio import decode_audio
        from whisperop.inference.chunking import plan_chunks

        load = 0.0
        t0 = time.perf_counter()
        with decode_audio(audio) as decoded:
            chunks = plan_chunks(decoded.frame_db, decoded.n_samples)
            for c in chunks:  # read every chunk back, as transcription would
                decoded.read(c.start, c.end)
        wall = time.perf_counter() - t0
        text = ""
        extra = {"chunks": len(chunks)}
    else:
        raise SystemExit(f"unknown configuration {kind}")
    import _pywhispercpp

    return {"kind": kind, "load_secs": load, "wall_secs": wall, "text": text, "whisper_system_info": _pywhispercpp.whisper_print_system_info(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


# ── orchestration ──────────────────────────────────────────────────────────


def spawn(kind: str, audio: Path, threads: int, beam: int, native_site: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--audio", str(audio), "--threads", str(threads), "--beam", str(beam)]
    env = dict(os.environ)
    if modifiers(kind)[1]["native"]:
        if native_site is None:
            return {"kind": kind, "error": "a -native configuration needs --native-site"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(native_site), env.get("PYTHONPATH", "")) if p)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"kind": kind, "error": out.stderr.strip()[-1500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_long_speech(minutes: float, dest: Path) -> tuple[Path, str, float]:
    from whisperop.testing.speech import build_speech, english_sentences

    passes = max(1, round(minutes / 5))
    voices = ("en-us", "en-gb", "en-us+m3", "en-gb+f3")[:passes] if passes <= 4 else ("en-us",) * passes
    speech = build_speech(english_sentences(), voices=voices, no_pause_every=7, seed=3)
    return speech.write(dest), speech.text, speech.duration_secs


def make_two_hours(src: Path, dest: Path, hours: float) -> Path:
    """Loop ``src`` to ``hours`` and encode as MP3 (a realistic long upload)."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(src),
                    "-t", str(int(hours * 3600)), "-ac", "1", "-ar", "16000", "-b:a", "32k", str(dest)], check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--audio", type=Path, default=JFK)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--long-hours", type=float, default=2.0)
    ap.add_argument("--configs", default="ours-q8_0-fa,pywhispercpp-q8_0-fa,ours-q8_0-nofa,pywhispercpp-q8_0-nofa,ours-f16-fa,pywhispercpp-f16-fa,faster-whisper-int8,faster-whisper-float32")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cpu.json")
    ap.add_argument("--native-site", type=Path, help="folder with another pywhispercpp build (pip install --target), for -native configurations")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.audio, args.threads, args.beam)))
        return

    from whisperop.testing.speech import word_error_rate

    tmp = Path(tempfile.mkdtemp(prefix="whisperop-bench-"))
    long_path, long_text, long_secs = make_long_speech(args.minutes, tmp / "long.wav")
    inputs = [("jfk.wav", JFK, JFK_TEXT, 11.0), (f"speech-{long_secs / 60:.1f}min", long_path, long_text, long_secs)]
    configs = args.configs.split(",")
    rows = []
    for label, path, ref, secs in inputs:
        for kind in configs:
            print(f"… {label} {kind}", file=sys.stderr, flush=True)
            r = spawn(kind, path, args.threads, args.beam, args.native_site)
            r.update(audio=label, audio_secs=secs)
            if "error" not in r:
                r["x_realtime"] = secs * r.get("jobs", 1) / r["wall_secs"]
                r["wer"] = word_error_rate(ref, r.pop("text"))
            rows.append(r)
    two_h = make_two_hours(JFK, tmp / "long.mp3", args.long_hours)
    r = spawn("decode-chunk", two_h, args.threads, 1)
    r.update(audio=f"{args.long_hours:g}h mp3 (decode + chunk only)", audio_secs=args.long_hours * 3600)
    r.pop("text", None)
    rows.append(r)

    def find(audio: str, kind: str) -> dict | None:
        return next((x for x in rows if x["audio"] == audio and x["kind"] == kind and "error" not in x), None)

    ratios = {}
    for label, *_ in inputs:
        fw = find(label, "faster-whisper-int8")
        for kind in configs:
            if not kind.startswith("ours-"):
                continue
            ours = find(label, kind)
            raw = None if kind.startswith("ours-ct2-") else find(label, kind.replace("ours-", "pywhispercpp-", 1))
            if ours and raw:
                ratios[f"{label}: {kind} wall / {raw['kind']} wall"] = ours["wall_secs"] / raw["wall_secs"]
            if ours and fw:
                ratios[f"{label}: {kind} speed / faster-whisper-int8 speed"] = ours["x_realtime"] / fw["x_realtime"]
            fw_words = find(label, "faster-whisper-int8-words")  # like for like: both with word timestamps
            if ours and fw_words and not kind.endswith("-nowords"):
                ratios[f"{label}: {kind} speed / faster-whisper-int8-words speed"] = ours["x_realtime"] / fw_words["x_realtime"]
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), "threads": args.threads, "beam": args.beam},
        "versions": _versions(),
        "rows": rows,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("pywhispercpp", "faster-whisper", "ctranslate2", "tokenizers", "av", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def markdown(report: dict) -> str:
    lines = ["| audio | configuration | × real time | WER | wall s | load s | peak RSS MB |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['audio']} | {r['kind']} | error: {r['error'][-120:]} | | | | |")
            continue
        xrt = f"{r['x_realtime']:.1f}" if "x_realtime" in r else f"{r['audio_secs'] / r['wall_secs']:.0f}"
        wer = f"{r['wer'] * 100:.1f} %" if "wer" in r else "–"
        lines.append(f"| {r['audio']} | {r['kind']} | {xrt} | {wer} | {r['wall_secs']:.2f} | {r['load_secs']:.2f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "| ratio | value |", "|---|---:|"] + [f"| {k} | {v:.3f} |" for k, v in report["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
