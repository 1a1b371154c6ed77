"""How long the web page and the API docs take to become usable in headless Chromium.

    python bench/web_pages.py [--runs 5] [--base-url URL]

Without ``--base-url`` a ``whisperop serve`` with the tiny random-weight model
is started on a free loopback port (the model state is what the page shows
first; the weights do not matter here). Each run opens a fresh browser
context (cold cache) and measures from navigation to: the model badge showing
the server's state (``/``), Swagger UI's title (``/docs``), ReDoc's heading
(``/redoc``). Requests to any other host are aborted and counted (must be 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

TARGETS = (("/", "#model-state:not([data-state=unknown])"), ("/docs", ".swagger-ui .info .title"), ("/redoc", "h1"))


def measure(base: str, runs: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {path: [] for path, _ in TARGETS}
    origin = f"{urlsplit(base).scheme}://{urlsplit(base).netloc}"
    foreign: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for _ in range(runs):
            for path, selector in TARGETS:
                ctx = browser.new_context()
                ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(origin) else (foreign.append(r.request.url), r.abort())[1])
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(base + path)
                page.wait_for_selector(selector)
                times[path].append(time.perf_counter() - t0)
                ctx.close()
        browser.close()
    if foreign:
        raise SystemExit(f"requests to other hosts: {foreign}")
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--base-url")
    args = ap.parse_args()
    server = None
    if args.base_url:
        base = args.base_url.rstrip("/")
    else:
        from tests.support.server import ServerProcess
        from whisperop.modelstore.tiny import build_tiny_model

        work = Path(tempfile.mkdtemp(prefix="bench-web-"))
        model = build_tiny_model(work / "tiny.bin")
        server = ServerProcess("bench-web", work / "data", work, env={"WHISPER_MODEL_PATH": str(model)}).start()
        base = server.base_url
    try:
        for path, secs in measure(base, args.runs).items():
            print(f"{path:7} median {statistics.median(secs) * 1000:5.0f} ms  min {min(secs) * 1000:5.0f}  "
                  f"max {max(secs) * 1000:5.0f}  (n={len(secs)}, cold cache, 0 requests to other hosts)")
    finally:
        if server:
            server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
