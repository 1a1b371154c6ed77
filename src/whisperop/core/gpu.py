"""GPU facts from NVML (nvidia-ml-py), or ``None`` where there is no GPU.

``/health``, ``/model/status`` and the ``waiting_for_gpu`` state report
VRAM figures; on a machine without an NVIDIA driver every query answers
``None`` (never raises), which the facade turns into ``null`` or omits.
NVML is initialised once and kept: the queries then cost microseconds.

Test hook (CPU CI only; no deployment sets it): ``WHISPEROP_TEST_GPU_FILE``
names a JSON file ``{"name", "total_mb", "free_mb"}`` read at every query
instead of NVML, so a test can make GPU memory "free up" while a server runs
(issue 14: streams added when memory frees). The engine still runs on the
CPU; only what NVML would answer is replaced.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("whisperop.gpu")

_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "ok": False}
TEST_GPU_ENV = "WHISPEROP_TEST_GPU_FILE"


@dataclass(frozen=True)
class GpuMemory:
    total_mb: int
    used_mb: int
    free_mb: int


def _init() -> object | None:
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                import pynvml

                pynvml.nvmlInit()
                _state["ok"] = True
            except Exception as exc:  # no driver, no library, no GPU
                log.debug("NVML unavailable: %s", exc)
        if not _state["ok"]:
            return None
        import pynvml

        return pynvml


def _test_gpu() -> dict[str, Any] | None:
    """The test hook's answer (module docstring), or None when it is not set."""
    path = os.environ.get(TEST_GPU_ENV)
    if not path:
        return None
    try:
        doc = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _handle(device: int) -> tuple[object, object] | None:
    nvml = _init()
    if nvml is None:
        return None
    try:
        return nvml, nvml.nvmlDeviceGetHandleByIndex(device)  # type: ignore[attr-defined]
    except Exception:
        return None


def gpu_name(device: int = 0) -> str | None:
    fake = _test_gpu()
    if fake is not None:
        return str(fake["name"])
    h = _handle(device)
    if h is None:
        return None
    nvml, handle = h
    try:
        name = nvml.nvmlDeviceGetName(handle)  # type: ignore[attr-defined]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return None


def gpu_memory(device: int = 0) -> GpuMemory | None:
    fake = _test_gpu()
    if fake is not None:
        total, free = int(fake["total_mb"]), int(fake["free_mb"])
        return GpuMemory(total_mb=total, used_mb=total - free, free_mb=free)
    h = _handle(device)
    if h is None:
        return None
    nvml, handle = h
    try:
        info = nvml.nvmlDeviceGetMemoryInfo(handle)  # type: ignore[attr-defined]
    except Exception:
        return None
    mb = 1024 * 1024
    return GpuMemory(total_mb=int(info.total // mb), used_mb=int(info.used // mb), free_mb=int(info.free // mb))


@dataclass(frozen=True)
class GpuInfo:
    """The GPU a model runs on, as ``/health`` reports it: this machine's in local mode, what the
    inference pods report in cluster mode (the facade pod itself has no GPU)."""

    name: str | None
    total_mb: int | None
    used_mb: int | None = None

    def report(self) -> dict[str, object]:
        """The camelCase form the worker annotates its pod with and WhisperModel ``status.gpu`` keeps."""
        return {k: v for k, v in (("name", self.name), ("vramTotalMB", self.total_mb),
                                  ("vramUsedMB", self.used_mb)) if v is not None}

    @classmethod
    def from_report(cls, doc: object) -> GpuInfo | None:
        if not isinstance(doc, dict) or not doc:
            return None
        return cls(name=doc.get("name"), total_mb=doc.get("vramTotalMB"), used_mb=doc.get("vramUsedMB"))


def local_gpu(device: int = 0) -> GpuInfo | None:
    """This machine's GPU ``device`` (None without an NVIDIA driver or GPU)."""
    name, mem = gpu_name(device), gpu_memory(device)
    if name is None and mem is None:
        return None
    return GpuInfo(name=name, total_mb=mem.total_mb if mem else None, used_mb=mem.used_mb if mem else None)
