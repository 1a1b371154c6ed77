"""``audio_url`` in local mode: a real HTTP server on loopback (allowed by this test's allow-list),
the real outbound URL guard, the real app (SQLite + files + the tiny-model engine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.local_app import ENGINE_DEFAULTS, LocalApp, LocalAppFactory, local_apps


class Files(ThreadingHTTPServer):
    """Serves ``routes[path] = (status, content-type, body, extra headers)``."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = {}
        self.hits: list[str] = []
        files = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                files.hits.append(self.path)
                route = self.path.split("?", 1)[0]
                status, ctype, body, extra = files.routes.get(route, (404, "text/plain", b"nope", {}))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in extra.items():
                    if v:  # an empty value: leave the header out (Content-Length: "" = a body ended by close)
                        self.send_header(k, v)
                self.close_connection = "Content-Length" in extra and not extra["Content-Length"]
                if "Content-Length" not in extra:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def files() -> Iterator[Files]:
    srv = Files()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class App(LocalApp):
    def submit(self, url: str, **fields: str):  # type: ignore[no-untyped-def]
        return self.client.post("/jobs", data={"audio_url": url, **fields}, files={"note": (None, "x")})


@pytest.fixture
def make_app(tmp_path: Path, tiny_model: Path) -> Iterator[LocalAppFactory]:
    engine = {k: v for k, v in ENGINE_DEFAULTS.items() if k != "TEMPERATURE_INC"}
    with local_apps(tmp_path, tiny_model, server={"QUEUE_WHILE_LOADING": True, "GPU_POLL_INTERVAL_SECS": 30},
                    engine=engine, app_class=App) as make:
        yield make


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPEROP_OUTBOUND_ALLOW", "127.0.0.1")


def test_audio_by_url_is_fetched_stored_and_transcribed(make_app, files: Files, short_wav: Path,  # type: ignore[no-untyped-def]
                                                        allow_loopback: None) -> None:
    files.routes["/media/talk%20one.wav"] = (200, "audio/wav", short_wav.read_bytes(), {})
    files.routes["/moved"] = (302, "text/plain", b"", {"Location": "/media/talk%20one.wav"})
    app = make_app()
    r = app.submit(files.url + "/moved?token=abc", priority="3")
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert files.hits == ["/moved?token=abc", "/media/talk%20one.wav"]
    deadline = time.monotonic() + 120
    while (job := app.client.get(f"/jobs/{job_id}").json())["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job["status"] == "done", job
    assert job["duration_secs"] == pytest.approx(3.0, abs=0.1)
    assert job["filename"] == "moved"  # the URL's last path element, as the client gave it
    assert app.blob_files() == []  # the fetched audio went with the finished job, as an upload does


@pytest.mark.parametrize("route, setting, message", [
    ((404, "text/plain", b"nope", {}), {}, "audio_url answered HTTP 404"),
    ((200, "text/html; charset=utf-8", b"<html>hi</html>", {}), {}, "audio_url is not audio (Content-Type text/html)"),
    ((200, "application/octet-stream", bytes(range(256)) * 64, {}), {}, "audio_url is not a readable audio file"),
    ((200, "audio/wav", b"", {}), {}, "audio_url returned no data"),
    (None, {"AUDIO_URL_MAX_BYTES": 1000}, "larger than AUDIO_URL_MAX_BYTES (1000 bytes)"),
    (None, {"MAX_AUDIO_SECS": 1}, "audio_url is 3 s long, more than MAX_AUDIO_SECS (1 s)"),
])
def test_bad_sources_are_400_with_the_reason_and_keep_nothing(make_app, files: Files, short_wav: Path,  # type: ignore[no-untyped-def]
                                                               allow_loopback: None, route, setting, message) -> None:
    files.routes["/a.wav"] = route or (200, "audio/wav", short_wav.read_bytes(), {})
    app = make_app(**setting)
    r = app.submit(files.url + "/a.wav")
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert app.blob_files() == [] and app.jobs.list_page(None, 100).jobs == []


def test_oversized_by_count_without_content_length(make_app, files: Files, allow_loopback: None) -> None:  # type: ignore[no-untyped-def]
    files.routes["/stream.wav"] = (200, "audio/wav", bytes(5000), {"Content-Length": ""})
    app = make_app(AUDIO_URL_MAX_BYTES=1000)
    r = app.submit(files.url + "/stream.wav")
    assert r.status_code == 400 and "larger than AUDIO_URL_MAX_BYTES" in r.json()["error"], r.text
    assert app.blob_files() == [] and app.jobs.list_page(None, 100).jobs == []


def test_blocked_and_unreachable_addresses_are_refused(make_app, files: Files, short_wav: Path,  # type: ignore[no-untyped-def]
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    files.routes["/a.wav"] = (200, "audio/wav", short_wav.read_bytes(), {})
    files.routes["/to-metadata"] = (302, "text/plain", b"", {"Location": "http://169.254.169.254/latest/meta-data"})
    monkeypatch.delenv("WHISPEROP_OUTBOUND_ALLOW", raising=False)
    app = make_app()
    for url, why in [(files.url + "/a.wav", "loopback"), ("http://169.254.169.254/latest", "link-local"),
                     ("http://10.1.2.3/a.wav", "private"), ("http://2130706433/a.wav", "loopback"),
                     ("file:///etc/passwd", "audio_url must be an http(s) URL"),
                     ("s3://bucket/key.wav", "needs cluster mode")]:
        r = app.submit(url)
        assert r.status_code == 400 and why in r.json()["error"], (url, r.text)
    assert files.hits == []  # nothing was fetched from a refused address
    assert app.blob_files() == [] and app.jobs.list_page(None, 100).jobs == []
    app = make_app(WHISPEROP_OUTBOUND_ALLOW="127.0.0.1")  # the server's setting, read at start
    r = app.submit(files.url + "/to-metadata")  # an allowed host redirecting to a blocked one
    assert r.status_code == 400 and "link-local" in r.json()["error"], r.text
    with_closed_port = f"http://127.0.0.1:{_closed_port()}/a.wav"
    r = app.submit(with_closed_port)
    assert r.status_code == 400 and r.json()["error"].startswith("audio_url unreachable: ConnectError"), r.text
    r = app.client.post("/jobs", data={"audio_url": files.url + "/a.wav"},
                        files={"audio": ("x.wav", short_wav.read_bytes(), "audio/wav")})
    assert r.status_code == 400 and r.json() == {"error": "give either 'audio' or 'audio_url', not both"}
    assert app.blob_files() == [] and app.jobs.list_page(None, 100).jobs == []


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
