"""Fixtures of the HTTP contract suite (issue 3).

Two modes:

- ``WHISPEROP_BASE_URL`` set: every test that only needs *a* server runs
  against that URL (later: the cluster facade). Tests that need a server
  with special settings, fault hooks or a kill -9 start their own and are
  skipped in this mode, with the reason given.
- otherwise: a session server ``whisperop serve`` is started here, on a free
  loopback port with the tiny random-weight model, and dedicated servers are
  started for tests that need special settings.

Every server's log is kept under the session's temp folder; the part of it
written during a failing test is attached to the failure report.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import audio as audio_mod  # noqa: E402
from tests.support.client import ApiClient  # noqa: E402
from tests.support.server import TINY_SERVER_ENV, ServerProcess  # noqa: E402
from tests.support.sse import SSEStream  # noqa: E402
from tests.support.webhooks import WebhookReceiver  # noqa: E402

from tests.support.mode import EXTERNAL_URL, MANAGED, MANAGED_ONLY_REASON  # noqa: E402
from tests.support.server import pytest_runtest_makereport, pytest_runtest_setup  # noqa: F401  (hooks: server logs in failure reports)

#: settings every suite-started server gets, unless a test overrides them
BASE_ENV = {
    **TINY_SERVER_ENV,
    # the tests' webhook receivers listen on loopback, which the outbound URL guard refuses unless listed
    "WHISPEROP_OUTBOUND_ALLOW": "127.0.0.1",
}


# ── failure reports carry the servers' logs ─────────────────────────────────




# ── audio and model ──────────────────────────────────────────────────────────


@dataclass
class AudioSet:
    jfk: Path  # 11 s of speech
    short: Path  # 1.5 s tone
    medium: Path  # 90 s of bursts: ~5 chunks of <= 20 s
    long: Path  # 1200 s of bursts: a job that runs long enough to act on it
    garbage: bytes


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract")


@pytest.fixture(scope="session")
def audio(work_dir: Path) -> AudioSet:
    d = work_dir / "audio"
    return AudioSet(
        jfk=audio_mod.JFK_WAV,
        short=audio_mod.tone_wav(d / "short.wav", 1.5),
        medium=audio_mod.bursts_wav(d / "medium.wav", 90.0, seed=1),
        long=audio_mod.bursts_wav(d / "long.wav", 1200.0, seed=2),
        garbage=audio_mod.garbage_bytes(),
    )


@pytest.fixture(scope="session")
def tiny_model(work_dir: Path) -> Path:
    from whisperop.modelstore.tiny import build_tiny_model

    return build_tiny_model(work_dir / "models" / "ggml-tiny-test.bin")


# ── servers ──────────────────────────────────────────────────────────────────


class ServerFactory:
    """Starts ``whisperop serve`` processes with the tiny model and BASE_ENV."""

    _names = itertools.count(1)

    def __init__(self, work_dir: Path, model: Path) -> None:
        self.work_dir = work_dir
        self.model = model
        self.servers: list[ServerProcess] = []

    def make(self, name: str, data_dir: Path | None = None, start: bool = True, **env: str) -> ServerProcess:
        name = f"{name}-{next(self._names)}"
        full_env = {**BASE_ENV, "WHISPER_MODEL_PATH": str(self.model), **{k: str(v) for k, v in env.items()}}
        srv = ServerProcess(name, data_dir or (self.work_dir / "data" / name), self.work_dir / "logs", env=full_env)
        self.servers.append(srv)
        if start:
            srv.start()
        return srv

    def close_all(self) -> None:
        for s in self.servers:
            s.close()
        self.servers.clear()


@pytest.fixture(scope="session")
def session_servers(work_dir: Path, tiny_model: Path) -> Iterator[ServerFactory]:
    f = ServerFactory(work_dir, tiny_model)
    yield f
    f.close_all()


@pytest.fixture
def start_server(work_dir: Path, tiny_model: Path) -> Iterator[ServerFactory]:
    """Factory for dedicated servers that live for one test (managed mode only)."""
    if not MANAGED:
        pytest.skip(MANAGED_ONLY_REASON)
    f = ServerFactory(work_dir, tiny_model)
    yield f
    f.close_all()


@dataclass
class Target:
    base_url: str
    server: ServerProcess | None  # None when WHISPEROP_BASE_URL is used
    loaded_at: str | None = None  # model_status.loaded_at once the session made it ready


@pytest.fixture(scope="session")
def shared(session_servers: ServerFactory) -> Target:
    """The server most tests share, with the model loaded (never idle-unloaded)."""
    if EXTERNAL_URL:
        target = Target(EXTERNAL_URL, None)
    else:
        srv = session_servers.make("shared")
        target = Target(srv.base_url, srv)
    with ApiClient(target.base_url) as c:
        target.loaded_at = c.ensure_ready(timeout=600).get("loaded_at")
    return target


@pytest.fixture(scope="session")
def model_events_probe(shared: Target) -> Iterator[SSEStream]:
    """A /model/events subscription opened at the start of the session (for keep-alive checks)."""
    s = SSEStream(shared.base_url + "/model/events").start()
    s.wait_open()
    yield s
    s.close()


@pytest.fixture
def api(shared: Target, model_events_probe: SSEStream) -> Iterator[ApiClient]:
    """A client of the shared server, model ready; jobs it left unfinished are cancelled after the test."""
    c = ApiClient(shared.base_url)
    c.ensure_ready(timeout=300)
    yield c
    c.cleanup()
    c.close()


# ── idle timeout: a dedicated server here, or what the external server's starter says ──

#: the WHISPEROP_BASE_URL server's idle timeout and extra load time, when whoever started it
#: says so (the cluster facade's test: the WhisperModel's idleTimeoutSeconds and the workers'
#: WHISPEROP_FAULT_LOAD_DELAY_SECS); unknown (unset) → the idle tests skip in that mode
EXTERNAL_IDLE_SECS = os.environ.get("WHISPEROP_CONTRACT_IDLE_TIMEOUT_SECS")
EXTERNAL_LOAD_DELAY_SECS = float(os.environ.get("WHISPEROP_CONTRACT_LOAD_DELAY_SECS") or 0)
IDLE_UNKNOWN_REASON = ("the WHISPEROP_BASE_URL server's idle timeout is not known to the suite "
                       "(set WHISPEROP_CONTRACT_IDLE_TIMEOUT_SECS)")


@dataclass
class IdleTarget:
    base_url: str
    idle: float  # seconds a ready, unused model stays loaded
    load_delay: float  # seconds every load takes on top of the real load


def external_idle_secs() -> float | None:
    return float(EXTERNAL_IDLE_SECS) if EXTERNAL_IDLE_SECS not in (None, "") else None


@pytest.fixture
def idle_server(work_dir: Path, tiny_model: Path) -> Iterator[Callable[[float, float], IdleTarget]]:
    """``make(idle, load_delay)``: a server that unloads after ``idle`` s; managed mode starts
    one with those settings, external mode uses WHISPEROP_BASE_URL with the figures its
    starter declared (a test that needs a slow load skips when the external one is not)."""
    f = ServerFactory(work_dir, tiny_model)

    def make(idle: float, load_delay: float = 0.0) -> IdleTarget:
        if MANAGED:
            env = {"IDLE_TIMEOUT_SECS": str(int(idle))}
            if load_delay:
                env["WHISPEROP_FAULT_LOAD_DELAY_SECS"] = str(load_delay)
            return IdleTarget(f.make("idle", **env).base_url, idle, load_delay)
        ext = external_idle_secs()
        if not ext:
            pytest.skip(IDLE_UNKNOWN_REASON if ext is None else "the WHISPEROP_BASE_URL server never unloads (idle 0)")
        if load_delay and EXTERNAL_LOAD_DELAY_SECS <= ext:
            pytest.skip("the WHISPEROP_BASE_URL server's loads are not declared slower than its idle timeout "
                        "(WHISPEROP_CONTRACT_LOAD_DELAY_SECS)")
        assert EXTERNAL_URL is not None
        return IdleTarget(EXTERNAL_URL, ext, EXTERNAL_LOAD_DELAY_SECS)

    yield make
    f.close_all()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r
