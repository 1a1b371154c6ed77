"""Headless Chromium for tests: Debian's browser driven by Playwright, every request recorded.

Chromium is the system's (``/usr/bin/chromium``, or ``$WHISPEROP_CHROMIUM``);
Playwright only drives it (``executable_path``) and never downloads a browser.
Without Chromium or the ``playwright`` package the tests are skipped with the
reason — or fail, with ``WHISPEROP_REQUIRE_CLUSTER=1`` (CI), so a CI machine
that lost its browser cannot pass by skipping them.

Every page is opened in a fresh context whose requests are all recorded; a
request to any other origin than the server's is aborted (the network is cut
off, as on an air-gapped cluster) and recorded too, so a test can assert that
nothing outside the server was asked for. Import the fixtures ``browser`` and
``open_page`` into a conftest to use them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest


class HasBaseUrl(Protocol):
    @property
    def base_url(self) -> str: ...


CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]


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
    pytest.skip(reason, allow_module_level=True)


def playwright_expect() -> Any:
    """``playwright.sync_api.expect`` for a test module: skips the module without the package (fails in CI)."""
    try:
        from playwright.sync_api import expect
    except ImportError:
        _missing("the playwright package is not installed (the 'test' extra)")
    return expect


@pytest.fixture
def browser() -> Iterator[Any]:
    """A Chromium for one test (about 1 s to start). Not shared wider: Playwright's sync API keeps an
    asyncio loop running in this thread while it is open, and ``asyncio.run`` in later tests would fail."""
    path = chromium_path()
    if path is None:
        _missing("Chromium not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (the 'test' extra)")
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # not 5 s: CI's 2 cores are shared with servers and whisper.cpp
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

    def open_(server: HasBaseUrl | str, **options: Any) -> Session:
        origin = server if isinstance(server, str) else server.base_url
        ctx = browser.new_context(accept_downloads=True, **options)
        ctx.set_default_timeout(30_000)
        s = Session(origin.rstrip("/"), ctx, ctx.new_page())

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
