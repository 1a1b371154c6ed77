"""Optional bearer-token authentication of the facade (every endpoint except ``/health`` and the web page).

Tokens come from a file or a directory, typically a mounted Secret
(``WHISPEROP_AUTH_TOKENS_FILE``): a file holds one token per line (blank
lines and ``#`` comments ignored); a directory contributes every regular
file's content (a Secret mounted as a volume: one key per token). The
source is re-read when it changes (checked at most every few seconds), so
rotating the Secret needs no restart. A pure ASGI middleware: streaming
responses (SSE) and streaming uploads pass through untouched.

Ownership: the middleware records the token's principal (a digest,
:func:`principal_of`) on the request; a job remembers who submitted it (through
``POST /jobs`` or ``/v1/audio/*``), and another token gets 404 for it (read,
stream, transcript files, cancel, purge); ``GET /jobs`` lists the caller's own
jobs only. Jobs submitted without auth, or created outside the facade
(kubectl), are readable by id by every token but listed to none.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from whisperop.api.routers.web import PUBLIC_PATHS as WEB_PATHS
from whisperop.api.routers.web import PUBLIC_PREFIXES

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

#: the page, its assets and the docs carry no data and must load before the page can ask for a token
PUBLIC_PATHS = frozenset({"/health"}) | WEB_PATHS
RELOAD_SECS = 5.0


def principal_of(token: str) -> str:
    """Who a token is, as stored with the jobs it submits: a digest, never the token itself
    (a database or a TranscriptionJob annotation must not hand out working credentials)."""
    return "tok-" + hashlib.sha256(token.encode()).hexdigest()[:16]


def principal(scope_or_request: Any) -> str | None:
    """The authenticated principal of a request (None when auth is off)."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    return (scope.get("state") or {}).get("principal")


def read_tokens(path: Path) -> frozenset[str]:
    files = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")] if path.is_dir() else [path]
    tokens: set[str] = set()
    for f in files:
        for line in f.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                tokens.add(line)
    return frozenset(tokens)


class TokenSource:
    """Tokens from ``path``, reloaded when its modification time changes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._checked = 0.0
        self._tokens = read_tokens(self.path)
        if not self._tokens:
            raise ValueError(f"no bearer tokens in {self.path}")

    def _mtime(self) -> float:
        paths = [self.path, *self.path.iterdir()] if self.path.is_dir() else [self.path]
        return max(os.stat(p).st_mtime for p in paths)

    def tokens(self) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= RELOAD_SECS:
                self._checked = now
                try:
                    stamp = self._mtime()
                    if stamp != self._stamp:
                        fresh = read_tokens(self.path)
                        if fresh:
                            self._tokens = fresh
                        self._stamp = stamp
                except OSError:
                    pass  # keep the last good set while a Secret update swaps the files
            return self._tokens

    def valid(self, token: str) -> bool:
        """Constant time in the token's content: every known token is compared (no early
        exit), as SHA-256 digests (so not even the lengths are compared)."""
        offered = hashlib.sha256(token.encode()).digest()
        found = False
        for t in self.tokens():
            found |= hmac.compare_digest(offered, hashlib.sha256(t.encode()).digest())
        return found


class BearerAuth:
    def __init__(self, app: ASGIApp, source: TokenSource) -> None:
        self.app = app
        self.source = source

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        path = scope.get("path") or ""
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        header = ""
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                header = v.decode("latin-1")
                break
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip() and self.source.valid(token.strip()):
            scope.setdefault("state", {})["principal"] = principal_of(token.strip())
            await self.app(scope, receive, send)
            return
        if str(scope.get("path", "")).startswith("/v1/"):  # OpenAI's error shape for the OpenAI-compatible API
            body = json.dumps({"error": {"message": "unauthorized: a valid API key (bearer token) is required",
                                         "type": "invalid_request_error", "param": None,
                                         "code": "invalid_api_key"}}).encode()
        else:
            body = json.dumps({"error": "unauthorized"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="whisperop"')]})
        await send({"type": "http.response.body", "body": body})
