"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, real ``whisperop serve`` processes.

Chromium is the system's (``/usr/bin/chromium``, or ``$WHISPEROP_CHROMIUM``);
Playwright only drives it (``executable_path``) and never downloads a browser.
Without Chromium or the ``playwright`` package the tests are skipped with the
reason — or fail, with ``WHISPEROP_REQUIRE_CLUSTER=1`` (CI), so a CI machine
that lost its browser cannot pass by skipping them.

Every page is opened in a fresh context whose requests are all recorded; a
request to any other origin than the server's is aborted (the network is cut
off, as on an air-gapped cluster) and recorded too, so a test can assert that
nothing outside the server was asked for.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.server import LIVE_SERVERS, ServerProcess  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]
#: what every server of these tests gets (a test may add to it)
BASE_ENV = {"IDLE_TIMEOUT_SECS": "0", "GPU_POLL_INTERVAL_SECS": "1", "QUEUE_WHILE_LOADING": "false", "TEMPERATURE_INC": "0"}


def _required() -> bool:
    return os.environ.get("WHISPEROP_REQUIRE_CLUSTER", "").lower() in ("1", "true", "yes")


def chromium_path() -> str | None:
    explicit = os.environ.get("WHISPEROP_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or (str(p) if (p := Path("/usr/bin/chromium")).is_file() else None)


def _missing(reason: str) -> None:
    if _required():
        pytest.fail(f"WHISPEROP_REQUIRE_CLUSTER=1 but {reason} (scripts/bootstrap.sh installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        _missing("Chromium not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (the 'test' extra)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Session:
    """One browser context on one server: its page and every URL it asked for."""

    origin: str
    context: Any
    page: Any
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str = "/") -> Any:
        self.page.goto(self.origin + path)
        return self.page


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """``open_page(server, **context_options)`` → a :class:`Session` with the network cut off beyond the server."""
    sessions: list[Session] = []

    def open_(server: ServerProcess, **options: Any) -> Session:
        ctx = browser.new_context(accept_downloads=True, **options)
        ctx.set_default_timeout(30_000)
        s = Session(server.base_url, ctx, ctx.new_page())

        def route(r: Any) -> None:
            url = r.request.url
            s.requests.append(url)
            if _origin(url) == s.origin:
                r.continue_()
            else:
                s.foreign.append(url)
                r.abort("internetdisconnected")

        ctx.route("**/*", route)
        s.page.on("pageerror", lambda e: s.errors.append(str(e)))
        # a request refused by the Content-Security-Policy never reaches the route above: count those too
        s.page.on("console", lambda m: s.errors.append(m.text) if "Content Security Policy" in m.text else None)
        sessions.append(s)
        return s

    yield open_
    for s in sessions:
        s.context.close()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


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


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item._server_log_offsets = {id(s): s.log_size() for s in LIVE_SERVERS}  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        offsets = getattr(item, "_server_log_offsets", {})
        for s in list(LIVE_SERVERS):
            text = s.log_text(offsets.get(id(s), 0), 8000)
            if text.strip():
                rep.sections.append((f"server log {s.name} ({s.base_url}) during this test", text))
