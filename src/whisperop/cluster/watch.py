"""The one list+watch cache of a custom-resource kind in one namespace, for every
component: the facade (its JobQueue and ModelRuntime each own one), the
operator (one per namespace of TranscriptionJobs, :mod:`whisperop.operator.informers`)
and the worker (its model's jobs, :mod:`whisperop.cluster.work_queue`). A
cache of the cluster, rebuilt from a fresh list after a restart, never the
source of truth; the number of API-server watches is constant in the number
of subscribers.

Protocol (the usual informer loop, one relist semantics for all):

- ``start`` lists (synchronously by default: the facade answers from a filled
  cache from its first request; ``wait=False`` lists on the watch thread,
  retrying while the API server is away) and remembers the list's
  ``resourceVersion``; ``synced`` is set after the first full list, and
  consumers must not act on an unsynced cache (an empty view would look like
  an empty queue);
- a thread watches from the last seen ``resourceVersion`` (updated by every
  event and by bookmarks), reconnecting when the server closes the stream
  (``timeout_seconds``) or the connection breaks;
- on ``410 Gone`` (the version fell out of the API server's window, as an
  exception or an ``ERROR`` event) it relists and *diffs the new list against
  its cache*, so a change made while the watch was away (a job that finished
  meanwhile) is still delivered to the callbacks as one event. That is what
  keeps a subscriber from missing a terminal event across a reconnect.

``transform`` turns each object into what the cache keeps: the typed model of
:mod:`whisperop.core.crds` (parsing at this boundary, ~10 µs a job), or the
operator's smaller :class:`~whisperop.core.crds.JobSummary` (memory and
per-read cost then scale with the summary, not the object;
docs/benchmarks-operator.md). An object that does not parse is logged and
left out of the cache (the API server validated it against the same schema,
so this means a newer or foreign writer).
Callbacks get ``(type, item, previous)`` — cache items, after ``transform`` —
with ``type`` in ADDED / MODIFIED / DELETED, from the watch thread, in the
order the API server committed the changes.

Why not kopf indices in the operator: kopf gates every handler on all
indices being fully populated with a per-object readiness toggle whose check
is linear in the number of objects, which made an operator start over 10 000
jobs take many minutes (docs/benchmarks-operator.md); this cache is linear.
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
WatchCallback = Callable[[str, Any, Any], None]


class ResourceWatch:
    def __init__(self, res: Resources, field_selector: str | None = None, timeout_seconds: int = 240,
                 name: str | None = None, transform: Callable[[Obj], Any] | None = None) -> None:
        self.res = res
        self.field_selector = field_selector
        self.timeout_seconds = timeout_seconds
        self.name = name or res.plural
        self.transform: Callable[[Obj], Any] = transform or (lambda o: o)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified whenever the cache changes
        self._cache: dict[str, Any] = {}
        self._rvs: dict[str, str] = {}  # resourceVersion per name: what a relist diffs against
        self._subscribers: Subscribers[tuple[str, Any, Any]] = Subscribers("watch callback")
        self.rv = ""
        self.synced = threading.Event()
        self.stats = {"connects": 0, "relists": 0, "events": 0, "gone": 0, "errors": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp: Any = None
        self._force_gone = False

    # ── public ───────────────────────────────────────────────────────────

    def add_callback(self, cb: WatchCallback) -> Callable[[], None]:
        """Register ``cb(type, item, previous)``; returns the function that unregisters it."""
        return self._subscribers.add(lambda change: cb(*change))

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._cache.values())

    def cached(self, name: str) -> Any:
        with self._lock:
            return self._cache.get(name)

    def wait_changed(self, timeout: float) -> None:
        """Block until the cache changes (or ``timeout`` passes): the worker's claim loop."""
        with self._changed:
            self._changed.wait(timeout)

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

    def start(self, wait: bool = True) -> "ResourceWatch":
        """List, then watch on a thread. ``wait=False``: the first list happens on that thread
        (``synced`` tells when), so a caller never blocks on an API server that is away."""
        if self._thread is not None:
            return self
        self._stop.clear()
        if wait:
            self._relist()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()
        return self

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

    def _emit(self, typ: str, item: Any, prev: Any) -> None:
        self._subscribers.publish((typ, item, prev), log_extra={"kind": self.name})

    def _parse(self, obj: Obj) -> Any:
        try:
            return self.transform(obj)
        except Exception as exc:
            log.warning("object left out of the cache: it does not parse",
                        extra={"kind": self.name, "object": obj["metadata"].get("name"), "error": str(exc)[:500]})
            return None

    def _apply(self, typ: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        item = None if typ == "DELETED" else self._parse(obj)
        with self._lock:
            prev = self._cache.get(name)
            if item is None:  # deleted, or no longer parses: out of the cache
                typ, item = "DELETED", self._cache.pop(name, None)
                self._rvs.pop(name, None)
            else:
                self._cache[name] = item
                self._rvs[name] = obj["metadata"].get("resourceVersion") or ""
            self.rv = obj["metadata"].get("resourceVersion") or self.rv
            self.stats["events"] += 1
            self._changed.notify_all()
        if item is not None:
            self._emit(typ, item, prev)

    def _relist(self) -> None:
        objs, rv = self.res.list_all(field_selector=self.field_selector)
        parsed = ((o["metadata"], self._parse(o)) for o in objs)
        new, rvs = {}, {}
        for meta, item in parsed:
            if item is not None:
                new[meta["name"]], rvs[meta["name"]] = item, meta.get("resourceVersion") or ""
        with self._lock:
            old, old_rvs = self._cache, self._rvs
            self._cache, self._rvs = new, rvs
            self.rv = rv
            self.stats["relists"] += 1
            self._changed.notify_all()
        self.synced.set()
        for name, item in new.items():
            prev = old.get(name)
            if prev is None:
                self._emit("ADDED", item, None)
            elif old_rvs.get(name) != rvs[name]:
                self._emit("MODIFIED", item, prev)
        for name, item in old.items():
            if name not in new:
                self._emit("DELETED", item, item)

    def _list_fn(self, *args: Any, **kwargs: Any) -> Any:
        resp = self.res.co.list_namespaced_custom_object(*args, **kwargs)
        self._resp = resp
        return resp

    def _watch_once(self) -> None:
        """One watch connection, from ``rv`` until the server or :meth:`stop` ends it."""
        from kubernetes import watch

        if self._force_gone or not self.synced.is_set():
            if self._force_gone:
                self.stats["gone"] += 1
            self._relist()
            self._force_gone = False
        kw: dict[str, Any] = {"resource_version": self.rv, "timeout_seconds": self.timeout_seconds,
                              "allow_watch_bookmarks": True}
        if self.field_selector:
            kw["field_selector"] = self.field_selector
        self.stats["connects"] += 1
        for ev in watch.Watch().stream(self._list_fn, crds.GROUP, crds.VERSION, self.res.namespace, self.res.plural, **kw):
            typ, obj = ev["type"], ev["object"]
            if typ == "BOOKMARK":
                self.rv = obj.get("metadata", {}).get("resourceVersion") or self.rv
            elif typ == "ERROR":  # 410 Gone (and friends) as an event: relist and diff
                self._force_gone = True
                return
            elif typ in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(typ, obj)
            if self._stop.is_set():
                return

    def _run(self) -> None:
        from kubernetes.client.rest import ApiException

        while not self._stop.is_set():
            try:
                self._watch_once()
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
