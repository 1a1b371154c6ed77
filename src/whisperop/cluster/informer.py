"""A small informer: one list+watch of a custom resource kind in one namespace,
kept as an in-memory cache of the cluster (never the source of truth).

Used by the worker (its model's jobs, field selector ``spec.model``) and by the
operator (all jobs of a namespace, for queue depth, lost-worker checks and the
TTL sweep). Resumes the watch from the last resourceVersion; relists on 410
Gone. ``synced`` is set after the first full list; consumers must not act on
an unsynced cache (an empty view would look like an empty queue).

Why not kopf indices in the operator: kopf gates every handler on all
indices being fully populated with a per-object readiness toggle whose check
is linear in the number of objects, which made an operator start over 10 000
jobs take many minutes (docs/benchmarks-operator.md); this informer is linear.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from whisperop.cluster import kube
from whisperop.core import crds

log = logging.getLogger("whisperop.informer")


class Informer:
    def __init__(self, res: kube.Resources, field_selector: str | None = None,
                 on_change: Callable[[str, dict[str, Any]], None] | None = None,
                 transform: Callable[[dict[str, Any]], Any] | None = None) -> None:
        """``transform`` (optional) turns each object into what the cache keeps (e.g. a small
        summary: memory and per-read cost then scale with the summary, not the object)."""
        self.res = res
        self.transform = transform or (lambda o: o)
        self.selector = field_selector
        self.items: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.synced = threading.Event()
        self.on_change = on_change
        self._thread = threading.Thread(target=self._run, name=f"informer-{res.plural}-{res.namespace}", daemon=True)

    def start(self) -> "Informer":
        self._thread.start()
        return self

    def _relist(self) -> str:
        items, rv = self.res.list_all(field_selector=self.selector)
        with self.cond:
            self.items = {o["metadata"]["name"]: self.transform(o) for o in items}
            self.cond.notify_all()
        self.synced.set()
        return rv

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        rv = ""
        while not self.stop.is_set():
            try:
                if not rv:
                    rv = self._relist()
                w = watch.Watch()
                kw: dict[str, Any] = {"resource_version": rv, "timeout_seconds": 60, "allow_watch_bookmarks": True}
                if self.selector:
                    kw["field_selector"] = self.selector
                for ev in w.stream(self.res.co.list_namespaced_custom_object, crds.GROUP, crds.VERSION,
                                   self.res.namespace, self.res.plural, **kw):
                    if self.stop.is_set():
                        w.stop()
                        break
                    typ, obj = ev["type"], ev["object"]
                    if typ == "ERROR":
                        rv = ""  # 410 Gone and friends: relist
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if typ == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    with self.cond:
                        if typ == "DELETED":
                            self.items.pop(name, None)
                        else:
                            self.items[name] = self.transform(obj)
                        self.cond.notify_all()
                    if self.on_change is not None:
                        self.on_change(typ, obj)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("watch failed; relisting", extra={"status": exc.status})
                    time.sleep(1)
                rv = ""
            except Exception as exc:  # connection dropped: resume from rv (a 410 then relists)
                log.info("watch interrupted; resuming", extra={"error": f"{type(exc).__name__}: {exc}"})
                time.sleep(0.5)

    def snapshot(self) -> list[Any]:
        with self.cond:
            return list(self.items.values())

    def get(self, name: str) -> Any:
        with self.cond:
            return self.items.get(name)

    def wait(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait(timeout)
