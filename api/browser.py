"""Browser protection: a Host allow-list (DNS rebinding) and an Origin check (CSRF).

A server on loopback is reachable by every web page the operator opens. Two
browser attacks work without any credential:

* **CSRF**: a page on ``https://evil.example`` POSTs to
  ``http://127.0.0.1:8080/model/unload`` (a "simple" request with
  ``Content-Type: text/plain`` needs no CORS preflight). The browser marks it
  with ``Origin: https://evil.example`` (and ``Sec-Fetch-Site: cross-site``):
  state-changing methods (POST, PUT, PATCH, DELETE) from an origin that is
  neither this server nor listed in ``WHISPEROP_CORS_ORIGINS`` get 403.
  Clients that are not browsers send no ``Origin`` and are unaffected.
* **DNS rebinding**: ``evil.example`` re-resolves to ``127.0.0.1``, so the
  page becomes same-origin with the server — but its requests still say
  ``Host: evil.example``. The ``Host`` header must name this server:
  ``WHISPEROP_ALLOWED_HOSTS`` (comma-separated, ``*`` = any), by default the
  loopback names when the server listens on loopback and any host otherwise
  (a network listener requires bearer tokens, which a rebinding page does not
  have).

CORS stays off unless ``WHISPEROP_CORS_ORIGINS`` lists origins. ``/health``
is exempt from the Host check so probes by IP keep working.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
EXEMPT_PATHS = frozenset({"/health"})


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").replace(" ", ",").split(",") if v.strip()]


def is_loopback_bind(host: str) -> bool:
    h = host.strip("[]").lower()
    return h == "localhost" or h == "::1" or h.startswith("127.")


def default_allowed_hosts(bind_host: str) -> list[str]:
    return list(LOOPBACK_HOSTS) if is_loopback_bind(bind_host) else ["*"]


def _host_name(host_header: str) -> str:
    """``Host`` without its port (``[::1]:80`` → ``[::1]``)."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h.split("]", 1)[0] + "]"
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class BrowserGuard:
    """Pure ASGI middleware (streaming bodies and SSE pass through untouched)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed_hosts = {h.lower().rstrip(".") for h in allowed_hosts}
        self.any_host = "*" in self.allowed_hosts
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if scope.get("path") not in EXEMPT_PATHS and not self.any_host and _host_name(host) not in self.allowed_hosts:
            await _refuse(send, 421 if host else 400, f"host {host!r} is not served here (WHISPEROP_ALLOWED_HOSTS)")
            return
        if scope.get("method", "GET").upper() in UNSAFE_METHODS:
            why = self._cross_site(headers, host)
            if why:
                await _refuse(send, 403, why)
                return
        await self.app(scope, receive, send)

    def _cross_site(self, headers: dict[str, str], host: str) -> str | None:
        origin = headers.get("origin")
        if origin is not None:
            o = origin.rstrip("/").lower()
            if o in self.cors_origins or o in (f"http://{host.lower()}", f"https://{host.lower()}"):
                return None
            return f"cross-origin request from {origin!r} refused (WHISPEROP_CORS_ORIGINS)"
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return "cross-site request refused"
        return None


async def _refuse(send: Callable[[Any], Awaitable[None]], status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
