"""Coalesced model reconciles on events ("kicks"), off the watch threads.

The operator reacts to events, not ticks (issue 15): a pod of a model turning
Ready or reporting its load state, a job of the model queued or finished, and
the moment an idle model's timeout runs out each *kick* that model. A kick
only records "reconcile (ns, name) at time t" and returns at once, so the
informer and kopf threads that call it never wait on the API server; one
thread runs the due reconciles. Kicks for a model that is already due merge
into one (a burst of 50 job events is one reconcile, plus at most one more
for events that arrived while it ran). The periodic kopf timer stays as the
safety net for anything missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("whisperop.operator.kick")

Key = tuple[str, str]


class Kicker:
    def __init__(self, run: Callable[[str, str], None]) -> None:
        self._run = run
        self._due: dict[Key, float] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def kick(self, ns: str, name: str, delay: float = 0.0) -> None:
        """Reconcile model ``ns/name`` in ``delay`` seconds (or sooner, if already due sooner)."""
        when = time.monotonic() + max(delay, 0.0)
        with self._cond:
            have = self._due.get((ns, name))
            if have is None or when < have:
                self._due[(ns, name)] = when
                self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="model-kicks", daemon=True)
                self._thread.start()

    def pending(self) -> dict[Key, float]:
        with self._cond:
            return dict(self._due)

    def _take_due(self) -> list[Key]:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [k for k, t in self._due.items() if t <= now]
                if due:
                    for k in due:
                        del self._due[k]
                    return due
                wait = min(self._due.values()) - now if self._due else None
                self._cond.wait(wait)

    def _loop(self) -> None:
        while True:
            for ns, name in self._take_due():
                try:
                    self._run(ns, name)
                except Exception:
                    log.warning("kicked reconcile failed", extra={"namespace": ns, "model": name}, exc_info=True)
