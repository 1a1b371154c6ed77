"""Start, stop, kill and restart ``whisperop serve`` as a subprocess.

Each server gets its own log file; the contract suite prints the part of
every live server's log written during a failing test.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping

import httpx
import pytest

#: every server started by this process that has not been stopped for good
LIVE_SERVERS: list["ServerProcess"] = []

#: settings of the suites' servers with the tiny random-weight model (contract, security)
TINY_SERVER_ENV = {
    "WHISPER_MODEL": "tiny-test",
    "CHUNK_MAX_SECS": "20",
    "IDLE_TIMEOUT_SECS": "0",
    "GPU_POLL_INTERVAL_SECS": "2",
    "QUEUE_WHILE_LOADING": "false",
    # the tiny model's noise makes every temperature fallback fire: 3x slower jobs for nothing
    "TEMPERATURE_INC": "0",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_command() -> list[str]:
    """``python -m whisperop serve``, or ``$WHISPEROP_SERVE_CMD`` (split like a shell
    would) to run the same suite against another build of the server."""
    override = os.environ.get("WHISPEROP_SERVE_CMD", "").strip()
    return shlex.split(override) if override else [sys.executable, "-m", "whisperop", "serve"]


class ServerError(RuntimeError):
    pass


class ServerProcess:
    """One ``python -m whisperop serve`` process on a loopback port.

    ``env`` is layered over the current environment; ``HOST``, ``PORT`` and
    ``DATA_DIR`` are always set by this class. ``restart()`` starts a new
    process on the same port and the same DATA_DIR.
    """

    def __init__(
        self,
        name: str,
        data_dir: Path,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_dir) / f"server-{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # ── lifecycle ──────────────────────────────────────────────────────────

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("WHISPEROP_BASE_URL", None)
        env.update(self.extra_env)
        env.update({"HOST": self.host, "PORT": str(self.port), "DATA_DIR": str(self.data_dir)})
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError(f"{self.name}: already running (pid {self.proc.pid})")
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts} of server {self.name} on {self.base_url} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            serve_command(),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if self not in LIVE_SERVERS:
            LIVE_SERVERS.append(self)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last: str = "no answer"
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise ServerError(
                        f"{self.name}: exited with code {self.proc.returncode} before /health answered\n"
                        f"--- log tail ---\n{self.log_tail()}"
                    )
                try:
                    r = client.get(self.base_url + "/health")
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.2)
        raise ServerError(f"{self.name}: /health not 200 within {timeout:.0f}s (last: {last})\n--- log tail ---\n{self.log_tail()}")

    def kill9(self) -> None:
        """SIGKILL the server (no shutdown hooks run)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._note(f"killed with SIGKILL (pid {self.proc.pid})")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``. Children in its session go too."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            except ProcessLookupError:
                pass
        # anything the server spawned in its own session (never broader than that)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._note(f"stopped (exit code {self.proc.returncode})")

    def close(self) -> None:
        self.stop()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)

    def restart(self, timeout: float = 120.0) -> "ServerProcess":
        self.stop()
        return self.start(timeout)

    def start_and_finish(self, job_id: str, ready_timeout: float, timeout: float) -> tuple[dict[str, Any], str]:
        """Start the (stopped or killed) server, wait for ``job_id`` to end; its final body and
        the log written since this start (what the resumed run did)."""
        from tests.support.client import ApiClient

        offset = self.log_size()
        self.start()
        with ApiClient(self.base_url) as c:
            c.ensure_ready(timeout=ready_timeout)
            final = c.wait_terminal(job_id, timeout=timeout)
        return final, self.log_text(offset, 10**7)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ── logs ───────────────────────────────────────────────────────────────

    def _note(self, text: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"===== {self.name}: {text} =====\n".encode())

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, offset: int = 0, limit: int = 20000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        if len(data) > limit:
            data = b"[... cut ...]\n" + data[-limit:]
        return data.decode("utf-8", "replace")

    def log_tail(self, limit: int = 6000) -> str:
        size = self.log_size()
        return self.log_text(max(0, size - limit), limit)

    def __repr__(self) -> str:
        return f"ServerProcess({self.name!r}, {self.base_url}, pid={self.proc.pid if self.proc else None})"


# ── failure reports carry the servers' logs ─────────────────────────────────
# Hook implementations: a conftest imports both names to turn them on for its folder.


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item._server_log_offsets = {id(s): s.log_size() for s in LIVE_SERVERS}  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:  # type: ignore[type-arg]
    """A failed test's report gets each live server's log written during the test (12 KB each)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        offsets = getattr(item, "_server_log_offsets", {})
        for s in list(LIVE_SERVERS):
            text = s.log_text(offsets.get(id(s), 0), 12000)
            if text.strip():
                rep.sections.append((f"server log {s.name} ({s.base_url}, pid {s.proc.pid if s.proc else '-'}) during this test", text))
