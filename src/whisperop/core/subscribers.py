"""One list of callbacks with one producer: the job stores' watchers and the
model runtimes' listeners share it.

Why a class: each store and runtime had the same append / remove-if-present /
copy-then-call code; the copy matters (a callback may unsubscribe itself while
it runs, and registration happens on other threads), and so does catching a
broken callback (it must not fail the writer that published the change).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")


class Subscribers(Generic[E]):
    def __init__(self, what: str) -> None:
        self._what = what  # for the log line of a failing callback, e.g. "job watcher"
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[E], None]] = []

    def add(self, callback: Callable[[E], None]) -> Callable[[], None]:
        """Register ``callback``; returns the function that unregisters it (idempotent)."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def __len__(self) -> int:
        with self._lock:
            return len(self._callbacks)

    def publish(self, event: E, log_extra: Mapping[str, Any] | None = None) -> None:
        """Call every callback registered now with ``event``; one that raises is logged."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("%s failed", self._what, extra=dict(log_extra or {}))
