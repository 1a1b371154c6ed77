"""Loading the model, in both modes: load, wait for GPU memory, retry, test hooks.

``whisperop serve`` (:mod:`whisperop.inference.runtime`) turns what happens
into model states and events (SSE, webhooks); the worker pod
(:mod:`whisperop.inference.worker`) into its ``whisperop.io/load-state``
annotation. The loop itself is this one:

    loading ─→ engine (warmed up by its constructor)
       └─(GpuMemoryError)→ waiting_for_gpu ─(poll interval)→ loading
    any wait ─(no longer wanted)→ None
    engine's process died ─(out of GPU memory)→ waiting_for_gpu ─→ loading
                          └─(any other death)→ loading

Test hooks (environment, the same in both modes; nothing else about the
engine is simulated):

- ``WHISPEROP_FAULT_LOAD_OOM_COUNT=N``: the next N load attempts raise
  :class:`GpuMemoryError` as if VRAM were full (exercises ``waiting_for_gpu``).
- ``WHISPEROP_FAULT_LOAD_DELAY_SECS=S``: every load takes S seconds longer
  (makes ``loading`` observable; an unload request interrupts the delay).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from whisperop.core.errors import GpuMemoryError, WhisperOpError
from whisperop.core.gpu import gpu_memory
from whisperop.core.settings import EngineSettings, FaultHooks
from whisperop.inference.isolated import Engine, make_engine

log = logging.getLogger("whisperop.lifecycle")

EngineFactory = Callable[[Path, EngineSettings], Engine]
__all__ = ["EngineFactory", "FaultHooks", "LoadObserver", "ModelLoader", "default_engine"]


def default_engine(path: Path, settings: EngineSettings) -> Engine:
    return make_engine(path, settings)  # ENGINE_ISOLATION: in a child process on a GPU by default


class LoadObserver(Protocol):
    """What a mode does with the load loop's steps (model events, or a pod annotation)."""

    def wanted(self) -> bool:
        """Still worth loading (no unload or shutdown came in)."""
        ...

    def sleep(self, secs: float) -> bool:
        """Wait up to ``secs``; False as soon as the model is no longer wanted."""
        ...

    def loading(self) -> None:
        ...

    def waiting_for_gpu(self, needed_mb: int, free_mb: int, retry_secs: float, exc: GpuMemoryError) -> None:
        ...


def _size_mb(path: Path) -> int:
    """The model's size on disk in MB: a GGML file, or every file of a CTranslate2 directory (its
    model.bin is nearly all of it) — the least a load needs, when nothing better is known."""
    if path.is_dir():
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    else:
        size = path.stat().st_size if path.exists() else 0
    return max(1, size // (1024 * 1024))


class ModelLoader:
    """The load loop (see the module docstring); one per runtime (it counts the OOM test hook down)."""

    def __init__(self, settings: EngineSettings, faults: FaultHooks | None = None,
                 engine_factory: EngineFactory = default_engine) -> None:
        self.settings = settings
        self.faults = faults or FaultHooks()
        self._oom_left = self.faults.load_oom_count
        self._factory = engine_factory
        self.load_secs = 0.0  # how long the last successful engine construction (load + warm-up) took

    def load(self, locate: Callable[[], tuple[Path, float]], observer: LoadObserver) -> Engine | None:
        """Load the model ``locate()`` names (its path and the GPU poll interval, read again for every
        attempt), waiting for GPU memory as long as needed; None once no longer wanted. Any other
        load error (a missing or broken file) propagates."""
        while observer.wanted():
            observer.loading()
            path, poll = locate()
            try:
                return self._attempt(path, observer)
            except GpuMemoryError as exc:
                if not self.wait_for_gpu(exc, path, poll, observer):
                    return None
            except _Unwanted:
                return None
        return None

    def wait_for_gpu(self, exc: GpuMemoryError, path: Path, poll: float, observer: LoadObserver) -> bool:
        """``waiting_for_gpu`` with the figures of ``exc``, then one poll interval; False once no
        longer wanted. Also the state of a loaded engine whose process died out of GPU memory
        (:meth:`whisperop.inference.isolated.IsolatedEngine.death_error`): the next load waits."""
        mem = gpu_memory(self.settings.cuda_device)
        needed = exc.vram_needed_mb if exc.vram_needed_mb is not None else _size_mb(path)
        free = exc.vram_free_mb if exc.vram_free_mb is not None else (mem.free_mb if mem else 0)
        log.warning("not enough GPU memory to load the model; retrying",
                    extra={"error": str(exc), "retry_in_secs": poll})
        observer.waiting_for_gpu(int(needed), int(free), poll, exc)
        return observer.sleep(poll)

    def after_death(self, err: WhisperOpError, path: Path, poll: float, observer: LoadObserver) -> bool:
        """A loaded engine's process died (:meth:`whisperop.inference.executor.Executor.serve` says
        why; the engine is closed): out of GPU memory → ``waiting_for_gpu`` for a poll interval
        first. True when the model is still wanted, to be loaded again."""
        if isinstance(err, GpuMemoryError) and not self.wait_for_gpu(err, path, poll, observer):
            return False
        return observer.wanted()

    def _attempt(self, path: Path, observer: LoadObserver) -> Engine:
        if self.faults.load_delay_secs > 0 and not observer.sleep(self.faults.load_delay_secs):
            raise _Unwanted()
        if self._oom_left > 0:
            self._oom_left -= 1
            mem = gpu_memory(self.settings.cuda_device)
            raise GpuMemoryError("simulated out of GPU memory (WHISPEROP_FAULT_LOAD_OOM_COUNT test hook)",
                                 vram_needed_mb=_size_mb(path), vram_free_mb=mem.free_mb if mem else 0)
        t0 = time.perf_counter()
        engine = self._factory(path, self.settings)
        self.load_secs = time.perf_counter() - t0
        return engine


class _Unwanted(Exception):
    """A load was abandoned because an unload (or stop) was requested meanwhile."""
