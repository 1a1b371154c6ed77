"""Thin, typed wrapper over whisper.cpp (through pywhispercpp's bindings).

Why not ``pywhispercpp.model.Model``: the engine needs control it does not
expose cleanly: load failures told apart (whisper.cpp returns NULL, which the
binding cannot show, so the log lines of the load are inspected), per-call
sampling strategy, token data for word timestamps, and the abort callback.

One :class:`WhisperContext` is one loaded model with the single whisper state
whisper.cpp creates at load; that state is reused for every call (creating a
state per chunk churned ~700 MB of GPU memory in the original server).
"""

from __future__ import annotations

import atexit
import logging
import re
import struct
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _pywhispercpp as pw
import numpy as np

from whisperop.core.errors import GpuMemoryError, ModelLoadError, ModelNotFoundError, TranscriptionError

log = logging.getLogger("whisperop.whispercpp")

GGML_MAGIC = 0x67676D6C
_LOG_ERROR = 4
_GPU_BACKEND_LINE = re.compile(r"backend_init_gpu: using ([A-Za-z]+?)\d* backend")
_OOM_MARKERS = ("out of memory", "cudamalloc failed", "failed to allocate", "cuda error 2", "not enough memory")


class _LogRouter:
    """Routes whisper.cpp/ggml log lines into Python logging, and lets a load
    capture the lines it caused (the only way to see why a load failed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._captures: list[list[tuple[int, str]]] = []
        self.lines: list[str] = []
        pw.whisper_log_set(self._callback)

    def _callback(self, level: int, text: str, *_: object) -> None:
        line = text.rstrip("\n")
        if not line:
            return
        with self._lock:
            for cap in self._captures:
                cap.append((level, line))
            self.lines = (self.lines + [line])[-200:]
        if level >= _LOG_ERROR and level != 5:
            log.warning("whisper.cpp: %s", line)
        else:
            log.debug("whisper.cpp: %s", line)

    def capture(self) -> list[tuple[int, str]]:
        cap: list[tuple[int, str]] = []
        with self._lock:
            self._captures.append(cap)
        return cap

    def release(self, cap: list[tuple[int, str]]) -> None:
        with self._lock:
            self._captures.remove(cap)


_router: _LogRouter | None = None
_router_lock = threading.Lock()
_live_contexts: "weakref.WeakSet[WhisperContext]" = weakref.WeakSet()


@atexit.register
def _shutdown() -> None:
    """Free contexts and detach the Python log callback before the interpreter
    tears down (a callback into a finalising interpreter crashes)."""
    for ctx in list(_live_contexts):
        ctx.close()
    if _router is not None:
        pw.whisper_log_set(None)


def log_router() -> _LogRouter:
    global _router
    with _router_lock:
        if _router is None:
            _router = _LogRouter()
        return _router


def check_model_file(path: Path) -> None:
    """Fail early and clearly on a missing or non-GGML file (whisper.cpp would
    return NULL, which the binding turns into a crash on first use)."""
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4 + 11 * 4)
    if len(head) < 48 or struct.unpack("<I", head[:4])[0] != GGML_MAGIC:
        raise ModelLoadError(f"{path} is not a whisper.cpp GGML model (bad magic)")


@dataclass(frozen=True)
class DecodeOptions:
    language: str | None = None  # None = detect, then transcribe
    translate: bool = False
    beam_size: int = 1
    temperature: float = 0.0
    temperature_inc: float = 0.2
    word_timestamps: bool = True
    n_threads: int = 2
    initial_prompt: str | None = None


@dataclass(frozen=True)
class RawToken:
    text: bytes
    t0: int  # centiseconds, relative to the call's audio
    t1: int
    p: float


@dataclass(frozen=True)
class RawSegment:
    t0: int  # centiseconds, relative to the call's audio
    t1: int
    text: bytes
    tokens: tuple[RawToken, ...]


class WhisperContext:
    """One loaded model (and its one reusable state)."""

    def __init__(self, model_path: str | Path, use_gpu: bool = True, gpu_device: int = 0, flash_attn: bool = False) -> None:
        path = Path(model_path)
        check_model_file(path)
        cparams = pw.whisper_context_default_params()
        cparams.use_gpu = use_gpu
        cparams.gpu_device = gpu_device
        cparams.flash_attn = flash_attn
        router = log_router()
        cap = router.capture()
        try:
            ctx = pw.whisper_init_from_file_with_params(str(path), cparams)
        finally:
            router.release(cap)
        errors = [line for level, line in cap if level == _LOG_ERROR]
        if errors:
            message = "; ".join(errors[-3:])
            if any(marker in message.lower() for marker in _OOM_MARKERS):
                raise GpuMemoryError(f"not enough GPU memory to load {path.name}: {message}")
            raise ModelLoadError(f"whisper.cpp could not load {path}: {message}")
        self._ctx = ctx
        self.path = path
        self.load_log = [line for _, line in cap]
        self._eot = pw.whisper_token_eot(ctx)
        self.multilingual = bool(pw.whisper_is_multilingual(ctx))
        self._lock = threading.Lock()
        _live_contexts.add(self)

    @property
    def backend(self) -> str:
        """The backend whisper.cpp said this context runs on (``CUDA``,
        ``Vulkan``, ``Metal``…; ``CPU`` when it did not take a GPU, e.g. a
        build without CUDA, no device, or ``use_gpu`` off). Read from
        ``whisper_backend_init_gpu: using CUDA0 backend``; a CUDA build also
        logs ``ggml_cuda_init`` for CPU contexts, so that line proves nothing."""
        for line in self.load_log:
            m = _GPU_BACKEND_LINE.search(line)
            if m:
                return m.group(1)
        return "CPU"

    def full(self, pcm: np.ndarray, opts: DecodeOptions, abort: Callable[[], bool] | None = None) -> tuple[list[RawSegment], str]:
        """Run ``whisper_full`` on ``pcm`` (16 kHz mono float32).

        Returns the segments and the language whisper used (the detected one
        when ``opts.language`` is None). Raises :class:`TranscriptionError`
        when whisper.cpp fails, or returns what was decoded so far when
        ``abort`` turned true (the caller checks its own cancel flag).
        """
        strategy = (
            pw.whisper_sampling_strategy.WHISPER_SAMPLING_BEAM_SEARCH
            if opts.beam_size > 1
            else pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY
        )
        params = pw.whisper_full_default_params(strategy)
        params.n_threads = max(1, opts.n_threads)
        params.print_progress = False
        params.print_realtime = False
        params.print_timestamps = False
        params.print_special = False
        params.no_context = True
        params.translate = opts.translate
        params.language = opts.language or ""  # empty = detect, then transcribe
        params.detect_language = False  # detect-only mode returns 0 segments
        params.token_timestamps = opts.word_timestamps
        params.temperature = opts.temperature
        params.temperature_inc = opts.temperature_inc
        params.suppress_blank = True
        if opts.initial_prompt:
            params.initial_prompt = opts.initial_prompt
        if opts.beam_size > 1:
            params.beam_search = {"beam_size": opts.beam_size, "patience": -1.0}
        else:
            params.greedy = {"best_of": 5 if opts.temperature_inc > 0 else 1}
        if abort is not None:
            pw.assign_abort_callback(params, lambda *_: bool(abort()))
        audio = np.ascontiguousarray(pcm, dtype=np.float32)
        with self._lock:
            rc = pw.whisper_full(self._ctx, params, audio, audio.size)
            aborted = abort is not None and abort()
            if rc != 0 and not aborted:
                raise TranscriptionError(f"whisper.cpp failed (whisper_full returned {rc})")
            segments = self._collect()
            language = pw.whisper_lang_str(pw.whisper_full_lang_id(self._ctx)) if opts.language is None else opts.language
        return segments, language

    def _collect(self) -> list[RawSegment]:
        ctx = self._ctx
        out: list[RawSegment] = []
        for i in range(pw.whisper_full_n_segments(ctx)):
            tokens: list[RawToken] = []
            for j in range(pw.whisper_full_n_tokens(ctx, i)):
                data = pw.whisper_full_get_token_data(ctx, i, j)
                if data.id >= self._eot:  # special and timestamp tokens
                    continue
                tokens.append(RawToken(_as_bytes(pw.whisper_full_get_token_text(ctx, i, j)), data.t0, data.t1, float(data.p)))
            out.append(
                RawSegment(
                    pw.whisper_full_get_segment_t0(ctx, i),
                    pw.whisper_full_get_segment_t1(ctx, i),
                    _as_bytes(pw.whisper_full_get_segment_text(ctx, i)),
                    tuple(tokens),
                )
            )
        return out

    def close(self) -> None:
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is not None:
            with self._lock:
                pw.whisper_free(ctx)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", errors="replace")


def system_info() -> str:
    return str(pw.whisper_print_system_info())


def gpu_compiled() -> bool:
    """Whether this whisper.cpp build has a GPU backend at all (pywhispercpp's
    PyPI wheels do not: they silently run on the CPU)."""
    info = system_info().upper()
    return any(f"{name} :" in info for name in ("CUDA", "VULKAN", "METAL", "SYCL", "HIP", "CANN", "MUSA"))
