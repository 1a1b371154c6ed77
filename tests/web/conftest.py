"""Fixtures of the browser tests: headless Chromium (tests/support/browser.py), real ``whisperop serve`` processes."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.browser import browser, open_page  # noqa: E402,F401  (fixtures)
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.server import pytest_runtest_makereport, pytest_runtest_setup  # noqa: F401  (hooks: server logs in failure reports)

#: what every server of these tests gets (a test may add to it)
BASE_ENV = {"IDLE_TIMEOUT_SECS": "0", "GPU_POLL_INTERVAL_SECS": "1", "QUEUE_WHILE_LOADING": "false", "TEMPERATURE_INC": "0"}


# ── servers ──────────────────────────────────────────────────────────────────


@pytest.fixture(scope="session")
def web_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web")


class Servers:
    _names = itertools.count(1)

    def __init__(self, work: Path) -> None:
        self.work = work
        self.started: list[ServerProcess] = []

    def start(self, name: str, model: Path, **env: str) -> ServerProcess:
        name = f"{name}-{next(self._names)}"
        srv = ServerProcess(name, self.work / "data" / name, self.work / "logs",
                            env={**BASE_ENV, "WHISPER_MODEL_PATH": str(model), **env})
        self.started.append(srv)
        return srv.start()

    def close(self) -> None:
        for s in self.started:
            s.close()


@pytest.fixture(scope="session")
def servers(web_dir: Path) -> Iterator[Servers]:
    s = Servers(web_dir)
    yield s
    s.close()


@pytest.fixture(scope="session")
def tiny_model(web_dir: Path) -> Path:
    from whisperop.modelstore.tiny import build_tiny_model

    return build_tiny_model(web_dir / "models" / "ggml-tiny-test.bin")


@pytest.fixture(scope="session")
def tiny_server(servers: Servers, tiny_model: Path) -> ServerProcess:
    """A server with the random-weight tiny model: for the page's behaviour, not its transcripts."""
    return servers.start("tiny", tiny_model, WHISPER_MODEL="tiny-test")


