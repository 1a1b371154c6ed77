"""Fixtures of the security suite: real ``whisperop serve`` processes on loopback
(tiny random-weight model), real webhook receivers, audio made with numpy."""

from __future__ import annotations

import itertools
import sqlite3
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import audio as audio_mod  # noqa: E402
from tests.support.server import TINY_SERVER_ENV, ServerProcess  # noqa: E402

#: like the contract suite's servers, but WITHOUT any outbound allow-list: the secure default
BASE_ENV = {**TINY_SERVER_ENV, "WHISPEROP_OUTBOUND_ALLOW": ""}


class Servers:
    _names = itertools.count(1)

    def __init__(self, work: Path, model: Path) -> None:
        self.work, self.model = work, model
        self.started: list[ServerProcess] = []

    def make(self, name: str, start: bool = True, **env: str) -> ServerProcess:
        name = f"{name}-{next(self._names)}"
        srv = ServerProcess(name, self.work / "data" / name, self.work / "logs",
                            env={**BASE_ENV, "WHISPER_MODEL_PATH": str(self.model), **env})
        self.started.append(srv)
        if start:
            srv.start()
        return srv

    def close(self) -> None:
        for s in self.started:
            s.close()


@pytest.fixture(scope="module")
def security_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest.fixture(scope="module")
def security_model(security_work: Path) -> Path:
    from whisperop.modelstore.tiny import build_tiny_model

    return build_tiny_model(security_work / "models" / "ggml-tiny-test.bin")


@pytest.fixture(scope="module")
def servers(security_work: Path, security_model: Path) -> Iterator[Servers]:
    s = Servers(security_work, security_model)
    yield s
    s.close()


@pytest.fixture(scope="module")
def short_wav(security_work: Path) -> Path:
    return audio_mod.tone_wav(security_work / "audio" / "short.wav", 1.5)


def registered_webhooks(srv: ServerProcess) -> list[str]:
    """The lifecycle-webhook registry as the server persisted it (read-only peek at its SQLite)."""
    con = sqlite3.connect(f"file:{srv.data_dir / 'jobs.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in con.execute("SELECT url FROM webhook_urls ORDER BY seq")]
    finally:
        con.close()


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())
