"""The page and the docs as HTTP resources (in-process app, real stores): what ships and what is public."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from fastapi.testclient import TestClient

from whisperop.api.app import create_app
from whisperop.api.routers.web import STATIC_DIR
from whisperop.core.languages import WHISPER_LANGUAGES
from whisperop.core.settings import EngineSettings, ServerSettings
from whisperop.inference.runtime import LocalModelRuntime
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("/", "/docs", "/redoc")


def _client(tmp_path: Path, tiny_model: Path, tokens: Path | None = None) -> TestClient:
    d = tmp_path / "data"
    jobs, blobs = SqliteJobStore.in_data_dir(d), LocalBlobStore.in_data_dir(d)
    runtime = LocalModelRuntime(tiny_model, jobs, blobs, EngineSettings(USE_GPU=False), idle_timeout_secs=0)
    app = create_app(ServerSettings(WHISPER_MODEL="tiny-test", DATA_DIR=d), runtime, jobs, blobs,
                     auth_tokens_file=str(tokens) if tokens else None)
    return TestClient(app, base_url="http://127.0.0.1")  # a loopback Host, as a browser on this machine sends


def _local_refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_pages_and_their_assets_are_served_from_the_facade(tmp_path: Path, tiny_model: Path) -> None:
    with _client(tmp_path, tiny_model) as client:
        for path in PAGES:
            r = client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
            assert "default-src 'self'" in r.headers["content-security-policy"]
            refs = _local_refs(r.text)
            # relative to the page (never another host), so a path prefix in front of the facade keeps working
            assert refs and all(":" not in ref and not ref.startswith("/") for ref in refs), (path, refs)
            for ref in refs:
                asset = client.get("/" + ref)
                assert asset.status_code == 200 and asset.content, ref
        assert "cdn." not in client.get("/docs").text + client.get("/redoc").text
        js = client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
        assert "javascript" in js.headers["content-type"] and len(js.content) > 1_000_000
        assert client.get("/static/../pyproject.toml").status_code == 404
        assert client.get("/static/nope.js").json() == {"error": "Not Found"}
        # the page's routes stay out of the API description
        assert not {"/", "/docs", "/redoc"} & set(client.get("/openapi.json").json()["paths"])


def test_pages_are_public_and_the_api_is_not_when_auth_is_on(tmp_path: Path, tiny_model: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-1\n")
    with _client(tmp_path, tiny_model, tokens) as client:
        for path in (*PAGES, "/favicon.ico", "/static/app.js", "/static/vendor/redoc/redoc.standalone.js"):
            assert client.get(path).status_code == 200, path
        for path in ("/openapi.json", "/model/status", "/jobs/x", "/staticx", "/docs/x"):
            assert client.get(path).status_code == 401, path
        assert client.get("/openapi.json", headers={"Authorization": "Bearer tok-1"}).status_code == 200


def test_vendored_docs_assets_keep_their_licences() -> None:
    vendor = STATIC_DIR / "vendor"
    assert "Apache License" in (vendor / "swagger-ui" / "LICENSE").read_text()
    assert "MIT License" in (vendor / "redoc" / "LICENSE").read_text()
    assert "cdn.redoc.ly" not in (vendor / "redoc" / "redoc.standalone.js").read_text()


def test_page_languages_are_the_servers() -> None:
    js = (STATIC_DIR / "languages.js").read_text()
    assert tuple(re.findall(r'"([a-z]+)"', js)) == WHISPER_LANGUAGES


def test_every_static_file_ships_as_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["whisperop.api"]
    shipped = {p for pat in patterns for p in STATIC_DIR.parent.glob(pat)}  # setuptools' globbing: * stays in a folder
    files = {p for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert files and files - shipped == set()
