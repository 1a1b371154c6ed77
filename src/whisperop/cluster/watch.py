"""One list+watch of one custom-resource kind, shared by everything in a facade process.

The cluster JobQueue and the cluster ModelRuntime each own exactly one
:class:`ResourceWatch`; SSE subscribers, webhooks-free fan-out and
``/health`` read its cache or hang callbacks off it, so the number of
API-server watches is constant in the number of subscribers.

Protocol (the usual informer loop, kept small):

- ``start`` lists synchronously (the facade answers from a filled cache
  from its first request) and remembers the list's ``resourceVersion``;
- a thread watches from the last seen ``resourceVersion`` (updated by
  every event and by bookmarks), reconnecting when the server closes the
  stream (``timeout_seconds``) or the connection breaks;
- on ``410 Gone`` (the version fell out of the API server's window) it
  relists and *diffs the new list against its cache*, so a change made
  while the watch was away (a job that finished meanwhile) is still
  delivered to the callbacks as one event. That is what keeps a subscriber
  from missing a terminal event across a reconnect.

Callbacks get ``(type, obj, previous)`` with ``type`` in ADDED / MODIFIED /
DELETED, from the watch thread, in the order the API server committed the
changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from whisperop.cluster.kube import Resources
from whisperop.core import crds
from whisperop.core.subscribers import Subscribers

log = logging.getLogger("whisperop.cluster.watch")

Obj = dict[str, Any]
WatchCallback = Callable[[str, Obj, "Obj | None"], None]


class ResourceWatch:
    def __init__(self, res: Resources, field_selector: str | None = None, timeout_seconds: int = 240,
                 name: str | None = None) -> None:
        self.res = res
        self.field_selector = field_selector
        self.timeout_seconds = timeout_seconds
        self.name = name or res.plural
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified whenever the cache changes
        self._cache: dict[str, Obj] = {}
        self._subscribers: Subscribers[tuple[str, Obj, Obj | None]] = Subscribers("watch callback")
        self.rv = ""
        self.stats = {"connects": 0, "relists": 0, "events": 0, "gone": 0, "errors": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp: Any = None
        self._force_gone = False

    # ── public ───────────────────────────────────────────────────────────

    def add_callback(self, cb: WatchCallback) -> Callable[[], None]:
        """Register ``cb(type, obj, previous)``; returns the function that unregisters it."""
        return self._subscribers.add(lambda change: cb(*change))

    def items(self) -> list[Obj]:
        with self._lock:
            return list(self._cache.values())

    def cached(self, name: str) -> Obj | None:
        with self._lock:
            return self._cache.get(name)

    def wait_seen(self, name: str, timeout: float) -> bool:
        """Block until the cache holds ``name`` (or ``timeout`` passes); True when it does.

        Why: the facade answers listings and ``queue_depth`` from this cache, so
        a client that submits a job and reads ``/health`` at once must find it
        counted (read-your-writes, as the local SQLite store gives). The job
        store calls this after its own ``create``; the watch normally delivers
        the ADDED event within milliseconds, the timeout only bounds a lagging
        watch (the job is accepted either way)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while name not in self._cache:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._relist()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._break_connection()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def reconnect(self, gone: bool = False) -> None:
        """Drop the current watch connection (tests, operations). With ``gone`` the next
        connection behaves as if the server had answered 410: it relists and diffs."""
        self._force_gone = gone
        self._break_connection()

    # ── internals ────────────────────────────────────────────────────────

    def _break_connection(self) -> None:
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown() if hasattr(resp, "shutdown") else resp.close()
            except Exception:
                try:
                    resp.close()
                except Exception:
                    pass

    def _emit(self, typ: str, obj: Obj, prev: Obj | None) -> None:
        self._subscribers.publish((typ, obj, prev), log_extra={"kind": self.name})

    def _apply(self, typ: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            prev = self._cache.get(name)
            if typ == "DELETED":
                self._cache.pop(name, None)
            else:
                self._cache[name] = obj
            self.rv = obj["metadata"].get("resourceVersion") or self.rv
            self.stats["events"] += 1
            self._changed.notify_all()
        self._emit(typ, obj, prev)

    def _relist(self) -> None:
        items, rv = self.res.list_all(field_selector=self.field_selector)
        new = {o["metadata"]["name"]: o for o in items}
        with self._lock:
            old = self._cache
            self._cache = new
            self.rv = rv
            self.stats["relists"] += 1
            self._changed.notify_all()
        for name, obj in new.items():
            prev = old.get(name)
            if prev is None:
                self._emit("ADDED", obj, None)
            elif prev["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", obj, prev)
        for name, obj in old.items():
            if name not in new:
                self._emit("DELETED", obj, obj)

    def _list_fn(self, *args: Any, **kwargs: Any) -> Any:
        resp = self.res.co.list_namespaced_custom_object(*args, **kwargs)
        self._resp = resp
        return resp

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        while not self._stop.is_set():
            try:
                if self._force_gone:
                    self.stats["gone"] += 1
                    self._relist()
                    self._force_gone = False
                w = watch.Watch()
                kw: dict[str, Any] = {"resource_version": self.rv, "timeout_seconds": self.timeout_seconds,
                                      "allow_watch_bookmarks": True}
                if self.field_selector:
                    kw["field_selector"] = self.field_selector
                self.stats["connects"] += 1
                for ev in w.stream(self._list_fn, crds.GROUP, crds.VERSION, self.res.namespace, self.res.plural, **kw):
                    typ, obj = ev["type"], ev["object"]
                    if typ == "BOOKMARK":
                        self.rv = obj.get("metadata", {}).get("resourceVersion") or self.rv
                        continue
                    if typ in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(typ, obj)
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if self._stop.is_set():
                    break
                if exc.status == 410:
                    log.info("watch expired (410 Gone); relisting", extra={"kind": self.name})
                    self._force_gone = True
                    continue
                self.stats["errors"] += 1
                log.warning("watch failed; retrying", extra={"kind": self.name, "status": exc.status})
                time.sleep(1.0)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.stats["errors"] += 1
                log.info("watch connection ended; resuming", extra={"kind": self.name, "reason": type(exc).__name__})
                time.sleep(0.2)
            finally:
                self._resp = None
