"""The real ``LocalModelRuntime`` in-process over SQLite and local files, its events recorded: one
factory for the runtime tests (tests/api/test_runtime.py, tests/engine/test_supervision.py), so
the runtime is wired and stopped in one place.

Each test file states only what differs (the model, engine settings on top of
:data:`~tests.support.local_app.ENGINE_DEFAULTS`, runtime arguments such as the poll interval or
fault hooks, and how long a stop may take); the factory stops every runtime it started and closes
its job store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.local_app import ENGINE_DEFAULTS
from whisperop.core.models import Job
from whisperop.core.ports import RuntimeEvent
from whisperop.core.settings import EngineSettings
from whisperop.inference.runtime import LocalModelRuntime
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore
from whisperop.testenv.process import poll


class Recorder:
    def __init__(self) -> None:
        self.events: list[RuntimeEvent] = []
        self.times: list[float] = []  # monotonic time of each event, taken in the runtime's thread
        self.lock = threading.Lock()

    def __call__(self, ev: RuntimeEvent) -> None:
        with self.lock:
            self.events.append(ev)
            self.times.append(time.monotonic())

    def at(self, name: str) -> float:
        with self.lock:
            return next(t for e, t in zip(self.events, self.times) if getattr(e, "type", "timing") == name)

    def names(self) -> list[str]:
        with self.lock:
            return [getattr(e, "type", "timing") for e in self.events]


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """:func:`whisperop.testenv.process.poll` at a 20 ms period, for predicates that return a bool."""
    poll(pred, timeout, what, interval=0.02)


def submit(rt: LocalModelRuntime, audio: Path | bytes, job_id: str, **kw: object) -> str:
    key = f"audio/{job_id}/source"
    rt.blobs.put(key, [audio.read_bytes() if isinstance(audio, Path) else audio])
    rt.jobs.create(Job(id=job_id, **kw), key)  # type: ignore[arg-type]
    rt.notify_job_queued()
    return job_id


class LocalRuntimes:
    """``start(model, engine=None, **runtime)`` → a started runtime over a fresh data dir
    (``d0``, ``d1``, … under ``tmp_path``) and the :class:`Recorder` subscribed to it. ``engine``
    goes on top of :data:`ENGINE_DEFAULTS`; ``runtime`` are ``LocalModelRuntime``'s own arguments,
    ``idle_timeout_secs=0`` unless given (a test unloads when it means to)."""

    def __init__(self, tmp_path: Path, stop_timeout: float) -> None:
        self.tmp_path, self.stop_timeout = tmp_path, stop_timeout
        self.made: list[LocalModelRuntime] = []

    def start(self, model: Path, engine: Mapping[str, object] | None = None,
              **runtime: Any) -> tuple[LocalModelRuntime, Recorder]:
        d = self.tmp_path / f"d{len(self.made)}"
        settings = EngineSettings(**{**ENGINE_DEFAULTS, **(engine or {})})  # type: ignore[arg-type]
        rt = LocalModelRuntime(model, SqliteJobStore.in_data_dir(d), LocalBlobStore.in_data_dir(d), settings,
                               **{"idle_timeout_secs": 0, **runtime})
        rec = Recorder()
        rt.subscribe(rec)
        rt.start()
        self.made.append(rt)
        return rt, rec

    def close(self) -> None:
        for rt in self.made:
            rt.stop(self.stop_timeout)
            rt.jobs.close()


@contextmanager
def local_runtimes(tmp_path: Path, stop_timeout: float = 10.0) -> Iterator[LocalRuntimes]:
    """``stop_timeout`` is ``LocalModelRuntime.stop``'s: its default 10 s, or longer where a test
    leaves a child process (the isolated engine) to end."""
    runtimes = LocalRuntimes(tmp_path, stop_timeout)
    try:
        yield runtimes
    finally:
        runtimes.close()
