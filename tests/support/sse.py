"""A small Server-Sent Events client on top of httpx.

``SSEParser`` implements the parsing rules of the HTML living standard
(``event:``, ``data:`` joined with newlines, ``id:``, ``retry:``, ``:``
comments, CR/LF/CRLF line ends, one optional space after the colon, an
event dispatched on a blank line, a nameless event called ``message``).

``SSEStream`` opens the stream in a background thread and collects events
with their local receive time, so a test can subscribe, act, and then wait
for an event with a deadline.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import httpx


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str | None = None
    retry: int | None = None
    received_at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.data)

    def __repr__(self) -> str:
        data = self.data if len(self.data) < 300 else self.data[:300] + "…"
        return f"<{self.event}: {data}>"


class SSEParser:
    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id: str | None = None
        self.comments: list[tuple[float, str]] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Feed raw bytes; return the events completed by them."""
        self._buf += chunk
        out: list[SSEEvent] = []
        while True:
            idx_n = self._buf.find(b"\n")
            idx_r = self._buf.find(b"\r")
            if idx_n < 0 and idx_r < 0:
                break
            if idx_r >= 0 and (idx_n < 0 or idx_r < idx_n):
                if idx_r == len(self._buf) - 1:
                    break  # a CR at the end: wait to see whether an LF follows
                line, rest = self._buf[:idx_r], self._buf[idx_r + 1 :]
                if rest.startswith(b"\n"):
                    rest = rest[1:]
            else:
                line, rest = self._buf[:idx_n], self._buf[idx_n + 1 :]
            self._buf = rest
            ev = self.feed_line(line.decode("utf-8", "replace"))
            if ev is not None:
                out.append(ev)
        return out

    def feed_line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append((time.monotonic(), line[1:].lstrip(" ")))
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if self._id is not None:
            self.last_event_id = self._id
        if not self._data:  # no data line: nothing is dispatched
            self._event, self._id, self._retry = "", None, None
            return None
        ev = SSEEvent(event=self._event or "message", data="\n".join(self._data), id=self._id, retry=self._retry)
        self._event, self._data, self._id, self._retry = "", [], None, None
        return ev


def parse_sse_text(text: str) -> list[SSEEvent]:
    p = SSEParser()
    return p.feed(text.encode())


class SSEStream:
    """Collect the events of one SSE stream in a background thread.

    >>> with SSEStream(url) as s:
    ...     s.wait_open()
    ...     ev = s.wait_for(lambda e: e.event == "done", timeout=30)
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, connect_timeout: float = 15.0) -> None:
        self.url = url
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.connect_timeout = connect_timeout
        self.status_code: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.body: bytes = b""  # for a non-200 answer
        self.events: list[SSEEvent] = []
        self.parser = SSEParser()
        self.error: BaseException | None = None
        self.closed = False  # the server ended the stream (or it broke)
        self.closed_at: float | None = None
        self.started_at: float | None = None
        self._cond = threading.Condition()
        self._opened = threading.Event()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"sse {url}", daemon=True)

    # ── context management ────────────────────────────────────────────────

    def start(self) -> "SSEStream":
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def __enter__(self) -> "SSEStream":
        if not self._thread.is_alive() and not self._opened.is_set():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── reader thread ─────────────────────────────────────────────────────

    def _run(self) -> None:
        timeout = httpx.Timeout(self.connect_timeout, read=None)
        try:
            with httpx.Client(timeout=timeout) as client:
                with client.stream("GET", self.url, headers=self.headers) as resp:
                    self.status_code = resp.status_code
                    self.response_headers = resp.headers
                    stream = resp.extensions.get("network_stream")
                    if stream is not None:
                        try:
                            self._sock = stream.get_extra_info("socket")
                        except Exception:  # pragma: no cover - transport without a socket
                            self._sock = None
                    if resp.status_code != 200:
                        self.body = resp.read()
                        self._opened.set()
                        return
                    self._opened.set()
                    for chunk in resp.iter_raw():
                        if self._stop.is_set():
                            break
                        evs = self.parser.feed(chunk)
                        if evs:
                            with self._cond:
                                self.events.extend(evs)
                                self._cond.notify_all()
                        elif self.parser.comments:
                            with self._cond:
                                self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - recorded for the test to see
            if not self._stop.is_set():
                self.error = exc
        finally:
            with self._cond:
                self.closed = True
                self.closed_at = time.monotonic()
                self._cond.notify_all()
            self._opened.set()

    # ── waiting ───────────────────────────────────────────────────────────

    def wait_open(self, timeout: float = 15.0) -> "SSEStream":
        if not self._opened.wait(timeout):
            raise AssertionError(f"SSE {self.url}: no response headers within {timeout}s")
        if self.status_code is None:
            raise AssertionError(f"SSE {self.url}: connection failed: {self.error!r}")
        return self

    def snapshot(self) -> list[SSEEvent]:
        with self._cond:
            return list(self.events)

    def wait_for(self, pred: Callable[[SSEEvent], bool], timeout: float, after: int = 0) -> SSEEvent:
        """The first event (from index ``after``) matching ``pred``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[after:]:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    if self.closed:
                        for ev in self.events[after:]:
                            if pred(ev):
                                return ev
                    raise AssertionError(
                        f"SSE {self.url}: no matching event within {timeout}s "
                        f"(closed={self.closed}, error={self.error!r}); events so far: {self.events}"
                    )
                self._cond.wait(min(left, 0.5))

    def wait_event(self, name: str, timeout: float, after: int = 0) -> SSEEvent:
        return self.wait_for(lambda e: e.event == name, timeout, after)

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def wait_comment(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.parser.comments:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"SSE {self.url}: no comment line within {timeout}s (closed={self.closed})")
                self._cond.wait(min(left, 0.5))
            return self.parser.comments[0][1]

    def close(self) -> None:
        """Stop reading and drop the connection (wakes the reader at once)."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)


def read_stream(url: str, timeout: float) -> SSEStream:
    """Open ``url``, read until the server closes it or ``timeout`` passes, and return the stream."""
    s = SSEStream(url).start()
    s.wait_open()
    s.wait_closed(timeout)
    s.close()
    return s


def names(events: Iterable[SSEEvent]) -> list[str]:
    return [e.event for e in events]


def iter_json(events: Iterable[SSEEvent]) -> Iterator[Any]:
    for e in events:
        yield e.json()
