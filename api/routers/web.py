"""The page for people (``/``) and the API docs (``/docs``, ``/redoc``), all served by the facade.

Everything a browser loads comes from this process: the page's own ES
modules and CSS (``api/static/``) and Swagger UI / ReDoc, vendored byte for
byte from the npm registry with their licences (``api/static/vendor/``,
re-created by ``scripts/vendor-web-assets.sh``). FastAPI's default docs pages
load both from a public CDN and a favicon from fastapi.tiangolo.com, so on an
air-gapped cluster — where a self-hosted transcription service typically
runs — ``/docs`` was blank. The same router serves both serve modes.

Weights (uncompressed, as served): the page is 36 KB in 7 files (773 lines
of HTML, JS and CSS: no framework, no build step); ``/docs`` 1.9 MB (Swagger
UI's bundle), ``/redoc`` 1.1 MB — loaded only by whoever opens them.

None of these paths carries data: they are public even when bearer auth is
on (:data:`whisperop.api.auth.PUBLIC_PATHS`), so a browser can load them;
the page and the docs then ask for the token and send it on every API call,
``/openapi.json`` included (it stays behind auth). FastAPI's own docs HTML
(``get_swagger_ui_html``) is not used because it fetches the spec without a
token and needs inline scripts.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/static"
#: what a browser may fetch without a token: the pages and their assets, never data
PUBLIC_PATHS = frozenset({"/", "/docs", "/redoc", "/favicon.ico"})
PUBLIC_PREFIXES = (f"{STATIC_PREFIX}/",)

# Defence in depth behind the vendored assets: the browser itself refuses anything from another
# origin. No page has inline scripts; Swagger UI and ReDoc style inline, ReDoc searches in a blob: worker.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

router = APIRouter(include_in_schema=False)


def _page(name: str, csp: str) -> Response:
    # no-cache: a new release's page must not run against a stale module from the browser cache
    page = FileResponse(STATIC_DIR / name, media_type="text/html", headers={"Cache-Control": "no-cache"})
    page.headers["Content-Security-Policy"] = csp
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Referrer-Policy"] = "no-referrer"
    return page


@router.get("/", response_class=HTMLResponse)
def index() -> Response:
    return _page("index.html", PAGE_CSP)


@router.get("/favicon.ico")
def favicon() -> Response:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> Response:
    return _page("docs.html", DOCS_CSP)


@router.get("/redoc", response_class=HTMLResponse)
def redoc() -> Response:
    return _page("redoc.html", DOCS_CSP)


def install(app: FastAPI) -> None:
    """The page, the docs and ``/static`` on ``app`` (built with ``docs_url=None, redoc_url=None``)."""
    app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
