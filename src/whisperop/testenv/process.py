"""One long-running component: started with its own log file, stopped cleanly.

Why: a test environment is a handful of servers; each must log to its own
file (printed when a test fails), die with the process that started it when
that process is killed, and be stopped in order (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the launching process dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass



T = TypeVar("T")


def poll(pred: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``pred`` until it returns something truthy and return that; AssertionError naming
    ``what`` and the last value after ``timeout`` seconds. The one wait loop of the test
    environment, its tests and benchmarks."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class Component:
    """A server process with a log file and a readiness check."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_dir / f"{name}.log"
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def start(self, detach: bool = False) -> None:
        """Start the process; ``detach`` keeps it alive after this Python exits (CLI ``up``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=None if detach else _die_with_parent,
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        """True while the process runs (works for a pid adopted from a state file too).

        An adopted pid only counts if it still runs our binary, so a pid reused
        by the kernel for something else is never signalled.
        """
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid) and _runs(self.pid, self.argv[0])

    def tail(self, lines: int = 40) -> str:
        """Last lines of the log, for error messages and failed-test reports."""
        try:
            data = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(data[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until true; fail early with the log tail if the process exits."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited before {what}; log {self.log_path}:\n{self.tail()}")
            try:
                if ready():
                    return
            except Exception as exc:  # readiness probes raise while the server starts
                last_error = exc
            time.sleep(0.2)
        raise TimeoutError(
            f"{self.name}: not {what} after {timeout:.0f}s (last error: {last_error}); log {self.log_path}:\n{self.tail()}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
        if self.pid is None or not self.alive():
            return
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=0.1)
                    return
                except subprocess.TimeoutExpired:
                    continue
            if not _pid_alive(self.pid):
                return
            time.sleep(0.1)
        _signal_group(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=5)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # each component leads its own session/group
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _runs(pid: int, exe: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace") == exe
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False
