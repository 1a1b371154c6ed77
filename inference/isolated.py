"""whisper.cpp in a supervised child process: a native crash is a state, not a dead server.

Why: ggml aborts (SIGABRT) or dereferences a failed allocation (SIGSEGV) when
CUDA runs out of memory; no Python exception ever comes out of it. Measured
on an H100 with another process holding the rest of the memory (issue 14):
~20 MB free → SIGABRT at load, ~150 MB → ``cudaMalloc failed: out of memory``
then SIGSEGV, an extra stream loading at ~600 MB free → SIGSEGV, memory taken
after load → SIGABRT inside ``transcribe_file``. In-process, each of these
killed ``whisperop serve`` (or crash-looped the worker pod).

:class:`IsolatedEngine` has the interface of :class:`WhisperEngine` (same
constructor, ``transcribe_file`` with the same callbacks, ``close``) and runs
the real ``WhisperEngine`` in ``python -m whisperop.inference.isolated``,
speaking pickled messages over a socket pair:

- progress, ``on_decoded`` and checkpoint writes cross back in order and run
  in the caller's thread (a chunk's checkpoint is durable before its progress,
  as in-process); cancel crosses forward as one message when ``should_cancel``
  turns true (polled every 0.25 s, as the engine's own throttle);
- the child's stdout/stderr (its Python log lines and whatever ggml/CUDA
  print before dying) are kept in a ring buffer of the last 200 lines;
- a reader thread sees the child's death at once (EOF on the socket);
  during load an out-of-memory death (log lines ``out of memory``,
  ``cudaMalloc failed``, ``failed to allocate … buffer``) or a death by a
  signal raises :class:`GpuMemoryError` (the runtime's ``waiting_for_gpu``,
  retried every poll interval); any other death a :class:`ModelLoadError` with
  the last lines; a death during or before a job raises :class:`EngineCrashed`
  (the runtime requeues the job with its checkpoint and loads again).

Used where :func:`isolation_on` says so (``ENGINE_ISOLATION``: ``auto``, the
default, = on a GPU only; ``process``; ``off``), through :func:`make_engine`.

Pre-flight (:func:`preflight`): with NVML and a measured need of this model
(``<model>.vram.json``, written by the child at its first GPU load: NVML free
memory before load, after the first stream, after all streams), a load that
cannot fit one stream raises :class:`GpuMemoryError` without starting
whisper.cpp, and a load that fits only some streams starts that many.

Supervision of a loaded engine (:meth:`IsolatedEngine.supervise`, called by
the runtime and the worker): every GPU poll interval, while fewer streams run
than wanted, NVML's free memory is checked against the measured per-stream
need and the child is asked to load the streams that fit now (the ``grow``
message; it loads them in the background as at a load); the death of an idle
child is reported the instant the socket ends (``on_death``), so the model
does not sit "ready" on a dead engine until the next job.

Test hook (environment of the *serving* process; the child gets the armed
step and really kills itself with the signal):
``WHISPEROP_FAULT_CHILD_DIE=PHASE:KIND:COUNT[,…]`` — PHASE ``load`` (before
the model loads), ``idle`` (0.5 s after it reported the model loaded, no job
running) or ``job`` (right after the job's first chunk is reported),
KIND ``segv`` / ``abrt`` (that signal), ``oom`` (print whisper.cpp's
out-of-memory log lines, then exit 1) or ``exit`` (exit 3, no such lines),
COUNT = how many children it applies to (counted in the serving process).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from whisperop.core.checkpoints import Checkpoint, ChunkRecord
from whisperop.core.errors import (
    EngineCrashed,
    GpuMemoryError,
    ModelLoadError,
    TranscriptionError,
    WhisperOpError,
)
from whisperop.core.gpu import gpu_memory, gpu_name
from whisperop.core.models import TranscriptionResult
from whisperop.core.settings import GPU_DEFAULT_PARALLELISM, EngineSettings
from whisperop.inference.engine import CancelCheck, ProgressCallback, TranscribeRequest

log = logging.getLogger("whisperop.engine.isolated")
child_log = logging.getLogger("whisperop.engine.child")

LOG_TAIL_LINES = 200  # the child's last output lines kept (a CUDA abort prints a handful)
CANCEL_POLL_SECS = 0.25
CLOSE_WAIT_SECS = 30.0  # a closing child frees its contexts (CUDA teardown takes seconds), then it is killed
#: GPU memory kept free beyond the measured need: a job's peak exceeds the warm-up's by tens of MB
#: (docs/gpu-oom.md), and another process may grow meanwhile
PREFLIGHT_MARGIN_MB = 128
_OOM_MARKERS = ("out of memory", "cudamalloc failed", "failed to allocate", "cuda error 2", "not enough memory")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
FAULT_ENV = "WHISPEROP_FAULT_CHILD_DIE"
IDLE_FAULT_SECS = 0.5  # the idle fault's delay after "loaded" (the parent is serving by then)
_CHILD_FAULT_ENV = "WHISPEROP_CHILD_FAULT"  # the one fault armed for this child ("load:segv", …)

#: what whisper.cpp printed in the issue's 150 MB case (the oom fault prints it)
OOM_LINES = (
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 90.39 MiB on device 0: cudaMalloc failed: out of memory",
    "ggml_gallocr_reserve_n_impl: failed to allocate CUDA0 buffer of size 3072000",
    "whisper_init_state: failed to allocate the compute buffer",
)


class Engine(Protocol):
    """What the runtime and the worker use of an engine (in-process or isolated)."""

    backend: str
    parallelism: int

    def transcribe_file(
        self,
        path: str | os.PathLike[str],
        request: TranscribeRequest = ...,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_decoded: Callable[[float, int], None] | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> TranscriptionResult: ...

    def close(self) -> None: ...


def isolation_on(settings: EngineSettings) -> bool:
    """``ENGINE_ISOLATION``: ``process`` / ``off``; ``auto`` (the default) = on a GPU only.

    Why not everywhere: on the CPU nothing aborts for lack of GPU memory, and
    the child costs a second Python start and import at every load (0.4 CPU
    seconds, 1.1 s wall on this project's loaded 2-core machine, against a
    1.5 s load of whisper base q8_0: over the 5 % the issue allows); the jobs
    showed no difference beyond the machine's noise (docs/benchmarks.md,
    "Engine isolation overhead")."""
    if settings.engine == "ctranslate2":
        # CTranslate2 reports CUDA out-of-memory as a Python exception (GpuMemoryError in
        # ct2engine), it does not abort; the child process speaks whisper.cpp's engine only
        return False
    if settings.engine_isolation != "auto":
        return settings.engine_isolation == "process"
    return settings.use_gpu and gpu_memory(settings.cuda_device) is not None


def make_engine(model_path: str | Path, settings: EngineSettings | None = None, parallelism: int | None = None) -> Engine:
    """The engine ``ENGINE_ISOLATION`` asks for: in a child process, or in this one (:func:`isolation_on`)."""
    s = (settings or EngineSettings()).resolved(Path(model_path))  # ENGINE=auto: the model's engine
    if not isolation_on(s):
        from whisperop.inference.engine import create_engine

        return create_engine(model_path, s, parallelism)  # ENGINE picks whisper.cpp or CTranslate2
    return IsolatedEngine(model_path, s, parallelism)


def stream_counts(engine: Engine | None) -> tuple[int | None, int | None]:
    """(decode streams loaded, wanted) of a loaded engine, for ``/model/status``; (None, None) for
    an engine without streams (CTranslate2 batches instead)."""
    loaded = getattr(engine, "streams_loaded", None)
    wanted = getattr(engine, "streams_wanted", None) or getattr(engine, "parallelism", None)
    if not isinstance(loaded, int) or not isinstance(wanted, int):
        return None, None
    return loaded, max(loaded, wanted)


# ── the measured memory need (pre-flight) ───────────────────────────────────


@dataclass(frozen=True)
class VramNeed:
    """GPU memory one process of this model took, measured with NVML at a real load."""

    gpu: str | None
    first_stream_mb: int  # CUDA context + weights + buffers of the first stream (warmed up)
    per_stream_mb: int | None  # each further stream (its own weights copy + state), None until measured

    def to_doc(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "first_stream_mb": self.first_stream_mb, "per_stream_mb": self.per_stream_mb}


def vram_file(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".vram.json")


def read_need(model_path: Path, gpu: str | None) -> VramNeed | None:
    try:
        doc = json.loads(vram_file(model_path).read_text())
        need = VramNeed(doc.get("gpu"), int(doc["first_stream_mb"]),
                        int(doc["per_stream_mb"]) if doc.get("per_stream_mb") else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return need if need.gpu == gpu else None  # measured on another GPU model: measure again


def write_need(model_path: Path, need: VramNeed) -> None:
    """Kept next to the model; an unwritable cache (a read-only PVC) only costs the pre-flight."""
    path = vram_file(model_path)
    try:
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(need.to_doc()))
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not keep the measured GPU memory need", extra={"path": str(path), "error": str(exc)})
        return
    log.info("GPU memory need measured", extra={"path": str(path), **need.to_doc()})


def wanted_streams(settings: EngineSettings, parallelism: int | None, on_gpu: bool) -> int:
    wanted = parallelism or settings.parallelism
    return max(1, wanted) if wanted else (GPU_DEFAULT_PARALLELISM if on_gpu else 1)


def preflight(model_path: Path, settings: EngineSettings, parallelism: int | None) -> int | None:
    """How many streams to start; :class:`GpuMemoryError` when not even one fits.

    None = no opinion (no GPU wanted, no NVML, or this model was never measured
    on this GPU): the engine's own default then applies and the load measures."""
    if not settings.use_gpu:
        return None
    mem = gpu_memory(settings.cuda_device)
    if mem is None:
        return None
    need = read_need(model_path, gpu_name(settings.cuda_device))
    wanted = wanted_streams(settings, parallelism, on_gpu=True)
    if need is None:
        return wanted
    streams = streams_that_fit(need, mem.free_mb, wanted)
    if streams == 0:
        first = need.first_stream_mb + PREFLIGHT_MARGIN_MB
        raise GpuMemoryError(f"not enough GPU memory to load {model_path.name}: {mem.free_mb} MB free, "
                             f"{first} MB needed for one stream (measured {need.first_stream_mb} MB + "
                             f"{PREFLIGHT_MARGIN_MB} MB margin); whisper.cpp not started",
                             vram_needed_mb=first, vram_free_mb=mem.free_mb)
    if streams < wanted:
        log.warning("GPU memory fits fewer decode streams than wanted: starting fewer",
                    extra={"streams": streams, "wanted": wanted, "vram_free_mb": mem.free_mb,
                           "first_stream_mb": need.first_stream_mb, "per_stream_mb": need.per_stream_mb})
    return streams


def streams_that_fit(need: VramNeed, free_mb: int, wanted: int) -> int:
    """How many of ``wanted`` streams fit in ``free_mb`` (0: not even one), each with the margin.

    A further stream not measured yet counts as a whole first stream (an
    over-estimate: the first also holds the CUDA context), so a load never
    starts streams it cannot hold."""
    first = need.first_stream_mb + PREFLIGHT_MARGIN_MB
    if free_mb < first:
        return 0
    per = need.per_stream_mb or need.first_stream_mb
    return max(1, min(wanted, 1 + (free_mb - first) // max(1, per)))


# ── the test hook ───────────────────────────────────────────────────────────

_fault_lock = threading.Lock()
_fault_used: dict[str, int] = {}


def _arm_fault(spec: str) -> str | None:
    """The fault this next child gets (load faults first: a child that dies loading never runs a job);
    ``spec`` = ``EngineSettings.fault_child_die``."""
    spec = spec.strip()
    if not spec:
        return None
    entries: list[tuple[str, str, int, str]] = []
    for item in spec.split(","):
        phase, kind, times = (item.strip().split(":") + ["1"])[:3]
        entries.append((phase, kind, int(times or "1"), item.strip()))
    with _fault_lock:
        for want_phase in ("load", "idle", "job"):
            for phase, kind, count, key in entries:
                if phase == want_phase and _fault_used.get(key, 0) < count:
                    _fault_used[key] = _fault_used.get(key, 0) + 1
                    return f"{phase}:{kind}"
    return None


# ── the parent side ─────────────────────────────────────────────────────────


@dataclass(frozen=True)
class _Death:
    returncode: int | None
    tail: list[str]

    @property
    def how(self) -> str:
        rc = self.returncode
        if rc is not None and rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exited with code {rc}"

    @property
    def by_signal(self) -> bool:
        return self.returncode is not None and self.returncode < 0

    @property
    def oom(self) -> bool:
        return any(m in line.lower() for line in self.tail for m in _OOM_MARKERS)

    def describe(self) -> str:
        last = " | ".join(self.tail[-6:]) or "(no output)"
        return f"engine process {self.how}; its last lines: {last}"


def _child_record(line: str) -> dict[str, Any] | None:
    """One of the child's own JSON log lines, or None (a line ggml or CUDA printed)."""
    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not {"level", "logger", "msg"} <= doc.keys():
        return None
    return doc


def _rebuild_error(payload: tuple[str, str, bytes | None]) -> BaseException:
    """The child's exception, the same type where it can be (its message always)."""
    name, message, pickled = payload
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)
            if isinstance(exc, BaseException):
                return exc
        except Exception:  # noqa: BLE001 - a custom __init__ that pickle cannot call again
            pass
    import whisperop.core.errors as errors

    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, WhisperOpError):
        exc = cls.__new__(cls)
        exc.args = (message,)
        return exc
    return TranscriptionError(f"{name}: {message}")


class IsolatedEngine:
    """A :class:`WhisperEngine` in a child process (see the module docstring)."""

    def __init__(self, model_path: str | Path, settings: EngineSettings | None = None, parallelism: int | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.model_path = Path(model_path)
        t0 = time.perf_counter()
        streams = preflight(self.model_path, self.settings, parallelism)
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._death: _Death | None = None
        self._dead = threading.Event()
        self._send_lock = threading.Lock()
        self._closing = False
        self.streams_loaded = 0
        self.streams_wanted = 1
        self._streams_lock = threading.Lock()
        self._streams_seen = False  # a "streams" message came (newer than what "loaded" says)
        self._growing = True  # streams are loading in the child (the load's own, or a top-up asked for)
        self._grow_asked = False
        self._on_streams: Callable[[int, int], None] | None = None
        self._on_death: Callable[[], None] | None = None
        self._start_child(streams or parallelism)
        try:
            info = self._await_loaded()
        except BaseException:
            self._kill()
            raise
        self.backend: str = info["backend"]
        with self._streams_lock:
            if not self._streams_seen:  # else the child already reported all its streams
                self.parallelism: int = info["parallelism"]
                self.streams_loaded = info["streams"]
            # what the settings ask for, not what the pre-flight let start: the top-up's goal
            self.streams_wanted = max(self.parallelism, wanted_streams(
                self.settings, parallelism, on_gpu=streams is not None or self.backend != "CPU"))
        self.flash_attn: bool = info["flash_attn"]
        self.load_secs = time.perf_counter() - t0
        self.child_pid = self._proc.pid
        log.info("engine process ready", extra={"pid": self._proc.pid, "backend": self.backend,
                                                "parallelism": self.parallelism, "load_secs": round(self.load_secs, 3)})

    # child process -------------------------------------------------------

    def _start_child(self, parallelism: int | None) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env.pop(_CHILD_FAULT_ENV, None)
        fault = _arm_fault(self.settings.fault_child_die)
        if fault:
            env[_CHILD_FAULT_ENV] = fault
            log.warning("test hook: this engine process will die", extra={"fault": fault})
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "whisperop.inference.isolated", str(child_sock.fileno())],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(child_sock.fileno(),), env=env, close_fds=True,
        )
        child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._output = threading.Thread(target=self._read_output, name="engine-output", daemon=True)
        self._output.start()
        self._reader = threading.Thread(target=self._read_messages, name="engine-reader", daemon=True)
        self._reader.start()
        self._send(("load", str(self.model_path), self.settings.model_dump(), parallelism))

    def _read_output(self) -> None:
        """The child's output: its log lines (``level logger: message``) and ggml's own prints."""
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if not line:
                continue
            doc = _child_record(line)
            if doc is None:  # ggml/CUDA printing on its own (what an abort says)
                self._tail.append(line)
                child_log.warning("%s", line, extra={"engine_pid": self._proc.pid})
                continue
            # one of its own log lines: logged again under its logger, with its fields, marked with the process
            level_name, name, message = str(doc.pop("level")).upper(), str(doc.pop("logger")), str(doc.pop("msg"))
            self._tail.append(f"{level_name.lower()} {name}: {message}")
            level = getattr(logging, level_name, logging.INFO)
            extra = {(k if k not in _RESERVED else f"child_{k}"): v for k, v in doc.items() if k != "ts"}
            logging.getLogger(name).log(level if isinstance(level, int) else logging.INFO, "%s", message,
                                        extra={**extra, "engine_pid": self._proc.pid})

    def _read_messages(self) -> None:
        """Every message goes to the inbox in order; EOF = the child is gone (at once, whatever killed it)."""
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - an unpicklable message: a bug, but the child may live on
                log.warning("unreadable message from the engine process", extra={"error": str(exc)})
                continue
            if msg[0] == "streams":
                self._streams_reported(msg[1], msg[2])
                continue
            self._inbox.put(msg)
        try:
            rc = self._proc.wait(timeout=CLOSE_WAIT_SECS)
        except subprocess.TimeoutExpired:  # socket closed but the process hangs on: end it
            self._proc.kill()
            rc = self._proc.wait()
        self._output.join(timeout=5)  # the last lines it printed
        self._death = _Death(rc, list(self._tail))
        self._dead.set()
        if not self._closing:
            log.error("engine process died", extra={"pid": self._proc.pid, "returncode": rc, "oom": self._death.oom,
                                                    "last_lines": list(self._tail)[-10:]})
        self._inbox.put(("dead",))
        on_death = self._on_death
        if on_death is not None and not self._closing:
            on_death()

    def _streams_reported(self, loaded: int, parallelism: int) -> None:
        with self._streams_lock:
            before, asked = self.streams_loaded, self._grow_asked
            self.streams_loaded, self.parallelism = loaded, parallelism
            self._streams_seen = True
            self._growing = self._grow_asked = False
            on_streams = self._on_streams
        if asked and loaded > before:
            log.info("decode streams added", extra={"streams": loaded, "streams_before": before,
                                                    "streams_wanted": self.streams_wanted})
            if on_streams is not None:
                on_streams(loaded, self.streams_wanted)

    def _send(self, msg: tuple[Any, ...]) -> bool:
        with self._send_lock:
            try:
                self._conn.send(msg)
                return True
            except (OSError, ValueError):
                return False

    def _death_info(self) -> _Death:
        self._dead.wait(CLOSE_WAIT_SECS + 10)
        return self._death or _Death(None, list(self._tail))

    def _await_loaded(self) -> dict[str, Any]:
        msg = self._inbox.get()
        if msg[0] == "loaded":
            return dict(msg[1])
        if msg[0] == "load_failed":
            raise _rebuild_error(msg[1])
        death = self._death_info()
        raise self._load_death_error(death)

    def _load_death_error(self, death: _Death) -> ModelLoadError:
        if death.oom or death.by_signal:
            # ggml aborts or segfaults on a failed CUDA allocation, often without saying so:
            # a native death while loading is retried on the poll interval, not given up
            mem = gpu_memory(self.settings.cuda_device)
            need = read_need(self.model_path, gpu_name(self.settings.cuda_device))
            needed = need.first_stream_mb if need else max(1, self.model_path.stat().st_size // (1024 * 1024))
            what = "out of GPU memory" if death.oom else "treated as out of GPU memory"
            return GpuMemoryError(f"{what} while loading {self.model_path.name}: {death.describe()}",
                                  vram_needed_mb=int(needed), vram_free_mb=mem.free_mb if mem else 0)
        return ModelLoadError(f"could not load {self.model_path.name}: {death.describe()}")

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._dead.wait(CLOSE_WAIT_SECS)

    # supervision: streams added when memory frees, a death seen while idle ------

    def supervise(self, poll_secs: float, on_streams: Callable[[int, int], None] | None = None,
                  on_death: Callable[[], None] | None = None) -> None:
        """Keep this engine's streams topped up and report its death, from now until it is closed.

        Every ``poll_secs`` (the GPU poll interval) while fewer streams run than
        wanted, :meth:`add_streams_if_they_fit`; ``on_streams(streams,
        wanted)`` once streams were added. ``on_death()`` as soon as the child
        dies (EOF on its socket, the same instant :attr:`alive` turns false),
        whether or not a job runs — a death while idle is otherwise only found
        by the next job. Both run in this engine's threads: keep them short."""
        self._on_streams, self._on_death = on_streams, on_death
        if on_death is not None and self._dead.is_set() and not self._closing:
            on_death()  # died before anyone listened
        threading.Thread(target=self._top_up_loop, args=(poll_secs,), name="engine-streams", daemon=True).start()

    def _top_up_loop(self, poll_secs: float) -> None:
        while not self._dead.wait(poll_secs) and not self._closing:
            try:
                self.add_streams_if_they_fit()
            except Exception:  # noqa: BLE001 - a failed check must not end the supervision
                log.exception("checking GPU memory for more decode streams failed")

    def add_streams_if_they_fit(self) -> int | None:
        """Ask the child for more decode streams when NVML's free memory holds them now.

        Each further stream needs the measured ``per_stream_mb`` (the first
        stream's need when not measured yet), and ``PREFLIGHT_MARGIN_MB`` stays
        free, as in the pre-flight (on the H100: 316 MB per stream of base q8_0,
        docs/gpu-oom.md). Returns the stream count asked for, or None (nothing
        to add, no room, no NVML or measured need, or streams still loading)."""
        dev = self.settings.cuda_device
        with self._streams_lock:
            if (self._dead.is_set() or self._closing or self._growing or not self.settings.use_gpu
                    or self.streams_loaded >= self.streams_wanted):
                return None
            mem = gpu_memory(dev)
            need = read_need(self.model_path, gpu_name(dev))
            if mem is None or need is None:
                return None
            per = max(1, need.per_stream_mb or need.first_stream_mb)
            fit = max(0, (mem.free_mb - PREFLIGHT_MARGIN_MB) // per)
            target = min(self.streams_wanted, self.streams_loaded + fit)
            if target <= self.streams_loaded:
                return None
            self._growing = self._grow_asked = True
            loaded = self.streams_loaded
        log.info("GPU memory freed up: adding decode streams",
                 extra={"streams": loaded, "streams_target": target, "streams_wanted": self.streams_wanted,
                        "vram_free_mb": mem.free_mb, "per_stream_mb": per})
        if not self._send(("grow", target)):
            with self._streams_lock:
                self._growing = self._grow_asked = False
            return None
        return target

    def death_error(self) -> WhisperOpError | None:
        """None while the child lives; else its death as the lifecycle takes it: out-of-memory
        lines in its last output → :class:`GpuMemoryError` with the VRAM figures (wait for
        the GPU), any other death → :class:`EngineCrashed` (load again at once)."""
        if not self._dead.is_set():
            return None
        death = self._death_info()
        if not death.oom:
            return EngineCrashed(death.describe(), oom=False)
        mem = gpu_memory(self.settings.cuda_device)
        need = read_need(self.model_path, gpu_name(self.settings.cuda_device))
        needed = need.first_stream_mb + PREFLIGHT_MARGIN_MB if need else max(1, self.model_path.stat().st_size >> 20)
        return GpuMemoryError(f"out of GPU memory: {death.describe()}", vram_needed_mb=int(needed),
                              vram_free_mb=mem.free_mb if mem else 0)

    # the engine interface ------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self._dead.is_set()

    def transcribe_file(
        self,
        path: str | os.PathLike[str],
        request: TranscribeRequest = TranscribeRequest(),
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_decoded: Callable[[float, int], None] | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> TranscriptionResult:
        """As :meth:`WhisperEngine.transcribe_file`; :class:`EngineCrashed` when the process dies
        (or was found dead): what was checkpointed before stays."""
        if self._dead.is_set():
            raise EngineCrashed(self._death_info().describe(), oom=self._death_info().oom)
        saved = (checkpoint.plan(), checkpoint.done()) if checkpoint is not None else None
        if not self._send(("job", str(path), request, saved)):
            raise EngineCrashed(self._death_info().describe(), oom=self._death_info().oom)
        cancel_sent = False
        next_check = time.monotonic() + CANCEL_POLL_SECS
        while True:
            try:
                msg = self._inbox.get(timeout=CANCEL_POLL_SECS)
            except queue.Empty:
                msg = None
            # checked on a clock, not only when the child is quiet: a job whose chunks report faster
            # than the poll interval would otherwise never see its cancel (found by the cancel test)
            if not cancel_sent and should_cancel is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + CANCEL_POLL_SECS
                if should_cancel():
                    cancel_sent = self._send(("cancel",))
            if msg is None:
                continue
            kind = msg[0]
            if kind == "result":
                result: TranscriptionResult = msg[1]
                return result
            if kind == "error":
                raise _rebuild_error(msg[1])
            if kind == "dead":
                death = self._death_info()
                raise EngineCrashed(death.describe(), oom=death.oom)
            self._dispatch(msg, on_progress, on_decoded, checkpoint)

    @staticmethod
    def _dispatch(msg: tuple[Any, ...], on_progress: ProgressCallback | None,
                  on_decoded: Callable[[float, int], None] | None, checkpoint: Checkpoint | None) -> None:
        kind = msg[0]
        if kind == "progress" and on_progress is not None:
            on_progress(msg[1])
        elif kind == "decoded" and on_decoded is not None:
            on_decoded(msg[1], msg[2])
        elif kind == "save_plan" and checkpoint is not None:
            checkpoint.save_plan(msg[1])
        elif kind == "save" and checkpoint is not None:
            checkpoint.save(msg[1])

    def close(self) -> None:
        """Ask the child to free its contexts and exit; kill it if it does not within CLOSE_WAIT_SECS."""
        if self._closing:
            return
        self._closing = True
        if not self._dead.is_set():
            self._send(("close",))
            if not self._dead.wait(CLOSE_WAIT_SECS):
                log.warning("engine process did not exit when closed: killed", extra={"pid": self._proc.pid})
                self._kill()
        try:
            self._conn.close()
        except OSError:
            pass


# ── the child side ──────────────────────────────────────────────────────────


class _ForwardedCheckpoint:
    """The parent's checkpoint, seen from the child: reads come with the job, writes go back as messages."""

    def __init__(self, saved: tuple[list[tuple[int, int]] | None, dict[int, ChunkRecord]], send: Callable[[tuple[Any, ...]], None]) -> None:
        self._plan, self._done = saved
        self._send = send

    def plan(self) -> list[tuple[int, int]] | None:
        return self._plan

    def save_plan(self, plan: list[tuple[int, int]]) -> None:
        self._plan = plan
        self._send(("save_plan", plan))

    def done(self) -> dict[int, ChunkRecord]:
        return dict(self._done)

    def save(self, record: ChunkRecord) -> None:
        self._done[record.index] = record
        self._send(("save", record))


def _die(kind: str) -> None:
    """The test hook's death: a real signal of this process (or whisper.cpp's OOM lines, then exit 1)."""
    sys.stdout.flush()
    if kind == "oom":
        for line in OOM_LINES:
            print(line, flush=True)
        os._exit(1)
    if kind == "exit":  # a death that is neither a signal nor out of memory (a broken install, say)
        print("engine process: exiting on purpose (test hook)", flush=True)
        os._exit(3)
    os.kill(os.getpid(), signal.SIGABRT if kind == "abrt" else signal.SIGSEGV)
    time.sleep(10)  # the signal is delivered before this returns
    os._exit(1)


def _error_payload(exc: BaseException) -> tuple[str, str, bytes | None]:
    try:
        pickled: bytes | None = pickle.dumps(exc)
    except Exception:  # noqa: BLE001
        pickled = None
    return type(exc).__name__, str(exc), pickled


class _Child:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.jobs: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self.cancel = threading.Event()
        fault = os.environ.get(_CHILD_FAULT_ENV, "")
        self.fault_phase, _, self.fault_kind = fault.partition(":")
        self.engine: Any = None

    def send(self, msg: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(msg)

    def read(self) -> None:
        """Reader thread: jobs and close to the main thread, cancel straight to the running job."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                self.cancel.set()  # the parent is gone: nothing to serve
                self.jobs.put(None)
                return
            if msg[0] == "cancel":
                self.cancel.set()
            elif msg[0] == "close":
                self.jobs.put(None)
                return
            elif msg[0] == "grow":  # here, not after the running job: the streams load while it runs
                self.grow(msg[1])
            else:
                self.jobs.put(msg)

    def load(self, msg: tuple[Any, ...]) -> Any:
        from whisperop.inference.engine import WhisperEngine

        _, path, settings_doc, parallelism = msg
        settings = EngineSettings(**settings_doc)
        if self.fault_phase == "load":
            _die(self.fault_kind)
        before = gpu_memory(settings.cuda_device) if settings.use_gpu else None
        engine = WhisperEngine(path, settings, parallelism)
        after_first = gpu_memory(settings.cuda_device) if before is not None else None
        if before is not None and after_first is not None and engine.backend != "CPU":
            # kept at once: a child that dies loading its extra streams has still taught the pre-flight
            old = read_need(Path(path), gpu_name(settings.cuda_device))
            write_need(Path(path), VramNeed(gpu_name(settings.cuda_device), max(1, before.free_mb - after_first.free_mb),
                                            old.per_stream_mb if old else None))
        self.engine = engine
        self.send(("loaded", {"backend": engine.backend, "parallelism": engine.parallelism,
                              "streams": engine.streams_loaded, "flash_attn": engine.flash_attn}))
        threading.Thread(target=self._streams_then_measure, args=(engine, Path(path), settings, before, after_first),
                         name="streams", daemon=True).start()
        return engine

    def grow(self, target: int) -> None:
        """More streams, loaded in the background; the count goes back once they are in (or failed)."""
        engine = self.engine
        if engine is None or not engine.add_streams(target):
            if engine is not None:  # nothing started: say what there is, so the parent may ask again
                self.send(("streams", engine.streams_loaded, engine.parallelism))
            return

        def report() -> None:
            engine.wait_all_loaded()
            try:
                self.send(("streams", engine.streams_loaded, engine.parallelism))
            except OSError:
                pass

        threading.Thread(target=report, name="streams", daemon=True).start()

    def _streams_then_measure(self, engine: Any, path: Path, settings: EngineSettings, before: Any, after_first: Any) -> None:
        engine.wait_all_loaded()
        streams = engine.streams_loaded
        try:
            self.send(("streams", streams, engine.parallelism))
        except OSError:
            return
        if before is None or after_first is None or engine.backend == "CPU":
            return
        after_all = gpu_memory(settings.cuda_device)
        first = before.free_mb - after_first.free_mb
        per = None
        if after_all is not None and streams > 1:
            per = max(1, (after_first.free_mb - after_all.free_mb) // (streams - 1))
        old = read_need(path, gpu_name(settings.cuda_device))
        if per is None and old is not None:
            per = old.per_stream_mb
        if first > 0:
            write_need(path, VramNeed(gpu_name(settings.cuda_device), first, per))

    def run_job(self, engine: Any, msg: tuple[Any, ...]) -> None:
        _, path, request, saved = msg
        self.cancel.clear()
        checkpoint = _ForwardedCheckpoint(saved, self.send) if saved is not None else None
        first = {"seen": False}

        def on_progress(p: Any) -> None:
            self.send(("progress", p))
            if self.fault_phase == "job" and p.chunk >= 1 and not first["seen"]:
                first["seen"] = True
                _die(self.fault_kind)

        try:
            result = engine.transcribe_file(path, request, on_progress=on_progress, should_cancel=self.cancel.is_set,
                                            on_decoded=lambda d, n: self.send(("decoded", d, n)), checkpoint=checkpoint)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent, typed
            self.send(("error", _error_payload(exc)))
            return
        self.send(("result", result))

    def serve(self) -> int:
        threading.Thread(target=self.read, name="reader", daemon=True).start()
        msg = self.jobs.get()
        if msg is None:
            return 0
        try:
            engine = self.load(msg)
        except Exception as exc:  # noqa: BLE001
            self.send(("load_failed", _error_payload(exc)))
            return 0
        if self.fault_phase == "idle":
            threading.Timer(IDLE_FAULT_SECS, _die, args=(self.fault_kind,)).start()
        try:
            while True:
                msg = self.jobs.get()
                if msg is None:
                    return 0
                self.run_job(engine, msg)
        finally:
            engine.close()


def child_main(argv: list[str]) -> int:
    from whisperop.core.logs import setup_logging

    # text lines on stdout (the parent reads and re-logs them); whisper.cpp's load lines included
    # JSON lines on stdout = stderr (one pipe: these lines, ggml's prints and a dying CUDA's alike);
    # the parent logs them again with their fields, in its own format
    setup_logging(fmt="json")  # LOG_LEVEL: the settings layer (LogSettings), inherited from the parent
    logging.getLogger("whisperop.whispercpp").setLevel(logging.DEBUG)  # whisper.cpp's load lines, for the tail
    conn = Connection(int(argv[0]))
    return _Child(conn).serve()


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
