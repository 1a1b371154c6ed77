"""GPU benchmark: our engine against raw whisper.cpp, faster-whisper and
Hugging Face transformers, on the same weights, audio and GPU. One command,
one JSON and one markdown report.

    python bench/gpu.py --ct2 DIR [--ggml FILE] [--speech FILE.flac] [--out DIR]
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
* ``fw-bB`` / ``fwbatch-bB``: faster-whisper (CTranslate2, float16) sequential,
  and its ``BatchedInferencePipeline`` (batch 16);
* suffixes: ``-fa`` turns whisper.cpp's flash attention on (``ours-p8-b1-fa``),
  ``-cNN`` sets ``CHUNK_MAX_SECS`` (``ours-p8-b1-c30``), ``-tNN`` the CPU
  threads of the process (default ``--threads``), ``-nog`` turns ggml's CUDA
  graphs off (``GGML_CUDA_DISABLE_GRAPHS=1``; only matters for a build with
  ``GGML_CUDA_GRAPHS=ON``);
* ``hf-bsK-bB``: transformers' Whisper (fp16, SDPA) in the chunked
  long-form ASR pipeline (30 s chunks, segment timestamps), batch K: the insanely-fast-whisper recipe.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
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
QUICK_CPU_CONFIGS = ["cold", "ours-p1-b1", "raw-b1", "ours-p2-b1", "raw8-b1", "fw-b1", "fwbatch-b1", "hf-bs1-b1"]


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
    """``ours-p8-b1-fa-c30-t32-nog`` → its settings; the suffixes in any order."""
    mods: dict = {"fa": False, "chunk_max_secs": None, "threads": None, "cuda_graphs": True}
    while True:
        m = re.search(r"-(fa|nog|c\d+|t\d+)$", kind)
        if not m:
            break
        kind, tag = kind[: m.start()], m.group(1)
        if tag == "fa":
            mods["fa"] = True
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
    m = re.fullmatch(r"(ours)-p(\d+)-b(\d+)|(raw8?|fw|fwbatch)-b(\d+)|hf-bs(\d+)-b(\d+)|cold", kind)
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
    if cfg["engine"] in ("cold", "ours"):
        from whisperop.core.settings import EngineSettings
        from whisperop.inference.engine import TranscribeRequest, WhisperEngine

        par = cfg.get("parallelism", 0)  # cold: 0 = the engine's default for the device
        extra = {"CHUNK_MAX_SECS": cfg["chunk_max_secs"]} if cfg["chunk_max_secs"] else {}
        if cfg["threads"]:
            extra["WHISPER_THREADS"] = cfg["threads"]
        settings = EngineSettings(**extra, USE_GPU=use_gpu, BEAM_SIZE=beam,
                                  FLASH_ATTN=fa if cfg["engine"] == "ours" or a.flash_attn else None, PARALLELISM=par)
        engine = WhisperEngine(a.ggml, settings)
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
        t0 = time.perf_counter()
        result = engine.transcribe_file(audio, TranscribeRequest(language="en"),
                                        on_decoded=lambda *_: decoded_at.append(time.perf_counter()))
        wall = time.perf_counter() - t0
        out["decode_and_plan_secs"] = round(decoded_at[0] - t0, 3) if decoded_at else None
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
            segments, _ = BatchedInferencePipeline(model=model).transcribe(pcm, batch_size=16, **common)
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
    ap.add_argument("--configs", help="comma-separated configurations or glob patterns (default: all)")
    ap.add_argument("--skip-long", help="configurations (glob) run on jfk.wav only")
    ap.add_argument("--long-only", action="store_true", help="run the long speech only (cold start still uses jfk.wav)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--flash-attn", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="run everything on the CPU (a check of the code paths)")
    ap.add_argument("--quick", action="store_true", help="short audio, few configurations")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per configuration")
    ap.add_argument("--tag", default="gpu", help="report file names: <tag>.json / <tag>.md")
    ap.add_argument("--merge", nargs="+", type=Path, help="merge these JSON reports into one")
    a = ap.parse_args()
    ensure_importable()
    a.baseline_mb = None if a.baseline_mb < 0 else a.baseline_mb
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

        a.ct2 = EngineSettings().model_cache_dir / "ct2-base"
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
    if a.speech is not None:
        inputs.append((a.speech.name, a.speech, a.speech.with_suffix(".txt").read_text(encoding="utf-8").strip()))
    durations = {label: load_pcm(p).size / SR for label, p, _ in inputs}

    default = QUICK_CPU_CONFIGS if a.quick else GPU_CONFIGS
    pats = a.configs.split(",") if a.configs else default
    configs = [c for c in (GPU_CONFIGS + QUICK_CPU_CONFIGS) if any(fnmatch.fnmatch(c, p) for p in pats)]
    configs = list(dict.fromkeys(configs)) + [p for p in pats if not any(ch in p for ch in "*?[") and p not in GPU_CONFIGS + QUICK_CPU_CONFIGS]
    skip_long = a.skip_long.split(",") if a.skip_long else []

    dev, vers = device_info(), versions()
    sets = {"threads": a.threads, "flash_attn": a.flash_attn, "cpu": a.cpu, "language": "en",
            "ggml": str(a.ggml), "ggml_bytes": a.ggml.stat().st_size, "ct2": str(a.ct2), "convert_secs": round(convert_secs, 2)}
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in configs:
        targets = inputs[:1] if kind == "cold" else inputs
        if any(fnmatch.fnmatch(kind, p) for p in skip_long):
            targets = inputs[:1]
        elif a.long_only and kind != "cold":
            targets = inputs[1:]
        for label, path, ref in targets:
            print(f"… {label} {kind}", file=sys.stderr, flush=True)
            r = spawn(kind, path, a, a.timeout)
            r.update(audio=label, audio_secs=round(durations[label], 2), beam=parse(kind)["beam"])
            if "error" not in r:
                r["x_realtime"] = durations[label] / r["wall_secs"]
                hyp = r.pop("text")
                r["wer"] = word_error_rate(ref, hyp)
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
    cold = ok.get(("jfk.wav", "cold"))
    if cold:
        d["cold: load + warm-up secs"] = round(cold["load_secs"] + cold["warmup_secs"], 3)
        if cold.get("ready_secs") is not None:
            d["cold: engine ready secs (constructor, default streams)"] = round(cold["ready_secs"], 3)
            d["cold: all streams loaded secs"] = round(cold.get("all_streams_loaded_secs") or 0.0, 3)
            d["cold: streams"] = cold.get("parallelism")
        d["cold: first job segments"] = cold.get("segments")
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
