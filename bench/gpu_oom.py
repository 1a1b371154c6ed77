"""Out of GPU memory on a real GPU (issue 14): a state, never a crash.

Runs the real local runtime (``LocalModelRuntime`` + SQLite job store + the
isolated engine, ``ENGINE_ISOLATION=process``) in this process while a second
process (PyTorch, ``--hog``) holds all but N MB of the GPU's memory:

1. ``measure``: no hog; one load with the default streams writes the measured
   need (``<model>.vram.json``: first stream, each further stream), and jfk.wav runs;
2. ``load-N`` for N in ``--free``: the hog holds all but N MB, the runtime is
   asked to load. Twice: ``crash`` (no ``.vram.json``: whisper.cpp really
   starts and dies, the supervisor maps the death) and ``preflight`` (the
   measured need stops the load before whisper.cpp starts, or starts fewer
   streams). Recorded: the first state after ``loading``, ``status()`` (VRAM
   figures), the events, that this process lives on, and the seconds from the
   hog's exit to ``ready`` (must be within one poll interval + a load);
3. ``job``: the model loaded, a long job running; at its first progress the hog
   takes all but ``--job-free`` MB. Recorded: the engine's death, the requeue,
   ``waiting_for_gpu``, the release, the job ``done`` once with the transcript
   of an undisturbed run, and how many chunk decodes ran (no chunk decoded
   twice beyond the one in flight).
4. ``grow``: the hog leaves room for ``--grow-room`` of the 8 streams (measured
   need); the model becomes ready with that many; a job (jfk.wav x 20) starts,
   the hog exits; recorded: the streams at ready, the seconds from the hog's
   exit to all 8 streams (must be within one poll interval + the extra
   streams' load), the ``model_streams`` event, both jobs ``done`` with the
   reference text.

    python bench/gpu_oom.py --model ggml-base-q8_0.bin --jfk jfk.wav --out DIR

``--dry`` checks the ``grow`` case on a machine without a GPU (CPU whisper.cpp,
``ENGINE_ISOLATION=process``): the hog is the test hook ``WHISPEROP_TEST_GPU_FILE``
(NVML's answer, from a file) and the need is the H100's measured one, so only
the logic is exercised, not a real GPU:

    python bench/gpu_oom.py --dry --model ggml-base-q8_0.bin --jfk jfk.wav --out DIR

``--engine ctranslate2 --ct2 DIR`` runs the same runtime with ``ENGINE=ctranslate2`` (float16 on
CUDA, in this process: CTranslate2's OOM is an exception) through ``measure`` (NVML's used memory
after the load instead of a ``.vram.json``), ``load-N-ct2`` (one mode: ``waiting_cause`` says
whether the pre-flight floor or CUDA's exception led to ``waiting_for_gpu``) and ``job`` (finished
on its buffers, or requeued by the OOM exception); ``--dry`` runs them on the CPU with NVML from
the test hook and one injected OOM ``RuntimeError`` in the job case (docs/gpu-oom.md):

    python bench/gpu_oom.py --engine ctranslate2 --ct2 base-ct2 --jfk jfk.wav --out DIR [--dry]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import wave
from pathlib import Path
from typing import Any, Callable

import numpy as np

from whisperop.core import gpu as gpu_hook
from whisperop.core.gpu import gpu_memory as _gpu_memory
from whisperop.inference.isolated import PREFLIGHT_MARGIN_MB
from whisperop.core.logs import setup_logging
from whisperop.core.models import Job, JobStatus
from whisperop.core.settings import EngineSettings
from whisperop.inference.isolated import IsolatedEngine, vram_file
from whisperop.inference.runtime import LocalModelRuntime
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore

def gpu_memory() -> Any:
    return _gpu_memory()


HOG = r"""
import sys, time, torch
held = []
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "hold":
        keep = int(cmd[1]) << 20
        free, _ = torch.cuda.mem_get_info()
        block = 1 << 30
        while free - keep > 0:
            want = min(block, free - keep)
            want -= want % (2 << 20)
            if want <= 0:
                break
            try:
                held.append(torch.empty(want, dtype=torch.uint8, device="cuda"))
            except RuntimeError:
                block //= 2
                if block < (2 << 20):
                    break
            free, _ = torch.cuda.mem_get_info()
        print("held", free >> 20, flush=True)
    elif cmd[0] == "release":
        held.clear(); torch.cuda.empty_cache()
        print("released", torch.cuda.mem_get_info()[0] >> 20, flush=True)
    elif cmd[0] == "exit":
        break
"""

log = logging.getLogger("bench.gpu_oom")


class Hog:
    """A PyTorch process that holds GPU memory on command."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOG], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _cmd(self, cmd: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._line()

    def hold_all_but(self, mb: int) -> int:
        return int(self._cmd(f"hold {mb}").split()[1])

    def streams_took(self, mb: int) -> None:
        """A real GPU needs nothing here: the loaded streams' memory is gone from NVML's answer."""

    def exit(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("exit\n")
            self.proc.stdin.flush()
            self.proc.wait(60)


DRY_GPU: dict[str, Any] = {"name": "dry run (no GPU)", "total_mb": 81559}
DRY_NEED = {"gpu": DRY_GPU["name"], "first_stream_mb": 913, "per_stream_mb": 316}  # the H100's measured need


class FileHog:
    """``--dry``: NVML's answer from the ``WHISPEROP_TEST_GPU_FILE`` test hook; "holding" memory is
    writing a smaller ``free_mb``, and the streams a load takes are subtracted by hand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.free = DRY_GPU["total_mb"]
        self._write()
        os.environ[gpu_hook.TEST_GPU_ENV] = str(path)

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**DRY_GPU, "free_mb": self.free}))
        tmp.replace(self.path)

    def hold_all_but(self, mb: int) -> int:
        self.free = mb
        self._write()
        return mb

    def streams_took(self, mb: int) -> None:
        self.free = max(0, self.free - mb)
        self._write()

    def exit(self) -> None:
        self.free = DRY_GPU["total_mb"]
        self._write()


class GrowSeen(logging.Handler):
    """When the engine saw the freed memory and asked its child for more streams."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "GPU memory freed up: adding decode streams" and self.at is None:
            self.at = time.monotonic()


class ChunkCounter(logging.Handler):
    """Counts the child's ``chunk decoded`` log lines (re-logged by the parent)."""

    def __init__(self) -> None:
        super().__init__()
        self.decoded: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "chunk decoded":
            self.decoded.append(int(getattr(record, "chunk", -1)))


def long_audio(jfk: Path, repeats: int, out: Path) -> Path:
    with wave.open(str(jfk)) as w:
        params = w.getparams()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    gap = np.zeros(int(params.framerate * 0.8), dtype=np.int16)
    data = np.concatenate([np.concatenate([pcm, gap]) for _ in range(repeats)])
    with wave.open(str(out), "wb") as w:
        w.setparams(params)
        w.writeframes(data.tobytes())
    return out


class Rig:
    """One runtime over a fresh data dir, its events recorded."""

    def __init__(self, model: Path, poll: int, work: Path) -> None:
        d = Path(tempfile.mkdtemp(dir=work))
        self.jobs = SqliteJobStore(d / "jobs.sqlite3")
        self.blobs = LocalBlobStore(d / "blobs")
        self.events: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.rt = LocalModelRuntime(model, self.jobs, self.blobs, EngineSettings(), idle_timeout_secs=0,
                                    gpu_poll_interval_secs=poll)
        self.rt.subscribe(self._on_event)
        self.rt.start()

    def _on_event(self, ev: Any) -> None:
        doc = ev.model_dump(mode="json") if hasattr(ev, "model_dump") else {"type": type(ev).__name__}
        doc["t"] = round(time.monotonic() - self.t0, 2)
        self.events.append(doc)

    def wait_state(self, states: tuple[str, ...], timeout: float) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.rt.state.value
            if st in states:
                return st
            time.sleep(0.1)
        return None

    def submit(self, audio: Path) -> str:
        job_id = uuid.uuid4().hex
        key = f"audio/{job_id}"
        with open(audio, "rb") as f:
            self.blobs.put(key, iter(lambda: f.read(1 << 20), b""))
        self.jobs.create(Job(id=job_id), key)
        self.rt.notify_job_queued()
        return job_id

    def wait_job(self, job_id: str, timeout: float) -> Job:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            job = self.jobs.get(job_id)
            if job.status.terminal:
                return job
            time.sleep(0.2)
        return self.jobs.get(job_id)

    def wait_first_progress(self, job_id: str, step: float) -> None:
        """Until the job's first chunk is done (at most 120 s): the moment a case takes the memory."""
        end = time.monotonic() + 120
        while time.monotonic() < end and (self.jobs.progress(job_id) or (0, 0))[0] < 1:
            time.sleep(step)

    def model_events(self) -> list[dict[str, Any]]:
        """The first 12 ``model_*`` events, as every case records them (``events``)."""
        return [e for e in self.events if e.get("type", "").startswith("model")][:12]

    def stop(self) -> None:
        self.rt.stop(30)


# The scaffolding the whisper.cpp and the CTranslate2 cases share; each writes the same
# fields into ``out`` as the cases did before they shared it, so earlier raw results compare.

def load_under_hog(rig: Rig, hog: Hog | FileHog, poll: int, jfk: Path, out: dict[str, Any],
                   when_ready: Callable[[], None]) -> Job:
    """The hog already holds its memory: ask for a load, record the first state after ``loading``;
    ``when_ready`` records what a model that loaded anyway does, else two polls pass with the memory
    still taken. Then the hog exits: the seconds to ``ready``, and a jfk job after the release
    (returned; ``job_after_release`` is its status)."""
    rig.rt.request_load()
    first = rig.wait_state(("waiting_for_gpu", "ready"), 180)
    out["first_state"] = first
    out["status"] = rig.rt.status().model_dump(mode="json", exclude_none=True)
    if first == "ready":
        when_ready()
    else:
        time.sleep(poll * 2 + 1)  # at least two retries while the memory stays taken
        out["state_after_two_polls"] = rig.rt.state.value
    t_release = time.monotonic()
    hog.exit()
    ready = rig.wait_state(("ready",), 300)  # at once where the model is ready already
    out["secs_release_to_ready"] = round(time.monotonic() - t_release, 2) if ready else None
    job = rig.wait_job(rig.submit(jfk), 300)
    out["job_after_release"] = job.status.value
    return job


def record_jfk_text(job: Job, jfk_text: str | None, out: dict[str, Any]) -> None:
    """A jfk.wav job's text (``job_after_text``) and, where the measure step gave one, whether it is
    the undisturbed run's (``job_after_same_text``)."""
    out["job_after_text"] = " ".join(s.text for s in job.segments)
    if jfk_text is not None:
        out["job_after_same_text"] = out["job_after_text"] == jfk_text


def take_memory_mid_job(rig: Rig, hog: Hog | FileHog, audio: Path, job_free: int, out: dict[str, Any]) -> str:
    """A job on ``audio`` starts; at its first progress the hog takes all but ``job_free`` MB."""
    job_id = rig.submit(audio)
    rig.wait_first_progress(job_id, 0.01)
    out["progress_when_taken"] = rig.jobs.progress(job_id)
    out["free_after_hog_mb"] = hog.hold_all_but(job_free)
    return job_id


def record_waiting(rig: Rig, job_id: str, poll: int, timeout: float, key: str, out: dict[str, Any]) -> None:
    """``waiting_for_gpu`` (or the state at ``timeout``) under ``key``, the status and the job's
    status while waiting, then one poll interval more with the memory still taken."""
    out[key] = rig.wait_state(("waiting_for_gpu",), timeout) or rig.rt.state.value
    out["status_waiting"] = rig.rt.status().model_dump(mode="json", exclude_none=True)
    out["job_status_while_waiting"] = rig.jobs.get(job_id).status.value
    time.sleep(poll + 1)


def finish_after_release(rig: Rig, hog: Hog | FileHog, job_id: str, ref: Job, decoded: list[int],
                         out: dict[str, Any]) -> Job:
    """The hog exits; the job (returned) against the undisturbed reference, and the chunk decodes
    ``decoded`` saw since it was cleared before the job (no chunk decoded twice beyond the one in flight)."""
    t_release = time.monotonic()
    hog.exit()
    job = rig.wait_job(job_id, 900)
    out["secs_release_to_done"] = round(time.monotonic() - t_release, 2)
    out["job_status"] = job.status.value
    out["job_error"] = job.error
    out["same_text_as_reference"] = [s.text for s in job.segments] == [s.text for s in ref.segments]
    out["segments"] = len(job.segments)
    out["chunk_decodes"] = len(decoded)
    out["distinct_chunks"] = len(set(decoded))
    out["events"] = rig.model_events()
    return job


def measure(model: Path, jfk: Path) -> dict[str, Any]:
    vram_file(model).unlink(missing_ok=True)
    free0 = gpu_memory().free_mb if gpu_memory() else None
    t0 = time.perf_counter()
    eng = IsolatedEngine(model, EngineSettings())
    load = time.perf_counter() - t0
    end = time.monotonic() + 120
    doc: dict[str, Any] = {}
    while time.monotonic() < end:
        try:
            doc = json.loads(vram_file(model).read_text())
            if doc.get("per_stream_mb"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    t1 = time.perf_counter()
    res = eng.transcribe_file(jfk)
    job = time.perf_counter() - t1
    out = {"free_before_mb": free0, "load_secs": round(load, 2), "jfk_secs": round(job, 3), "backend": eng.backend,
           "parallelism": eng.parallelism, "streams_loaded": eng.streams_loaded, "need": doc,
           "jfk_text": " ".join(s.text for s in res.segments), "free_loaded_mb": gpu_memory().free_mb if gpu_memory() else None}
    eng.close()
    return out


def load_case(model: Path, free_mb: int, mode: str, need: dict[str, Any], poll: int, work: Path, jfk: Path) -> dict[str, Any]:
    if mode == "crash":
        vram_file(model).unlink(missing_ok=True)
    else:
        vram_file(model).write_text(json.dumps(need))
    hog = Hog()
    held_free = hog.hold_all_but(free_mb)
    rig = Rig(model, poll, work)
    out: dict[str, Any] = {"free_target_mb": free_mb, "mode": mode, "free_after_hog_mb": held_free}

    def when_ready() -> None:
        eng = rig.rt._engine
        out["streams"] = getattr(eng, "parallelism", None)
        time.sleep(3)  # extra streams load behind the first: does the process survive them?
        out["engine_alive_after_3s"] = getattr(eng, "alive", None)
        job_id = rig.submit(jfk)
        out["job_under_pressure"] = rig.wait_job(job_id, 300).status.value

    try:
        load_under_hog(rig, hog, poll, jfk, out, when_ready)
        out["events"] = rig.model_events()
    finally:
        hog.exit()
        rig.stop()
    out["this_process_alive"] = True
    return out


def job_case(model: Path, need: dict[str, Any], poll: int, work: Path, jfk: Path, job_free: int, repeats: int) -> dict[str, Any]:
    vram_file(model).write_text(json.dumps(need))
    counter = ChunkCounter()
    logging.getLogger("whisperop.engine").addHandler(counter)
    audio = long_audio(jfk, repeats, work / "long.wav")
    rig = Rig(model, poll, work)
    hog = Hog()
    out: dict[str, Any] = {"audio_secs": repeats * 11.8, "job_free_mb": job_free}
    try:
        rig.rt.request_load()
        assert rig.wait_state(("ready",), 180) == "ready"
        # reference: the same audio, undisturbed
        ref_id = rig.submit(audio)
        ref = rig.wait_job(ref_id, 600)
        out["reference_status"] = ref.status.value
        counter.decoded.clear()
        job_id = take_memory_mid_job(rig, hog, audio, job_free, out)
        record_waiting(rig, job_id, poll, 120, "state_seen", out)
        finish_after_release(rig, hog, job_id, ref, counter.decoded, out)
    finally:
        hog.exit()
        rig.stop()
    return out


def grow_case(model: Path, need: dict[str, Any], poll: int, work: Path, jfk: Path, room: int, jfk_text: str | None,
              hog: Hog | FileHog) -> dict[str, Any]:
    """Fewer streams at load, then all of them once the hog exits (issue 14)."""
    vram_file(model).write_text(json.dumps(need))
    first, per = int(need["first_stream_mb"]), int(need["per_stream_mb"])
    free_target = first + PREFLIGHT_MARGIN_MB + (room - 1) * per + per // 2  # room streams fit, not one more
    out: dict[str, Any] = {"free_target_mb": free_target, "room": room, "poll_secs": poll,
                           "free_after_hog_mb": hog.hold_all_but(free_target)}
    rig = Rig(model, poll, work)
    # the loaded streams' memory (already gone from a real GPU's answer; --dry subtracts it at model_ready)
    rig.rt.subscribe(lambda ev: hog.streams_took(first + (room - 1) * per)
                     if getattr(ev, "type", "") == "model_ready" else None)
    try:
        rig.rt.request_load()
        out["first_state"] = rig.wait_state(("waiting_for_gpu", "ready"), 180)
        eng = rig.rt._engine
        end = time.monotonic() + 120
        while eng is not None and getattr(eng, "_growing", False) and time.monotonic() < end:
            time.sleep(0.1)
        out["status_at_ready"] = rig.rt.status().model_dump(mode="json", exclude_none=True)
        time.sleep(poll * 2 + 1)  # two top-up checks with the memory still taken: no streams added
        out["streams_after_two_polls"] = rig.rt.status().streams
        during = rig.submit(long_audio(jfk, 20, work / "grow-long.wav"))
        rig.wait_first_progress(during, 0.05)
        seen = GrowSeen()
        logging.getLogger("whisperop.engine.isolated").addHandler(seen)
        t_release = time.monotonic()
        out["t_release"] = round(t_release - rig.t0, 2)  # on the events' clock
        hog.exit()
        wanted = out["status_at_ready"].get("streams_wanted")
        end = time.monotonic() + poll * 3 + 600  # a CPU (--dry) loads 6 streams in minutes
        while time.monotonic() < end and rig.rt.status().streams != wanted:
            time.sleep(0.05)
        logging.getLogger("whisperop.engine.isolated").removeHandler(seen)
        done = rig.rt.status().streams == wanted
        out["secs_release_to_grow_asked"] = round(seen.at - t_release, 2) if seen.at else None  # ≤ one poll interval
        out["secs_release_to_all_streams"] = round(time.monotonic() - t_release, 2) if done else None
        out["status_after"] = rig.rt.status().model_dump(mode="json", exclude_none=True)
        job = rig.wait_job(during, 900)
        out["job_during_growth"] = job.status.value
        out["job_during_growth_segments"] = len(job.segments)
        after = rig.wait_job(rig.submit(jfk), 300)
        out["job_after"] = after.status.value
        record_jfk_text(after, jfk_text, out)
        out["events"] = rig.model_events()
    finally:
        hog.exit()
        rig.stop()
    return out


# ── ENGINE=ctranslate2 (--engine ctranslate2 --ct2 DIR) ───────────────────────────────────────
# CTranslate2 raises CUDA's out-of-memory as a RuntimeError (ct2engine.gpu_oom → GpuMemoryError)
# and runs in this process (no child: isolated.isolation_on), so there is no crash/preflight pair:
# one mode, ``ct2``, and the record says which path led to waiting_for_gpu: the pre-flight floor
# (the weights file against NVML's free memory) or a real CUDA exception.

PREFLIGHT_TEXT = "not enough GPU memory to load"  # ct2engine.gpu_preflight's message
CUDA_OOM_TEXT = "out of GPU memory"  # ct2engine.gpu_oom's message (the CUDA exception's text follows)


class LogTap(logging.Handler):
    """The runtime's warnings and errors and the CT2 engine's ``batch decoded`` lines, as they came."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []
        self.decoded: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg == "batch decoded":
            self.decoded.extend(int(c) for c in getattr(record, "chunks", []))
        elif record.levelno >= logging.WARNING:
            self.lines.append({"logger": record.name, "msg": msg, "error": getattr(record, "error", None)})

    def job_oom(self) -> bool:
        """The executor handed a job back for CUDA's out-of-memory exception (executor.py)."""
        return any(line["msg"].startswith("engine out of GPU memory during a job") for line in self.lines)

    def cause(self) -> str | None:
        """What sent the model to waiting_for_gpu first: ``preflight`` or ``cuda_oom``."""
        for line in self.lines:
            err = str(line.get("error") or "")
            if PREFLIGHT_TEXT in err:
                return "preflight"
            if CUDA_OOM_TEXT in err:
                return "cuda_oom"
        return None

    def __enter__(self) -> "LogTap":
        logging.getLogger("whisperop").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("whisperop").removeHandler(self)


class InjectedOom:
    """``--dry`` only: CTranslate2 on the CPU cannot run out of GPU memory, so the hog's taking
    memory arms one ``RuntimeError`` with CUDA's text in the next decode round (ct2engine's
    ``_run_round``); the rest (gpu_oom → GpuMemoryError → requeue → waiting_for_gpu → reload)
    is the real code. Never used on a GPU."""

    def __init__(self) -> None:
        from whisperop.inference.ct2engine import CT2Engine

        self.armed = False
        self.fired = 0
        real = CT2Engine._run_round
        tap = self

        def run_round(engine: Any, tasks: Any) -> Any:
            if tap.armed:
                tap.armed = False
                tap.fired += 1
                raise RuntimeError("CUDA failed with error out of memory (injected: --dry)")
            return real(engine, tasks)

        CT2Engine._run_round = run_round  # type: ignore[method-assign]


class DryCt2Hog(FileHog):
    def __init__(self, path: Path, inject: InjectedOom | None) -> None:
        super().__init__(path)
        self.inject = inject

    def hold_all_but(self, mb: int) -> int:
        if self.inject is not None:
            self.inject.armed = True
        return super().hold_all_but(mb)


def _used(mem: Any) -> int | None:
    return int(mem.total_mb - mem.free_mb) if mem is not None else None


def ct2_measure(ct2: Path, jfk: Path) -> dict[str, Any]:
    """No hog: the GPU memory one loaded CT2 model takes (NVML, before/after the load and a jfk run)."""
    from whisperop.inference.engine import create_engine

    before = gpu_memory()
    t0 = time.perf_counter()
    eng: Any = create_engine(ct2, EngineSettings())
    load = time.perf_counter() - t0
    loaded = gpu_memory()
    t1 = time.perf_counter()
    res = eng.transcribe_file(jfk)
    jfk_secs = time.perf_counter() - t1
    after = gpu_memory()
    out = {"backend": eng.backend, "compute_type": eng.compute_type, "batch_size": eng.batch_size,
           "weights_mb": (ct2 / "model.bin").stat().st_size >> 20, "load_secs": round(load, 2),
           "jfk_secs": round(jfk_secs, 3), "gpu_used_before_mb": _used(before),
           "gpu_used_after_load_mb": _used(loaded), "gpu_used_after_jfk_mb": _used(after),
           "jfk_text": " ".join(s.text for s in res.segments)}
    if before is not None and loaded is not None and after is not None:
        out["load_took_mb"] = _used(loaded) - _used(before)  # type: ignore[operator]
        out["load_and_jfk_took_mb"] = _used(after) - _used(before)  # type: ignore[operator]
    eng.close()
    return out


def ct2_load_case(ct2: Path, free_mb: int, poll: int, work: Path, jfk: Path, jfk_text: str | None,
                  hog: Hog | FileHog) -> dict[str, Any]:
    """The hog leaves ``free_mb``; the runtime is asked to load CT2 (mode ``ct2``)."""
    out: dict[str, Any] = {"free_target_mb": free_mb, "mode": "ct2", "free_after_hog_mb": hog.hold_all_but(free_mb)}
    with LogTap() as tap:
        rig = Rig(ct2, poll, work)

        def when_ready() -> None:
            job = rig.wait_job(rig.submit(jfk), 300)
            out["job_under_pressure"] = job.status.value
            out["job_under_pressure_error"] = job.error

        try:
            record_jfk_text(load_under_hog(rig, hog, poll, jfk, out, when_ready), jfk_text, out)
            out["events"] = rig.model_events()
        finally:
            hog.exit()
            rig.stop()
    out["waiting_cause"] = tap.cause()  # preflight (weights floor) or cuda_oom (CTranslate2's exception)
    out["log"] = tap.lines[:8]  # the exception's text is in "error"
    out["this_process_alive"] = True
    return out


def ct2_job_case(ct2: Path, poll: int, work: Path, jfk: Path, job_free: int, repeats: int,
                 hog: Hog | FileHog, ref_runs: int = 2) -> dict[str, Any]:
    """A long job running; at its first progress the hog takes all but ``job_free`` MB. Either the job
    finishes on the buffers it already has, or CUDA's OOM exception requeues it (waiting_for_gpu)."""
    audio = long_audio(jfk, repeats, work / "ct2-long.wav")
    out: dict[str, Any] = {"audio_secs": round(repeats * 11.8, 1), "job_free_mb": job_free}
    with LogTap() as tap:
        rig = Rig(ct2, poll, work)
        try:
            rig.rt.request_load()
            assert rig.wait_state(("ready",), 300) == "ready"
            ref = rig.wait_job(rig.submit(audio), 900)  # the same audio, undisturbed
            out["reference_status"] = ref.status.value
            out["reference_chunk_decodes"] = len(tap.decoded)
            if ref_runs > 1:  # is an undisturbed run itself repeatable (temperature fallback samples)?
                again = rig.wait_job(rig.submit(audio), 900)
                out["reference_repeatable"] = [s.text for s in again.segments] == [s.text for s in ref.segments]
            tap.decoded.clear()
            job_id = take_memory_mid_job(rig, hog, audio, job_free, out)
            end = time.monotonic() + 900
            while time.monotonic() < end and not tap.job_oom() and not rig.jobs.get(job_id).status.terminal:
                time.sleep(0.05)
            oom = tap.job_oom()
            out["outcome"] = "oom_requeued" if oom else "finished_under_pressure"
            if oom:
                # the reload after the requeue meets the hog: the pre-flight or CUDA's OOM → waiting_for_gpu
                record_waiting(rig, job_id, poll, 60, "state_after_oom", out)
            # chunk_decodes: chunks in "batch decoded" lines of this job's run(s)
            job = finish_after_release(rig, hog, job_id, ref, tap.decoded, out)
            out["reference_segments"] = len(ref.segments)
            out["same_words_as_reference"] = (" ".join(s.text for s in job.segments).split()
                                              == " ".join(s.text for s in ref.segments).split())
            out["first_difference"] = next(({"i": i, "job": a.text, "reference": b.text, "job_start": a.start,
                                             "reference_start": b.start}
                                            for i, (a, b) in enumerate(zip(job.segments, ref.segments))
                                            if a.text != b.text), None)
        finally:
            hog.exit()
            rig.stop()
    out["waiting_cause"] = tap.cause()
    out["log"] = tap.lines[:8]
    return out


def dry_preflight(ct2: Path, free_mb: int, work: Path) -> str | None:
    """``ct2engine.gpu_preflight`` with the test hook saying ``free_mb`` free: its refusal, or None."""
    from whisperop.core.errors import GpuMemoryError
    from whisperop.inference.ct2engine import gpu_preflight

    hog = DryCt2Hog(work / "gpu.json", None)
    hog.hold_all_but(free_mb)
    try:
        gpu_preflight(ct2)
        return None
    except GpuMemoryError as exc:
        return f"{exc} (needed {exc.vram_needed_mb} MB, free {exc.vram_free_mb} MB)"
    finally:
        hog.exit()


def ct2_main(args: argparse.Namespace, work: Path, report: dict[str, Any], save: Callable[[], None]) -> int:
    """``--engine ctranslate2``: measure, load-N (mode ct2) for N in --free, job (each skippable)."""
    os.environ["ENGINE"] = "ctranslate2"
    os.environ.setdefault("USE_GPU", "true")
    ct2 = args.ct2
    report.update(engine="ctranslate2", ct2=str(ct2), dry=args.dry)
    inject = InjectedOom() if args.dry else None

    def hog() -> Hog | FileHog:
        return DryCt2Hog(work / "gpu.json", inject) if args.dry else Hog()

    if args.dry:
        hog()  # NVML's answer from the test hook from here on
    else:
        report["gpu_total_mb"] = gpu_memory().total_mb if gpu_memory() else None
    report["measure"] = ct2_measure(ct2, args.jfk)
    print("measure", json.dumps(report["measure"], default=str), flush=True)
    save()
    for n in [int(x) for x in args.free.split(",") if x]:
        key = f"load-{n}-ct2"
        if any(key.startswith(p) for p in args.skip.split(",") if p):
            continue
        if inject is not None:
            inject.armed = False  # the load cases' hog arms nothing on the CPU: loads cannot fail there
        try:
            report[key] = ct2_load_case(ct2, n, args.poll, work, args.jfk, report["measure"]["jfk_text"],
                                        DryCt2Hog(work / "gpu.json", None) if args.dry else Hog())
            if args.dry:  # a CPU load skips the pre-flight: its answer to NVML's (test hook's) N MB free
                report[key]["dry_preflight"] = dry_preflight(ct2, n, work)
        except Exception as exc:  # noqa: BLE001 - record and go on
            report[key] = {"error": repr(exc)}
        print(key, json.dumps(report[key], default=str)[:3000], flush=True)
        save()
    if not any("job".startswith(p) for p in args.skip.split(",") if p):
        try:
            report["job"] = ct2_job_case(ct2, args.poll, work, args.jfk, args.job_free, args.repeats, hog(),
                                         ref_runs=1 if args.dry else 2)
            if inject is not None:
                report["job"]["injected_ooms"] = inject.fired
        except Exception as exc:  # noqa: BLE001
            report["job"] = {"error": repr(exc)}
        print("job", json.dumps(report["job"], default=str)[:4000], flush=True)
        save()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=("whispercpp", "ctranslate2"), default="whispercpp")
    ap.add_argument("--ct2", type=Path, help="--engine ctranslate2: the CTranslate2 model directory")
    ap.add_argument("--model", type=Path, help="--engine whispercpp: the GGML file")
    ap.add_argument("--jfk", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--free", default="20,150,600")
    ap.add_argument("--modes", default="crash,preflight")
    ap.add_argument("--poll", type=int, default=5)
    ap.add_argument("--job-free", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=150)
    ap.add_argument("--skip", default="", help="cases to leave out, by name prefix: load-,job (measure always runs)")
    ap.add_argument("--grow-room", type=int, default=2, help="grow: streams the hog leaves room for")
    ap.add_argument("--dry", action="store_true", help="no GPU: the grow case only, NVML from a file (module doc)")
    args = ap.parse_args()
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"), "text")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    report: dict[str, Any] = {}

    def skipped(key: str) -> bool:
        return any(key.startswith(p) for p in args.skip.split(",") if p)

    def save() -> None:
        (args.out / "gpu-oom.json").write_text(json.dumps(report, indent=1, default=str))

    if args.engine == "ctranslate2":
        if args.ct2 is None:
            ap.error("--engine ctranslate2 needs --ct2 DIR")
        return ct2_main(args, work, report, save)
    if args.model is None:
        ap.error("--model is required for --engine whispercpp")
    if args.dry:
        os.environ.setdefault("ENGINE_ISOLATION", "process")  # auto would run whisper.cpp in-process on the CPU
        os.environ.setdefault("USE_GPU", "true")
        os.environ.setdefault("PARALLELISM", "8")  # the GPU default
        report.update(dry=True, grow=grow_case(args.model, DRY_NEED, args.poll, work, args.jfk, args.grow_room, None,
                                                 FileHog(work / "gpu.json")))
        print("grow", json.dumps(report["grow"], default=str)[:3000], flush=True)
        save()
        return 0
    report["gpu_total_mb"] = gpu_memory().total_mb if gpu_memory() else None

    report["measure"] = measure(args.model, args.jfk)
    save()
    need = report["measure"]["need"]
    for n in [int(x) for x in args.free.split(",") if x]:
        for mode in args.modes.split(","):
            key = f"load-{n}-{mode}"
            if skipped(key):
                continue
            try:
                report[key] = load_case(args.model, n, mode, need, args.poll, work, args.jfk)
            except Exception as exc:  # noqa: BLE001 - record and go on
                report[key] = {"error": repr(exc)}
            print(key, json.dumps(report[key], default=str)[:1500], flush=True)
            save()
    if not skipped("job"):
        try:
            report["job"] = job_case(args.model, need, args.poll, work, args.jfk, args.job_free, args.repeats)
        except Exception as exc:  # noqa: BLE001
            report["job"] = {"error": repr(exc)}
        print("job", json.dumps(report["job"], default=str)[:3000], flush=True)
        save()
    if not skipped("grow"):
        hog = Hog()
        try:
            report["grow"] = grow_case(args.model, need, args.poll, work, args.jfk, args.grow_room,
                                       report["measure"]["jfk_text"], hog)
        except Exception as exc:  # noqa: BLE001
            report["grow"] = {"error": repr(exc)}
        finally:
            hog.exit()
        print("grow", json.dumps(report["grow"], default=str)[:3000], flush=True)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
