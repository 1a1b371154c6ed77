"""GPU benchmark: our engine against raw whisper.cpp, faster-whisper and
Hugging Face transformers, on the same weights, audio and GPU. One command,
one JSON and one markdown report.

    python bench/gpu.py --ct2 DIR [--ggml FILE] [--speech FILE.flac] [--out DIR]
    python bench/gpu.py --ct2 DIR --speech FILE.flac --long-only --configs issue18   # issue 18's table
    python bench/gpu.py --cpu --quick          # the same code paths on CPU, short audio (a check, not figures)
    python bench/gpu.py --merge a.json b.json --out DIR   # one report from runs split over several calls

Inputs: ``--ct2`` is the CTranslate2 export of whisper base (the model.bin the
offline packages ship, joined); the GGML file is converted from it with our
converter when ``--ggml`` is not given, so every engine runs the very same
weights (f16). The long audio is ``bench/speech.py``'s output (FLAC + .txt
with the exact reference text); jfk.wav is the short one.

Every configuration runs in its own process: its load time is a cold load,
and its GPU memory is what NVML sees the device use above the idle baseline
while it runs (sampled every 20 ms; peak, and right after load). Word error
rate is jiwer's on lower-cased, punctuation-stripped text
(:func:`whisperop.testing.speech.word_error_rate`). Same settings everywhere:
language fixed to English, the same beam size, no conditioning on previous
text, temperature fallback as each engine does it by default.

Configurations (``--configs``, comma-separated; glob patterns allowed):

* ``cold``: our engine's model load + warm-up on the GPU with the default
  number of streams (the scale-from-zero cost: the engine is ready once its
  first stream is warm, the others load behind it), the first job right after
  it (jfk.wav, must not be 0 segments), and when all streams were loaded;
* ``ours-pN-bB``: the engine end to end (decode + chunk at silences +
  whisper.cpp + normalise) with N parallel decoders and beam B;
* ``raw-bB``: pywhispercpp's ``Model.transcribe`` on the whole decoded PCM in
  one call (whisper.cpp's own 30 s windows), the floor for ``ours-p1-bB``;
* ``raw8-bB``: 8 pywhispercpp models, the PCM cut in 8 equal slices decoded
  concurrently (the reference's "eight contexts" figure; cuts mid-word);
* ``ours-ct2-bB-sN``: the engine end to end with ``ENGINE=ctranslate2``
  (float16 on CUDA, int8 on the CPU) on the ``--ct2`` directory itself (no
  conversion), beam B, N windows per batch (``CT2_BATCH_SIZE``);
* ``rawq-pN-bB``: the raw whisper.cpp N-context harness, the ceiling our
  whisper.cpp path is held to: our chunk plan's windows (≤ 30 s, cut at
  silences; ``-cNN`` for another maximum) decoded by N pywhispercpp contexts
  in threads that pull them from one queue, no timestamps, no word timings;
  decode and plan happen before the clock (what our rows include);
  ``rawq-pN-bB[-fa]-ts``: the same harness doing the work our engine does
  per window: timestamp mode (no ``no_timestamps``) and token timestamps as
  ``WORD_TIMESTAMPS`` sets them (on by default), greedy ``best_of`` and
  fallback as ours; the report states ours / ``-ts`` (engine overhead) and
  ``-ts`` / plain (what timestamps cost);
* ``fw-bB`` / ``fwbatch-bB-sN``: faster-whisper (CTranslate2, float16) sequential,
  and its ``BatchedInferencePipeline`` with ``batch_size`` N (``fwbatch-bB`` =
  batch 16); the report takes the best of the batch sizes run as the peer figure;
* ``manyJ-<ours row>``: the many-jobs case: J concurrent jobs of
  ``--many-secs`` (1–3 min) cut from the long speech between its clips (at
  pauses; the clips' texts are each job's reference, from the
  ``.spans.json`` beside the audio), written as WAV files before the clock,
  and run as J threads calling ``transcribe_file`` on ONE engine built as
  the ``<ours row>`` (``many32-ours-p8-b1-fa``, ``many32-ours-ct2-b1-s16``):
  what a worker running J jobs at once does. × real time is the jobs' total
  audio over the wall time from the first submit to the last result, set
  beside the same row on the single long file;
* suffixes: ``-fa`` turns whisper.cpp's flash attention on (``ours-p8-b1-fa``),
  ``-cNN`` sets ``CHUNK_MAX_SECS`` (``ours-p8-b1-c30``), ``-tNN`` the CPU
  threads of the process (default ``--threads``), ``-nog`` turns ggml's CUDA
  graphs off (``GGML_CUDA_DISABLE_GRAPHS=1``; only matters for a build with
  ``GGML_CUDA_GRAPHS=ON``);
* ``hfgen-bsK-bB``: transformers' Whisper (fp16, SDPA) ``generate`` over our
  chunk plan's ≤ 30 s windows, K windows per call, no timestamps (features
  inside the clock);
* ``hf-bsK-bB``: transformers' Whisper (fp16, SDPA) in the chunked
  long-form ASR pipeline (30 s chunks, segment timestamps), batch K: the insanely-fast-whisper recipe.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JFK = REPO / "tests" / "data" / "jfk.wav"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
SR = 16000

GPU_CONFIGS = [
    "cold",
    "ours-p1-b1", "raw-b1", "ours-p2-b1", "ours-p4-b1", "ours-p8-b1", "raw8-b1",
    "ours-p1-b5", "raw-b5", "ours-p2-b5", "ours-p4-b5", "ours-p8-b5",
    "ours-p1-b1-fa", "raw-b1-fa", "ours-p8-b1-fa", "ours-p8-b5-fa",
    "fw-b1", "fwbatch-b1", "fw-b5", "fwbatch-b5",
    "hf-bs1-b1", "hf-bs64-b1", "hf-bs64-b5",
]
# issue 18's table, re-measured in one sitting (docs/benchmarks-gpu.md): two
# groups that each fit one 10-minute call of the lent machine
GROUPS = {
    "issue18-whispercpp": [
        "cold",
        "ours-p1-b1-fa", "ours-p8-b1-fa", "ours-p16-b1-fa", "ours-p8-b1-fa-c30", "ours-p16-b1-fa-c30",
        "rawq-p1-b1-fa", "rawq-p8-b1-fa", "rawq-p16-b1-fa",
        "rawq-p8-b1-fa-ts", "rawq-p16-b1-fa-ts",
        "many32-ours-p8-b1-fa",
    ],
    "issue18-ct2": [
        "ours-ct2-b1-s16", "ours-ct2-b1-s32", "ours-ct2-b1-s64",
        "fw-b1", "fwbatch-b1-s16", "fwbatch-b1-s32", "fwbatch-b1-s64", "fwbatch-b1-s128",
        "many32-ours-ct2-b1-s16",
        "hfgen-bs256-b1", "hf-bs64-b1",
    ],
}
ISSUE18_CONFIGS = GROUPS["issue18-whispercpp"] + GROUPS["issue18-ct2"]
GROUPS["issue18"] = ISSUE18_CONFIGS
QUICK_CPU_CONFIGS = ["cold", "ours-p1-b1", "raw-b1", "ours-p2-b1", "raw8-b1", "fw-b1", "fwbatch-b1", "hf-bs1-b1",
                     "ours-ct2-b1-s4", "rawq-p1-b1", "rawq-p2-b1", "rawq-p2-b1-ts", "fwbatch-b1-s4", "fwbatch-b1-s8",
                     "many4-ours-p2-b1", "many4-ours-ct2-b1-s4", "hfgen-bs4-b1"]
ALL_CONFIGS = list(dict.fromkeys(GPU_CONFIGS + ISSUE18_CONFIGS + QUICK_CPU_CONFIGS))


# ── import path: the project's package mapping without installing it ─────────


def ensure_importable() -> str:
    """``whisperop`` maps src/whisperop, inference/, api/ … into one namespace
    (pyproject's package-dir). Where the project is not installed (the GPU
    machine), build that mapping from symbolic links in a temporary folder."""
    try:
        import whisperop.inference.engine  # noqa: F401

        return ""
    except ImportError:
        pass
    shim = Path(tempfile.gettempdir()) / "whisperop-shim"
    pkg = shim / "whisperop"
    if pkg.exists():
        shutil.rmtree(shim)
    pkg.mkdir(parents=True)
    for entry in (REPO / "src" / "whisperop").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for name, src in (("inference", "inference"), ("api", "api"), ("operator", "operator")):
        if (REPO / src).is_dir() and not (pkg / name).exists():
            (pkg / name).symlink_to(REPO / src)
    sys.path.insert(0, str(shim))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH", "")]))
    return str(shim)


# ── GPU memory ────────────────────────────────────────────────────────────


_nvml: dict = {}


def nvml_used_mb(device: int = 0) -> float | None:
    """Device memory in use (MiB), all processes; None without NVML."""
    try:
        import pynvml

        if device not in _nvml:
            pynvml.nvmlInit()
            _nvml[device] = pynvml.nvmlDeviceGetHandleByIndex(device)
        return pynvml.nvmlDeviceGetMemoryInfo(_nvml[device]).used / 2**20
    except Exception:
        return None


class MemSampler(threading.Thread):
    """Peak device memory in use (NVML) while a child process runs."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            used = nvml_used_mb()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)
            self._halt.wait(self.interval)

    def stop(self) -> float | None:
        self._halt.set()
        self.join()
        return self.peak


# ── inputs ─────────────────────────────────────────────────────────────────


def load_pcm(path: Path):
    from whisperop.inference.audio import decode_audio

    with decode_audio(path) as a:
        return a.read()


def ggml_from_ct2(ct2: Path, dest: Path) -> Path:
    from whisperop.modelstore.convert import convert_ct2_dir

    if not dest.exists():
        convert_ct2_dir(ct2, dest, "f16")
    return dest


# ── one configuration, in its own process ───────────────────────────────────


def parse(kind: str) -> dict:
    """``ours-p8-b1-fa-c30-t32-nog`` → its settings; the suffixes in any order;
    ``manyJ-`` in front: the same row as J concurrent jobs."""
    m = re.fullmatch(r"many(\d+)-(.+)", kind)
    if m:
        cfg = parse(m.group(2))
        if cfg["engine"] not in ("ours", "ours-ct2"):
            raise SystemExit(f"{kind}: the many-jobs case runs our engine (an ours-… row)")
        return {**cfg, "jobs": int(m.group(1)), "single": m.group(2)}
    mods: dict = {"fa": False, "chunk_max_secs": None, "threads": None, "cuda_graphs": True, "timestamps": False}
    while True:
        m = re.search(r"-(fa|nog|ts|c\d+|t\d+)$", kind)
        if not m:
            break
        kind, tag = kind[: m.start()], m.group(1)
        if tag == "fa":
            mods["fa"] = True
        elif tag == "ts":
            mods["timestamps"] = True
        elif tag == "nog":
            mods["cuda_graphs"] = False
        elif tag.startswith("c"):
            mods["chunk_max_secs"] = float(tag[1:])
        else:
            mods["threads"] = int(tag[1:])
    cfg = _parse(kind)
    cfg.update(mods)
    return cfg


def _parse(kind: str) -> dict:
    m = re.fullmatch(r"ours-ct2-b(\d+)(?:-s(\d+))?", kind)
    if m:  # batch 0 = the engine's default (CT2_BATCH_SIZE unset)
        return {"engine": "ours-ct2", "beam": int(m.group(1)), "batch": int(m.group(2) or 0)}
    m = re.fullmatch(r"fwbatch-b(\d+)(?:-s(\d+))?", kind)
    if m:
        return {"engine": "fwbatch", "beam": int(m.group(1)), "batch": int(m.group(2) or 16)}
    m = re.fullmatch(r"hfgen-bs(\d+)-b(\d+)", kind)
    if m:
        return {"engine": "hfgen", "batch": int(m.group(1)), "beam": int(m.group(2))}
    m = re.fullmatch(r"rawq-p(\d+)-b(\d+)", kind)
    if m:
        return {"engine": "rawq", "contexts": int(m.group(1)), "beam": int(m.group(2))}
    m = re.fullmatch(r"(ours)-p(\d+)-b(\d+)|(raw8?|fw)-b(\d+)|hf-bs(\d+)-b(\d+)|cold", kind)
    if not m:
        raise SystemExit(f"unknown configuration {kind}")
    if kind == "cold":
        return {"engine": "cold", "beam": 1}
    if m.group(1):
        return {"engine": "ours", "parallelism": int(m.group(2)), "beam": int(m.group(3))}
    if m.group(4):
        return {"engine": m.group(4), "beam": int(m.group(5))}
    return {"engine": "hf", "batch": int(m.group(6)), "beam": int(m.group(7))}


def whisper_timings(raw_ctxs: list) -> dict:
    """whisper.cpp's own counters (encode/decode/batchd/sample/mel: ms and
    runs), summed over contexts: where a configuration's time goes."""
    import _pywhispercpp as pw

    from whisperop.inference.whispercpp import log_router

    router = log_router()
    cap = router.capture()
    try:
        for ctx in raw_ctxs:
            pw.whisper_print_timings(ctx)
    finally:
        router.release(cap)
    out: dict = {}
    for _, line in cap:
        m = re.search(r"(\w+) time =\s*([\d.]+) ms(?: /\s*(\d+) runs)?", line)
        if m and m.group(1) in ("mel", "sample", "encode", "decode", "batchd", "prompt"):
            key = m.group(1)
            out[f"{key}_ms"] = round(out.get(f"{key}_ms", 0.0) + float(m.group(2)), 1)
            if m.group(3) is not None:
                out[f"{key}_runs"] = out.get(f"{key}_runs", 0) + int(m.group(3))
    return out


def reset_timings(raw_ctxs: list) -> None:
    import _pywhispercpp as pw

    for ctx in raw_ctxs:
        pw.whisper_reset_timings(ctx)


def run_one(kind: str, audio: Path, a: argparse.Namespace) -> dict:
    cfg = parse(kind)
    beam = cfg["beam"]
    use_gpu = not a.cpu
    fa = a.flash_attn or cfg["fa"]
    threads = cfg["threads"] or a.threads
    base = a.baseline_mb
    out: dict = {"kind": kind}

    def after_load() -> None:
        used = nvml_used_mb()
        out["gpu_mb_after_load"] = None if used is None or base is None else round(used - base, 1)

    t_start = time.perf_counter()
    if cfg.get("jobs"):
        wall, text = run_many(cfg, audio, a, out, after_load)
        load = time.perf_counter() - t_start - wall
    elif cfg["engine"] == "ours-ct2":
        from whisperop.inference.engine import TranscribeRequest

        engine = ours_engine(cfg, a)
        load = time.perf_counter() - t_start
        out.update(load_secs=engine.load_secs, warmup_secs=engine.warmup_secs, ready_secs=load, backend=engine.backend,
                   compute_type=engine.compute_type, batch_size=engine.batch_size)
        after_load()
        planned: list[float] = []
        t0 = time.perf_counter()
        result = engine.transcribe_file(audio, TranscribeRequest(language="en"),
                                        on_decoded=lambda *_: planned.append(time.perf_counter()))
        wall = time.perf_counter() - t0
        out["decode_and_plan_secs"] = round(planned[0] - t0, 3) if planned else None
        text = " ".join(seg.text for seg in result.segments)
        out.update(chunks=result.chunks, segments=len(result.segments), language=result.language, batcher=batch_stats(engine))
        engine.close()
    elif cfg["engine"] == "rawq":
        wall, text = run_rawq(cfg, audio, a, out, after_load)
        load = time.perf_counter() - t_start - wall
    elif cfg["engine"] == "hfgen":
        wall, text = run_hfgen(cfg, audio, a, out, after_load)
        load = time.perf_counter() - t_start - wall
    elif cfg["engine"] in ("cold", "ours"):
        from whisperop.inference.engine import TranscribeRequest

        engine = ours_engine(cfg, a)
        ready = time.perf_counter() - t_start
        out.update(load_secs=engine.load_secs, warmup_secs=engine.warmup_secs, ready_secs=ready, backend=engine.backend,
                   threads_per_stream=engine._threads_per_context(),
                   parallelism=engine.parallelism, flash_attn=engine.flash_attn,
                   backend_lines=[ln for ln in engine._contexts[0].load_log if re.search(r"cuda|gpu|backend|device|flash", ln, re.I)][:12])
        if cfg["engine"] == "ours":  # throughput rows: every stream loaded before the clock starts
            engine.wait_all_loaded()
        load = time.perf_counter() - t_start
        after_load()
        raw_ctxs = [c._ctx for c in engine._contexts]
        reset_timings(raw_ctxs)
        decoded_at: list[float] = []
        streamed = StreamedPlanLog()
        t0 = time.perf_counter()
        with streamed:
            result = engine.transcribe_file(audio, TranscribeRequest(language="en"),
                                            on_decoded=lambda *_: decoded_at.append(time.perf_counter()))
        wall = time.perf_counter() - t0
        out["decode_and_plan_secs"] = round(decoded_at[0] - t0, 3) if decoded_at else None
        out["streamed_plan"] = streamed.stats
        out["whisper_timings"] = whisper_timings(raw_ctxs)
        text = " ".join(s.text for s in result.segments)
        out.update(chunks=result.chunks, segments=len(result.segments), language=result.language)
        if cfg["engine"] == "cold":
            out["first_job_secs"] = wall
            out["first_job_streams_loaded"] = engine.streams_loaded
        engine.wait_all_loaded()
        out["all_streams_loaded_secs"] = engine.all_loaded_secs
        engine.close()
    elif cfg["engine"] in ("raw", "raw8"):
        from pywhispercpp.model import Model

        pcm = load_pcm(audio)
        n = 8 if cfg["engine"] == "raw8" else 1
        threads = max(1, threads // n)
        params = dict(n_threads=threads, print_progress=False, print_realtime=False, language="en", no_context=True,
                      temperature_inc=0.2, token_timestamps=True, suppress_blank=True)
        ctx = {"use_gpu": use_gpu, "flash_attn": fa}
        if beam > 1:
            params.update(params_sampling_strategy=1, beam_search={"beam_size": beam, "patience": -1.0})
        models = [Model(str(a.ggml), redirect_whispercpp_logs_to=None, context_params=ctx, **params) for _ in range(n)]
        for mdl in models:  # warm-up, as the engine does after load
            mdl.transcribe(pcm[:SR])
        load = time.perf_counter() - t_start
        after_load()
        raw_ctxs = [mdl._ctx for mdl in models]
        reset_timings(raw_ctxs)
        t0 = time.perf_counter()
        if n == 1:
            texts = [" ".join(s.text for s in models[0].transcribe(pcm))]
        else:
            from concurrent.futures import ThreadPoolExecutor

            step = -(-pcm.size // n)
            slices = [pcm[i * step:(i + 1) * step] for i in range(n)]
            with ThreadPoolExecutor(n) as pool:
                texts = list(pool.map(lambda mi: " ".join(s.text for s in mi[0].transcribe(mi[1])), zip(models, slices)))
        wall = time.perf_counter() - t0
        out["whisper_timings"] = whisper_timings(raw_ctxs)
        text = " ".join(texts)
    elif cfg["engine"] in ("fw", "fwbatch"):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        pcm = load_pcm(audio)
        model = WhisperModel(str(a.ct2), device="cuda" if use_gpu else "cpu", compute_type="float16" if use_gpu else "float32",
                             cpu_threads=threads)
        load = time.perf_counter() - t_start
        after_load()
        t0 = time.perf_counter()
        common = dict(language="en", beam_size=beam, condition_on_previous_text=False, word_timestamps=False)
        list(model.transcribe(pcm[:SR], vad_filter=False, **common)[0])  # warm-up
        if cfg["engine"] == "fw":
            segments, _ = model.transcribe(pcm, vad_filter=False, **common)
        else:
            segments, _ = BatchedInferencePipeline(model=model).transcribe(pcm, batch_size=cfg["batch"], **common)
            out["batch_size"] = cfg["batch"]
        text = " ".join(s.text for s in segments)
        wall = time.perf_counter() - t0
    else:  # hf
        import torch
        from transformers import pipeline

        model, tok, fe = hf_whisper(a.ct2, "cuda:0" if use_gpu else "cpu", torch.float16 if use_gpu else torch.float32)
        asr = pipeline("automatic-speech-recognition", model=model, tokenizer=tok, feature_extractor=fe,
                       device=model.device, dtype=model.dtype)
        pcm = load_pcm(audio)
        asr(pcm[: 5 * SR].copy(), chunk_length_s=30, batch_size=cfg["batch"], return_timestamps=True,
            generate_kwargs={"language": "en", "task": "transcribe", "num_beams": beam})  # warm-up
        load = time.perf_counter() - t_start
        after_load()
        if use_gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = asr(pcm.copy(), chunk_length_s=30, batch_size=cfg["batch"], return_timestamps=True,
                  generate_kwargs={"language": "en", "task": "transcribe", "num_beams": beam})
        if use_gpu:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        text = res["text"]
        out["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
        if use_gpu:
            out["torch_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out.update(load_secs=out.get("load_secs", load), wall_secs=wall, text=text)
    return out


class StreamedPlanLog(logging.Handler):
    """The engine's "chunk plan streamed" line of a job (round 4): when the
    first chunk went to a stream, and how many guessed chunks the final plan
    kept or dropped. None where the engine does not stream its plan."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "chunk plan streamed":
            self.stats = {k: record.__dict__.get(k) for k in ("guessed", "used", "dropped", "first_chunk_started_secs")}

    def __enter__(self) -> "StreamedPlanLog":
        lg = logging.getLogger("whisperop.engine")
        self._level = lg.level
        lg.setLevel(logging.INFO)
        lg.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        lg = logging.getLogger("whisperop.engine")
        lg.removeHandler(self)
        lg.setLevel(self._level)


def ours_engine(cfg: dict, a: argparse.Namespace):
    """Our engine as a row describes it: whisper.cpp on the GGML file
    (``ours-pN``, ``cold``) or CTranslate2 on the CT2 directory itself
    (``ours-ct2``: float16 on CUDA, int8 on the CPU — the engine's defaults)."""
    from whisperop.core.settings import EngineSettings
    from whisperop.inference.engine import WhisperEngine, create_engine

    extra: dict = {"CHUNK_MAX_SECS": cfg["chunk_max_secs"]} if cfg["chunk_max_secs"] else {}
    if cfg["threads"]:
        extra["WHISPER_THREADS"] = cfg["threads"]
    if cfg["engine"] == "ours-ct2":
        return create_engine(a.ct2, EngineSettings(**extra, ENGINE="ctranslate2", USE_GPU=not a.cpu, BEAM_SIZE=cfg["beam"],
                                                   CT2_BATCH_SIZE=cfg["batch"]))
    fa = a.flash_attn or cfg["fa"]
    par = cfg.get("parallelism", 0)  # cold: 0 = the engine's default for the device
    settings = EngineSettings(**extra, USE_GPU=not a.cpu, BEAM_SIZE=cfg["beam"],
                              FLASH_ATTN=fa if cfg["engine"] == "ours" or a.flash_attn else None, PARALLELISM=par)
    return WhisperEngine(a.ggml, settings)


def stream_threads(n: int, total: int | None, use_gpu: bool) -> int:
    """CPU threads per whisper.cpp context, by the engine's own rule
    (``WhisperEngine._threads_per_context``): ``total`` split evenly when
    given; on a GPU with several contexts 2 × cores / N, at most 4 each."""
    from whisperop.inference.engine import GPU_MAX_THREADS_PER_STREAM

    if total:
        return max(1, total // n)
    cores = os.cpu_count() or 1
    if use_gpu and n > 1:
        return max(1, min(GPU_MAX_THREADS_PER_STREAM, 2 * cores // n))
    return max(1, cores // n)


def run_rawq(cfg: dict, audio: Path, a: argparse.Namespace, out: dict, after_load) -> tuple[float, str]:
    """The raw whisper.cpp N-context harness (issue 18: the ceiling of our
    whisper.cpp path, "within 10 %"). The windows are our chunk plan's
    (:func:`plan_chunks` with the settings' silence rules, at most 30 s or
    ``-cNN``), cut before the clock; N pywhispercpp contexts in N threads
    pull them from one queue (whisper.cpp releases the GIL), greedy or beam
    as the row says, no timestamps, no token timings, no conditioning on
    previous text, whisper.cpp's default temperature fallback. ``-ts``: the
    decode mode of our engine instead (:meth:`WhisperContext.full`):
    timestamp tokens on, token timestamps as ``WORD_TIMESTAMPS`` says, the
    engine's temperature step, and each segment's token data read back as the
    engine does for its word timings."""
    import queue as queue_mod

    from pywhispercpp.model import Model

    t_start = time.perf_counter()
    n, beam, use_gpu = cfg["contexts"], cfg["beam"], not a.cpu
    max_secs = cfg["chunk_max_secs"] or 30.0
    pcm, windows = plan_windows(audio, max_secs)
    per = stream_threads(n, cfg["threads"], use_gpu)
    params = dict(n_threads=per, print_progress=False, print_realtime=False, language="en", no_context=True,
                  no_timestamps=True, token_timestamps=False, temperature_inc=0.2, suppress_blank=True)
    if cfg["timestamps"]:  # the engine's decode mode (inference/whispercpp.py WhisperContext.full)
        from whisperop.core.settings import EngineSettings

        s = EngineSettings()
        params.update(no_timestamps=False, token_timestamps=s.word_timestamps, temperature_inc=s.temperature_inc)
    if beam > 1:
        params.update(params_sampling_strategy=1, beam_search={"beam_size": beam, "patience": -1.0})
    ctx = {"use_gpu": use_gpu, "flash_attn": a.flash_attn or cfg["fa"]}
    models = [Model(str(a.ggml), redirect_whispercpp_logs_to=None, context_params=ctx, **params) for _ in range(n)]
    for mdl in models:  # warm-up, as the engine does after load
        mdl.transcribe(pcm[:SR])
    out["load_secs"] = time.perf_counter() - t_start
    after_load()
    raw_ctxs = [mdl._ctx for mdl in models]
    reset_timings(raw_ctxs)
    work: queue_mod.Queue = queue_mod.Queue()
    for i, w in enumerate(windows):
        work.put((i, w))
    texts = [""] * len(windows)
    errors: list[BaseException] = []

    def worker(mdl) -> None:
        try:
            while True:
                try:
                    i, w = work.get_nowait()
                except queue_mod.Empty:
                    return
                texts[i] = " ".join(seg.text for seg in mdl.transcribe(w))
                if cfg["timestamps"]:
                    read_tokens(mdl._ctx)
        except BaseException as exc:  # noqa: BLE001 - reported by the row
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(mdl,), name=f"rawq-{k}") for k, mdl in enumerate(models)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    out.update(windows=len(windows), contexts=n, threads_per_context=per, window_max_secs=max_secs,
               timestamps=cfg["timestamps"], whisper_timings=whisper_timings(raw_ctxs))
    return wall, " ".join(texts)


def read_tokens(ctx) -> int:
    """Every token's data and text of the last call, as our engine reads them
    for word timings (``WhisperContext._collect``); the count."""
    import _pywhispercpp as pw

    n = 0
    for i in range(pw.whisper_full_n_segments(ctx)):
        for j in range(pw.whisper_full_n_tokens(ctx, i)):
            pw.whisper_full_get_token_data(ctx, i, j)
            pw.whisper_full_get_token_text(ctx, i, j)
            n += 1
    return n


def plan_windows(audio: Path, max_secs: float):
    """The PCM and our chunk plan's windows over it (the engine's silence
    rules, at most ``max_secs``; a window under 1 s padded to 1 s, as the
    engine does for whisper.cpp)."""
    from whisperop.core.settings import EngineSettings
    from whisperop.inference.audio import decode_audio
    from whisperop.inference.chunking import ChunkingConfig, plan_chunks

    s = EngineSettings()
    with decode_audio(audio) as d:
        pcm = d.read()
        chunks = plan_chunks(d.frame_db, d.n_samples, ChunkingConfig(
            max_secs=max_secs, min_secs=min(s.chunk_min_secs, max_secs / 2), min_silence_secs=s.min_silence_secs))
    return pcm, [pcm[c.start:c.end] if c.end - c.start >= SR else np_pad(pcm[c.start:c.end], SR) for c in chunks]


def run_hfgen(cfg: dict, audio: Path, a: argparse.Namespace, out: dict, after_load) -> tuple[float, str]:
    """transformers' Whisper (fp16, SDPA) ``generate`` over our chunk plan's
    ≤ 30 s windows in batches of K (issue 18's "transformers fp16 SDPA,
    batched generate over those windows"): log-mel features by
    ``WhisperFeatureExtractor`` inside the clock, no timestamps."""
    import torch

    use_gpu = not a.cpu
    t_start = time.perf_counter()
    model, tok, fe = hf_whisper(a.ct2, "cuda:0" if use_gpu else "cpu", torch.float16 if use_gpu else torch.float32)
    pcm, windows = plan_windows(audio, cfg["chunk_max_secs"] or 30.0)
    k, beam = cfg["batch"], cfg["beam"]

    features_secs = [0.0]

    def decode(batch: list) -> list[str]:
        t = time.perf_counter()
        feats = fe([w.copy() for w in batch], sampling_rate=SR, return_tensors="pt").input_features
        features_secs[0] += time.perf_counter() - t
        with torch.inference_mode():
            ids = model.generate(feats.to(model.device, model.dtype), language="en", task="transcribe", num_beams=beam)
        return tok.batch_decode(ids, skip_special_tokens=True)

    decode(windows[:2])  # warm-up
    out["load_secs"] = time.perf_counter() - t_start
    after_load()
    if use_gpu:
        torch.cuda.synchronize()
    features_secs[0] = 0.0
    t0 = time.perf_counter()
    texts = [t for i in range(0, len(windows), k) for t in decode(windows[i:i + k])]
    if use_gpu:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    out.update(windows=len(windows), window_max_secs=cfg["chunk_max_secs"] or 30.0, batch_size=k,
               features_secs=round(features_secs[0], 3),
               attn_implementation=getattr(model.config, "_attn_implementation", None))
    if use_gpu:
        out["torch_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return wall, " ".join(t.strip() for t in texts)


def np_pad(pcm, n: int):
    """whisper.cpp refuses inputs under 100 ms; the engine pads short chunks to 1 s."""
    import numpy as np

    return np.concatenate([pcm, np.zeros(n - pcm.size, dtype=np.float32)])


def cut_jobs(audio: Path, jobs: int, secs: tuple[float, float], dest: Path) -> list[tuple[Path, str, float]]:
    """``jobs`` pieces of ``secs`` (min, max; drawn per job, seeded) cut from
    the speech between its clips, at pauses of ≥ 0.2 s (clips joined with no
    pause stay together), each starting where the last ended and wrapping to
    the start: (WAV path, reference text, seconds) per job. The clips and
    their texts come from the ``.spans.json`` that bench/speech.py writes."""
    import random

    from whisperop.inference.audio import write_wav

    spans_path = audio.with_suffix(".spans.json")
    if not spans_path.is_file():
        raise SystemExit(f"the many-jobs case needs {spans_path} (bench/speech.py writes it beside the audio)")
    spans = json.loads(spans_path.read_text(encoding="utf-8"))
    pcm = load_pcm(audio)
    total = pcm.size / SR
    rng = random.Random(18)
    out: list[tuple[Path, str, float]] = []
    i = 0
    for j in range(jobs):
        target = rng.uniform(*secs)
        if spans[-1][1] - spans[i][0] < secs[0]:  # too little left for a whole job: wrap
            i = 0
        k = i
        while k + 1 < len(spans):
            at_pause = spans[k + 1][0] - spans[k][1] >= 0.2
            dur, longer = spans[k][1] - spans[i][0], spans[k + 1][1] - spans[i][0]
            if at_pause and (dur >= target or (dur >= secs[0] and longer > secs[1])):  # the next clip would pass the maximum
                break
            k += 1
        before = spans[i][0] - (spans[i - 1][1] if i > 0 else 0.0)
        after = (spans[k + 1][0] if k + 1 < len(spans) else total) - spans[k][1]
        start = spans[i][0] - min(0.15, before / 2)
        end = spans[k][1] + min(0.15, after / 2)
        path = dest / f"job-{j:02d}.wav"
        write_wav(path, pcm[int(start * SR):int(end * SR)])
        out.append((path, " ".join(t for _, _, t in spans[i:k + 1]), end - start))
        i = (k + 1) % len(spans)
    return out


def batch_stats(engine) -> dict | None:
    """The CTranslate2 engine's cross-job batcher counters, where the engine
    has one (``batch_stats``; wt-18b's batcher): batches, windows, batches
    that mixed jobs. None for whisper.cpp or an engine without it."""
    stats = getattr(engine, "batch_stats", None)
    if stats is None:
        return None
    out = {k: v for k, v in vars(stats).items() if isinstance(v, (int, float))}
    if "batches" in out and "windows" in out and out["batches"]:
        out["windows_per_batch"] = round(out["windows"] / out["batches"], 2)
    return out


def run_many(cfg: dict, audio: Path, a: argparse.Namespace, out: dict, after_load) -> tuple[float, str]:
    """The many-jobs case: J jobs submitted at once to one engine (J threads
    calling ``transcribe_file``, as a worker running J jobs concurrently
    does — ``JOB_CONCURRENCY=J``: one thread per job on the one in-process
    engine): whisper.cpp's N streams are shared by every job's chunks through
    the engine's context pool; CTranslate2 puts the windows of all running
    jobs in one batch queue where the engine has that batcher (its counters
    go in the row), else each job batches its own windows. The
    reference is the jobs' texts in job order; × real time is the jobs'
    audio over the wall time from the first submit to the last result."""
    from concurrent.futures import ThreadPoolExecutor

    from whisperop.inference.engine import TranscribeRequest

    n = cfg["jobs"]
    tmp = Path(tempfile.mkdtemp(prefix="whisperop-many-"))
    try:
        jobs = cut_jobs(audio, n, a.many_secs, tmp)
        engine = ours_engine(cfg, a)
        if hasattr(engine, "wait_all_loaded"):
            engine.wait_all_loaded()
        out.update(load_secs=engine.load_secs, warmup_secs=engine.warmup_secs, backend=engine.backend,
                   parallelism=engine.parallelism)
        after_load()
        done_at = [0.0] * n

        def one(j: int):
            r = engine.transcribe_file(jobs[j][0], TranscribeRequest(language="en"))
            done_at[j] = time.perf_counter()
            return r

        t0 = time.perf_counter()
        with ThreadPoolExecutor(n, thread_name_prefix="job") as pool:
            results = list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
        batcher = batch_stats(engine)
        engine.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lat = sorted(t - t0 for t in done_at)
    lens = [secs for _, _, secs in jobs]
    out.update(jobs=n, jobs_audio_secs=round(sum(lens), 2), job_secs_min=round(min(lens), 1), job_secs_max=round(max(lens), 1),
               job_done_secs_median=round(lat[n // 2], 2), job_done_secs_max=round(lat[-1], 2),
               chunks=sum(r.chunks for r in results), segments=sum(len(r.segments) for r in results),
               reference=" ".join(ref for _, ref, _ in jobs),
               batcher=batcher,
               how="one engine, J threads calling transcribe_file concurrently"
                   + (" (its cross-job batcher: see batcher)" if batcher else " (no cross-job batcher in this engine)"))
    return wall, " ".join(" ".join(seg.text for seg in r.segments) for r in results)


def hf_whisper(ct2: Path, device: str, dtype):
    """transformers' WhisperForConditionalGeneration holding the CTranslate2
    weights: CT2 → OpenAI names (our GGML converter's mapping: fused q/k/v
    split, k without bias) → Hugging Face names; config and generation config
    from the CT2 config and vocabulary (there is no Hub copy offline)."""
    import numpy as np
    import tokenizers
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from whisperop.modelstore.convert import hparams_from, whisper_tensors
    from whisperop.modelstore.ct2 import read_ct2_model

    ct2 = Path(ct2)
    m = read_ct2_model(ct2 / "model.bin")
    hp = hparams_from(m)
    cfg_ct2 = json.loads((ct2 / "config.json").read_text())
    vocab = json.loads((ct2 / "vocabulary.json").read_text())
    ffn = m.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    config = WhisperConfig(
        vocab_size=hp.n_vocab, num_mel_bins=hp.n_mels, d_model=hp.n_audio_state,
        encoder_layers=hp.n_audio_layer, encoder_attention_heads=hp.n_audio_head, encoder_ffn_dim=ffn,
        decoder_layers=hp.n_text_layer, decoder_attention_heads=hp.n_text_head, decoder_ffn_dim=ffn,
        max_source_positions=hp.n_audio_ctx, max_target_positions=hp.n_text_ctx,
        pad_token_id=50257, bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258,
        begin_suppress_tokens=cfg_ct2["suppress_ids_begin"], suppress_tokens=cfg_ct2["suppress_ids"],
        tie_word_embeddings=True,
    )

    def hf_name(name: str) -> str:
        rules = [
            (r"^encoder\.positional_embedding$", "model.encoder.embed_positions.weight"),
            (r"^decoder\.positional_embedding$", "model.decoder.embed_positions.weight"),
            (r"^decoder\.token_embedding\.weight$", "model.decoder.embed_tokens.weight"),
            (r"^encoder\.ln_post\.", "model.encoder.layer_norm."),
            (r"^decoder\.ln\.", "model.decoder.layer_norm."),
            (r"^(encoder|decoder)\.conv", r"model.\1.conv"),
            (r"^(encoder|decoder)\.blocks\.(\d+)\.", r"model.\1.layers.\2."),
        ]
        for pat, rep in rules:
            name = re.sub(pat, rep, name)
        for a, b in ((".cross_attn_ln.", ".encoder_attn_layer_norm."), (".attn_ln.", ".self_attn_layer_norm."),
                     (".mlp_ln.", ".final_layer_norm."), (".mlp.0.", ".fc1."), (".mlp.2.", ".fc2."),
                     (".cross_attn.", ".encoder_attn."), (".attn.", ".self_attn."),
                     ("attn.query.", "attn.q_proj."), ("attn.key.", "attn.k_proj."), ("attn.value.", "attn.v_proj."), ("attn.out.", "attn.out_proj.")):
            name = name.replace(a, b)
        return name

    state = {}
    for name, arr in whisper_tensors(m, hp):
        if name.endswith("conv1.bias") or name.endswith("conv2.bias"):
            arr = arr.reshape(-1)
        state[hf_name(name)] = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32))
    model = WhisperForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model = model.to(device=device, dtype=dtype).eval()

    lang_to_id = {vocab[i]: i for i in cfg_ct2["lang_ids"]}
    gen = GenerationConfig(
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, bos_token_id=50257,
        begin_suppress_tokens=cfg_ct2["suppress_ids_begin"], suppress_tokens=cfg_ct2["suppress_ids"],
        alignment_heads=cfg_ct2["alignment_heads"], lang_to_id=lang_to_id,
        task_to_id={"transcribe": vocab.index("<|transcribe|>"), "translate": vocab.index("<|translate|>")},
        no_timestamps_token_id=vocab.index("<|notimestamps|>"), prev_sot_token_id=vocab.index("<|startofprev|>"),
        is_multilingual=True, max_initial_timestamp_index=50, max_length=hp.n_text_ctx, return_timestamps=False,
    )
    model.generation_config = gen
    tok = WhisperTokenizer(tokenizer_object=tokenizers.Tokenizer.from_file(str(ct2 / "tokenizer.json")))
    tok.pad_token = "<|endoftext|>"  # batching pads with it (the Hub's tokenizer config says so too)
    fe = WhisperFeatureExtractor(feature_size=hp.n_mels, sampling_rate=SR)
    return model, tok, fe


# ── orchestration ───────────────────────────────────────────────────────────


def spawn(kind: str, audio: Path, a: argparse.Namespace, timeout: float) -> dict:
    base = nvml_used_mb()
    cmd = [sys.executable, __file__, "--one", kind, "--audio", str(audio), "--ct2", str(a.ct2), "--ggml", str(a.ggml),
           "--threads", str(a.threads), "--baseline-mb", str(base if base is not None else -1)]
    if a.cpu:
        cmd.append("--cpu")
    if a.flash_attn:
        cmd.append("--flash-attn")
    cmd += ["--many-secs", ",".join(str(x) for x in a.many_secs)]
    env = dict(os.environ)
    if not parse(kind)["cuda_graphs"]:
        env["GGML_CUDA_DISABLE_GRAPHS"] = "1"
    sampler = MemSampler()
    sampler.start()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        sampler.stop()
        return {"kind": kind, "error": f"timed out after {timeout:.0f} s", "stderr_tail": (exc.stderr or b"")[-800:].decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")[-800:]}
    peak = sampler.stop()
    r: dict
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = proc.stderr.strip().splitlines()
        key = [ln for ln in err if re.search(r"Error|error|not found|cannot", ln)]
        r = {"kind": kind, "error": (key[-1] if key else (err[-1] if err else f"exit {proc.returncode}"))[:600],
             "stderr_tail": proc.stderr.strip()[-2500:]}
    else:
        r = json.loads(lines[-1])
    r["process_secs"] = round(time.perf_counter() - t0, 2)
    r["gpu_mb_peak"] = None if peak is None or base is None else round(peak - base, 1)
    return r


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict = {"python": platform.python_version()}
    for dist in ("pywhispercpp", "faster-whisper", "ctranslate2", "transformers", "torch", "tokenizers", "av", "numpy", "jiwer", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    try:
        import _pywhispercpp as pw

        out["whisper.cpp system_info"] = str(pw.whisper_print_system_info()).strip()
        out["whisper.cpp"] = whisper_cpp_version()
    except Exception as exc:  # pragma: no cover
        out["whisper.cpp system_info"] = f"unavailable: {exc}"
    return out


def whisper_cpp_version() -> str | None:
    """whisper.cpp's version as compiled into the extension (WHISPER_VERSION)."""
    try:
        import _pywhispercpp as pw

        blob = Path(pw.__file__).read_bytes()
        m = re.search(rb"\x00(1\.\d+\.\d+)\x00", blob)
        return m.group(1).decode() if m else None
    except Exception:
        return None


def device_info() -> dict:
    info: dict = {"host_cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30).stdout.strip()
        info["gpu"] = q
        head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"CUDA Version:\s*([\d.]+)", head)
        info["driver_cuda"] = m.group(1) if m else None
    except Exception as exc:
        info["gpu"] = f"none ({exc.__class__.__name__})"
    try:
        nv = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"release ([\d.]+)", nv)
        info["nvcc"] = m.group(1) if m else None
    except Exception:
        info["nvcc"] = None
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
    except Exception:
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--audio", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--baseline-mb", type=float, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--ct2", type=Path, help="CTranslate2 whisper base directory (model.bin, config.json, tokenizer.json, vocabulary.json)")
    ap.add_argument("--ggml", type=Path, help="GGML f16 model (default: converted from --ct2 into --work)")
    ap.add_argument("--speech", type=Path, help="long speech (bench/speech.py output; the .txt beside it is the reference)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "whisperop-gpu-bench")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--configs", help="comma-separated configurations, glob patterns or groups (issue18, issue18-whispercpp, "
                                      "issue18-ct2); default: the first lease's list")
    ap.add_argument("--skip-long", help="configurations (glob) run on jfk.wav only")
    ap.add_argument("--long-only", action="store_true", help="run the long speech only (cold start still uses jfk.wav)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--flash-attn", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="run everything on the CPU (a check of the code paths)")
    ap.add_argument("--quick", action="store_true", help="short audio, few configurations")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per configuration")
    ap.add_argument("--many-secs", help="length range of the many-jobs case's jobs, 'MIN,MAX' seconds (default 60,180; --quick 4,12)")
    ap.add_argument("--tag", default="gpu", help="report file names: <tag>.json / <tag>.md")
    ap.add_argument("--merge", nargs="+", type=Path, help="merge these JSON reports into one")
    a = ap.parse_args()
    ensure_importable()
    a.baseline_mb = None if a.baseline_mb < 0 else a.baseline_mb
    a.many_secs = tuple(float(x) for x in (a.many_secs or ("4,12" if a.quick else "60,180")).split(","))
    if a.one:
        print(json.dumps(run_one(a.one, a.audio, a)))
        return
    if a.merge:
        reports = [json.loads(p.read_text()) for p in a.merge]
        report = reports[0]
        for r in reports[1:]:
            report["rows"] += r["rows"]
            report.setdefault("runs", []).append({k: r[k] for k in ("device", "versions") if k in r})
        finish(report, a)
        return

    from whisperop.testing.speech import word_error_rate

    a.work.mkdir(parents=True, exist_ok=True)
    if a.ct2 is None:
        from whisperop.core.settings import EngineSettings

        a.ct2 = EngineSettings().model_cache_dir / "base-ct2"
    t0 = time.perf_counter()
    if a.ggml is None:
        a.ggml = ggml_from_ct2(a.ct2, a.work / "ggml-base.bin")
    convert_secs = time.perf_counter() - t0

    inputs = [("jfk.wav", JFK, JFK_TEXT)]
    if a.speech is None and a.quick:
        from whisperop.testing.speech import build_speech, english_sentences

        # about a minute: a dozen sentences and one jfk.wav, with pauses
        speech = build_speech(english_sentences()[:12], no_pause_every=7, seed=3, extra=[(load_pcm(JFK), JFK_TEXT)])
        a.speech = speech.write(a.work / "speech-quick.wav")
        a.speech.with_suffix(".txt").write_text(speech.text)
        spans = [[round(s0, 3), round(s1, 3), t] for (s0, s1), t in zip(speech.spans, speech.texts)]
        a.speech.with_suffix(".spans.json").write_text(json.dumps(spans))
    if a.speech is not None:
        inputs.append((a.speech.name, a.speech, a.speech.with_suffix(".txt").read_text(encoding="utf-8").strip()))
    durations = {label: load_pcm(p).size / SR for label, p, _ in inputs}

    default = QUICK_CPU_CONFIGS if a.quick else GPU_CONFIGS
    pats = a.configs.split(",") if a.configs else default
    pats = [q for p in pats for q in GROUPS.get(p, [p])]  # a group's name: its rows
    known = QUICK_CPU_CONFIGS if a.quick else ALL_CONFIGS
    configs = [c for c in known if any(fnmatch.fnmatch(c, p) for p in pats)]
    configs = list(dict.fromkeys(configs + [p for p in pats if not any(ch in p for ch in "*?[") and p not in configs]))
    skip_long = a.skip_long.split(",") if a.skip_long else []

    dev, vers = device_info(), versions()
    sets = {"threads": a.threads, "flash_attn": a.flash_attn, "cpu": a.cpu, "language": "en",
            "ggml": str(a.ggml), "ggml_bytes": a.ggml.stat().st_size, "ct2": str(a.ct2), "convert_secs": round(convert_secs, 2)}
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in configs:
        targets = inputs[:1] if kind == "cold" else inputs
        if kind.startswith("many"):  # jobs are cut from the long speech
            targets = inputs[1:]
        elif any(fnmatch.fnmatch(kind, p) for p in skip_long):
            targets = inputs[:1]
        elif a.long_only and kind != "cold":
            targets = inputs[1:]
        for label, path, ref in targets:
            print(f"… {label} {kind}", file=sys.stderr, flush=True)
            r = spawn(kind, path, a, a.timeout)
            r.update(audio=label, audio_secs=round(durations[label], 2), beam=parse(kind)["beam"])
            if "error" not in r:
                r["x_realtime"] = r.get("jobs_audio_secs", durations[label]) / r["wall_secs"]
                hyp = r.pop("text")
                r["wer"] = word_error_rate(r.pop("reference", ref), hyp)
                r["text_head"] = hyp[:160]
                r["words"] = len(hyp.split())
            else:
                print(f"   error: {r['error']}", file=sys.stderr, flush=True)
            rows.append(r)
            partial = {"device": dev, "versions": vers, "settings": sets, "rows": rows}
            (a.out / f"{a.tag}.partial.json").write_text(json.dumps(partial, indent=1))
            if "x_realtime" in r:
                print(f"   {r['x_realtime']:.1f}x real time, WER {r['wer'] * 100:.2f} %, GPU peak {r.get('gpu_mb_peak')} MB", file=sys.stderr, flush=True)

    report = {"device": dev, "versions": vers, "settings": sets, "rows": rows}
    finish(report, a)


def finish(report: dict, a: argparse.Namespace) -> None:
    report["derived"] = derive(report["rows"])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.tag}.json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    (a.out / f"{a.tag}.md").write_text(md)
    print(md)


def derive(rows: list[dict]) -> dict:
    """Ratios the targets are stated in, from rows of the same run."""
    ok = {(r["audio"], r["kind"]): r for r in rows if "error" not in r}
    long = sorted({r["audio"] for r in rows if r["audio"] != "jfk.wav"})
    d: dict = {}
    for audio in long:
        for b in (1, 5):
            p1, raw = ok.get((audio, f"ours-p1-b{b}")), ok.get((audio, f"raw-b{b}"))
            if p1 and raw:
                d[f"b{b}: ours-p1 speed / raw speed"] = round(p1["x_realtime"] / raw["x_realtime"], 3)
        # every multi-stream row against the single stream with the same
        # suffixes (flash attention, chunk size, CUDA graphs; threads aside)
        for (au, kind), r in ok.items():
            if au != audio or not kind.startswith("ours-p") or kind.startswith("ours-p1-"):
                continue
            base_kind = re.sub(r"-t\d+", "", re.sub(r"^ours-p\d+-", "ours-p1-", kind))
            p1 = ok.get((audio, base_kind))
            if p1:
                d[f"{kind} / {base_kind}: throughput"] = round(r["x_realtime"] / p1["x_realtime"], 2)
                d[f"{kind} / {base_kind}: WER points"] = round(100 * (r["wer"] - p1["wer"]), 2)
                n = parse(kind)["parallelism"]
                if r.get("gpu_mb_peak") is not None and p1.get("gpu_mb_peak") is not None:
                    d[f"{kind}: GPU MB per extra stream"] = round((r["gpu_mb_peak"] - p1["gpu_mb_peak"]) / (n - 1), 1)
        # CUDA graphs: the same configuration with them off (-nog)
        for (au, kind), r in ok.items():
            on = ok.get((audio, kind.removesuffix("-nog"))) if au == audio and kind.endswith("-nog") else None
            if on:
                d[f"{kind.removesuffix('-nog')}: CUDA graphs on / off speed"] = round(on["x_realtime"] / r["x_realtime"], 3)
        d.update(issue18_ratios(ok, audio))
    cold = ok.get(("jfk.wav", "cold"))
    if cold:
        d["cold: load + warm-up secs"] = round(cold["load_secs"] + cold["warmup_secs"], 3)
        if cold.get("ready_secs") is not None:
            d["cold: engine ready secs (constructor, default streams)"] = round(cold["ready_secs"], 3)
            d["cold: all streams loaded secs"] = round(cold.get("all_streams_loaded_secs") or 0.0, 3)
            d["cold: streams"] = cold.get("parallelism")
        d["cold: first job segments"] = cold.get("segments")
    return d


# issue 18's targets: ours at its default ≥ 1.1 × the best BatchedInferencePipeline
# figure; the whisper.cpp path ≥ 0.9 × the raw N-context harness; the
# many-jobs case ≥ 0.9 × the single long file
TARGETS = {"vs best fwbatch": 1.1, "vs rawq": 0.9, "many-jobs vs single": 0.9}


def issue18_ratios(ok: dict, audio: str) -> dict:
    """The ratios issue 18's targets are stated in, for one long audio:

    * each ``ours-ct2`` and ``ours-p*`` row (and the best of each engine)
      against the best ``fwbatch`` row of the same beam (best of the batch
      sizes run);
    * each ``ours-pN-bB[-fa][-cNN]`` row against ``rawq-pN-bB[-fa]`` (the
      harness's windows are ≤ 30 s: the ``-c30`` row is the same plan);
    * each ``manyJ-X`` row against row ``X`` on the single long file.

    Keys end in ``(target ≥ T)`` where the issue sets one."""
    d: dict = {}
    rows = {kind: r for (au, kind), r in ok.items() if au == audio}
    for beam in (1, 5):
        fwb = {k: r for k, r in rows.items() if parse(k)["engine"] == "fwbatch" and parse(k)["beam"] == beam}
        if not fwb:
            continue
        best_k = max(fwb, key=lambda k: fwb[k]["x_realtime"])
        best = fwb[best_k]["x_realtime"]
        d[f"b{beam}: best fwbatch ({best_k}) × real time"] = round(best, 1)
        ours = {k: r for k, r in rows.items() if not k.startswith("many") and parse(k)["engine"] in ("ours", "ours-ct2")
                and parse(k)["beam"] == beam}
        for k, r in sorted(ours.items()):
            d[f"{k} / {best_k}: speed"] = round(r["x_realtime"] / best, 3)
        for engine in ("ours", "ours-ct2"):
            mine = {k: r for k, r in ours.items() if parse(k)["engine"] == engine}
            if mine:
                top = max(mine, key=lambda k: mine[k]["x_realtime"])
                d[f"b{beam}: best {engine} ({top}) / best fwbatch: speed (target ≥ {TARGETS['vs best fwbatch']})"] = round(
                    mine[top]["x_realtime"] / best, 3)
                d[f"b{beam}: best {engine} ({top}) − best fwbatch: WER points"] = round(100 * (mine[top]["wer"] - fwb[best_k]["wer"]), 2)
    for k, r in sorted(rows.items()):
        if k.startswith("many") or parse(k)["engine"] != "ours" or "parallelism" not in parse(k):
            continue
        c = parse(k)
        if c["chunk_max_secs"] not in (None, 30.0) or c["threads"]:
            continue
        q = f"rawq-p{c['parallelism']}-b{c['beam']}" + ("-fa" if c["fa"] else "")
        same = " (same windows)" if c["chunk_max_secs"] == 30.0 else " (ours: 60 s chunks)"
        if q in rows:
            d[f"{k} / {q}: speed{same} (target ≥ {TARGETS['vs rawq']})"] = round(r["x_realtime"] / rows[q]["x_realtime"], 3)
        if q + "-ts" in rows:  # the harness in our decode mode: what is left is the engine's own overhead
            d[f"{k} / {q}-ts: speed{same}, engine overhead (target ≥ {TARGETS['vs rawq']})"] = round(
                r["x_realtime"] / rows[q + "-ts"]["x_realtime"], 3)
    for k, r in sorted(rows.items()):
        if k.endswith("-ts") and parse(k)["engine"] == "rawq" and k.removesuffix("-ts") in rows:
            plain = rows[k.removesuffix("-ts")]
            d[f"{k} / {k.removesuffix('-ts')}: speed, what timestamps cost"] = round(r["x_realtime"] / plain["x_realtime"], 3)
            d[f"{k} − {k.removesuffix('-ts')}: WER points"] = round(100 * (r["wer"] - plain["wer"]), 2)
    for k, r in sorted(rows.items()):
        if not k.startswith("many"):
            continue
        single = rows.get(parse(k)["single"])
        if single:
            d[f"{k} / {parse(k)['single']}: aggregate speed (target ≥ {TARGETS['many-jobs vs single']})"] = round(
                r["x_realtime"] / single["x_realtime"], 3)
            d[f"{k} − {parse(k)['single']}: WER points"] = round(100 * (r["wer"] - single["wer"]), 2)
    return d


def markdown(report: dict) -> str:
    dev, ver = report["device"], report["versions"]
    lines = [
        f"Device: {dev.get('gpu')}; driver CUDA {dev.get('driver_cuda')}; nvcc {dev.get('nvcc')}; torch CUDA {dev.get('torch_cuda')}; "
        f"{dev.get('host_cpus')} CPUs; {dev.get('platform')}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if k != "whisper.cpp system_info"),
        f"whisper.cpp system info: `{ver.get('whisper.cpp system_info')}`",
        "",
        "| audio | configuration | beam | × real time | WER % | wall s | load s | GPU MB peak | GPU MB after load | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['audio']} | {r['kind']} | {r.get('beam', '')} | – | – | – | – | {r.get('gpu_mb_peak')} | – | error: `{r['error'][:300]}` |")
            continue
        notes = []
        if r.get("backend"):
            notes.append(f"backend {r['backend']}")
        if "warmup_secs" in r:
            notes.append(f"warm-up {r['warmup_secs']:.3f} s")
        if "chunks" in r:
            notes.append(f"{r['chunks']} chunks")
        if "segments" in r and r["kind"] == "cold":
            notes.append(f"first job {r['segments']} segments in {r['wall_secs']:.3f} s")
            if r.get("ready_secs") is not None:
                notes.append(f"ready {r['ready_secs']:.3f} s with {r.get('first_job_streams_loaded')} of {r.get('parallelism')} streams, "
                             f"all loaded at {r.get('all_streams_loaded_secs') or 0:.3f} s")
        wt = r.get("whisper_timings") or {}
        if wt:
            notes.append("whisper.cpp: " + ", ".join(f"{k.removesuffix('_ms')} {wt[k] / 1000:.2f} s/{wt.get(k.replace('_ms', '_runs'), '-')}"
                                                     for k in ("encode_ms", "decode_ms", "batchd_ms", "sample_ms", "mel_ms") if k in wt))
        if r.get("decode_and_plan_secs") is not None:
            notes.append(f"audio decode + plan {r['decode_and_plan_secs']:.2f} s")
        sp = r.get("streamed_plan")
        if sp and sp.get("first_chunk_started_secs") is not None:
            notes.append(f"first chunk to a stream at {sp['first_chunk_started_secs']:.2f} s (streamed plan: "
                         f"{sp.get('used')} of {sp.get('guessed')} guessed chunks kept)")
        if r.get("compute_type"):
            notes.append(f"CTranslate2 {r['compute_type']}, batch {r.get('batch_size')}")
        elif r.get("batch_size"):
            notes.append(f"batch {r['batch_size']}")
        if r.get("windows"):
            notes.append(f"{r['windows']} windows ≤ {r.get('window_max_secs')} s, {r.get('contexts')} contexts × {r.get('threads_per_context')} threads"
                         + (", timestamp mode + token timestamps (our decode mode)" if r.get("timestamps") else ""))
        if r.get("batcher"):
            notes.append("batcher " + ", ".join(f"{k} {v}" for k, v in r["batcher"].items()))
        if r.get("jobs"):
            notes.append(f"{r['jobs']} jobs, {r['jobs_audio_secs']:.0f} s of audio ({r['job_secs_min']}–{r['job_secs_max']} s each), "
                         f"done at {r['job_done_secs_median']} s (median) / {r['job_done_secs_max']} s (last); {r.get('how')}")
        if r.get("features_secs") is not None:
            notes.append(f"log-mel features {r['features_secs']:.2f} s of the wall time")
        if r.get("torch_max_allocated_mb") is not None:
            notes.append(f"torch max alloc {r['torch_max_allocated_mb']} MB")
        lines.append(
            f"| {r['audio']} | {r['kind']} | {r.get('beam', '')} | {r['x_realtime']:.1f} | {r['wer'] * 100:.2f} | {r['wall_secs']:.2f} | "
            f"{r['load_secs']:.3f} | {r.get('gpu_mb_peak')} | {r.get('gpu_mb_after_load')} | {'; '.join(notes)} |"
        )
    lines += ["", "| derived | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in report.get("derived", {}).items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
