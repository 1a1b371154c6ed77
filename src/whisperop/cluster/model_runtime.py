"""The ModelRuntime port on a WhisperModel (cluster mode of the facade).

``/model/status`` mirrors ``status`` of the WhisperModel named by
configuration (default ``default``) as the operator derives it from the
inference pods; a missing WhisperModel reads as ``unloaded``.

``load``/``unload`` never touch the spec users keep in Git: they record
demand as the operator defines it, the annotation ``whisperop.io/demand``
(``{"action": "load"|"unload", "at": <RFC 3339>}``) written with a merge
patch; the latest one wins. Jobs need no nudge: the operator scales on the
queued TranscriptionJobs themselves.

The model's timing is the WhisperModel's, never this process's environment:
``gpu_poll_interval_secs`` (the ``Retry-After`` of a 503 in ``waiting_for_gpu``)
is ``spec.gpuPollIntervalSeconds`` and ``idle_timeout_secs`` is
``spec.idleTimeoutSeconds`` (the operator unloads; ``IDLE_TIMEOUT_SECS`` and
``GPU_POLL_INTERVAL_SECS`` of the facade are not used in cluster mode — before
issue 15 the Retry-After had to be kept equal to the spec by hand).

Model events for SSE (``model_loading``, ``model_ready``,
``model_unloaded``, ``model_waiting_for_gpu``) are the transitions of
``status.state`` seen by this process's single WhisperModel watch (a relist
after ``410 Gone`` diffs against the cache, so a transition made while the
watch was away is still delivered). Lifecycle *webhooks* are the
operator's job; the facade does not send them (create_app with
``send_webhooks=False``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from whisperop.cluster import kube
from whisperop.core import crds
from whisperop.core.gpu import GpuInfo
from whisperop.core.models import (
    ModelLoadingEvent,
    ModelReadyEvent,
    ModelState,
    ModelStatus,
    ModelStreamsEvent,
    ModelUnloadedEvent,
    ModelWaitingForGpuEvent,
)
from whisperop.core.ports import JobTiming, RuntimeEvent, RuntimeListener, Unsubscribe
from whisperop.core.subscribers import Subscribers
from whisperop.cluster.watch import ResourceWatch

log = logging.getLogger("whisperop.cluster.model_runtime")


WM = crds.WhisperModel


def _state(wm: WM | None) -> ModelState:
    return ModelState.unloaded if wm is None or wm.deleting else ModelState(wm.status.state)


class ClusterModelRuntime:
    """ModelRuntime on one WhisperModel; nothing runs in this process."""

    def __init__(self, api: Any, namespace: str, model: str = crds.DEFAULT_MODEL, watch_timeout_seconds: int = 240) -> None:
        self.api = api
        self.namespace = namespace
        self.model = model
        self.res = kube.models(api, namespace)
        self.informer = ResourceWatch(self.res, field_selector=f"metadata.name={model}",
                                      timeout_seconds=watch_timeout_seconds, name="whispermodels",
                                      transform=WM.model_validate)
        self._listeners: Subscribers[RuntimeEvent] = Subscribers("model listener")
        self._lock = threading.Lock()
        self.informer.add_callback(self._on_event)

    @property
    def obj(self) -> WM | None:
        return self.informer.cached(self.model)

    @property
    def state(self) -> ModelState:
        return _state(self.obj)

    @property
    def _spec(self) -> crds.WhisperModelSpec:
        """The WhisperModel's spec; while it is unknown, one with the schema's defaults."""
        wm = self.obj
        return wm.spec if wm is not None else crds.WhisperModelSpec.model_construct()

    @property
    def gpu_poll_interval_secs(self) -> int:
        """``spec.gpuPollIntervalSeconds`` (the CRD's default while the WhisperModel is unknown)."""
        return self._spec.gpuPollIntervalSeconds

    @property
    def idle_timeout_secs(self) -> int:
        """``spec.idleTimeoutSeconds`` (the CRD's default; 0 = never)."""
        return self._spec.idleTimeoutSeconds

    def status(self) -> ModelStatus:
        wm = self.obj
        state = _state(wm)
        if wm is None:
            return ModelStatus(state=state)
        st = wm.status
        if state == ModelState.ready:
            gpu = self.gpu()
            told = bool(st.streams) and st.streamsWanted is not None
            return ModelStatus(state=state, loaded_at=st.loadedAt,
                               vram_used_mb=gpu.used_mb if gpu else None, vram_total_mb=gpu.total_mb if gpu else None,
                               streams=st.streams if told else None, streams_wanted=st.streamsWanted if told else None)
        if state == ModelState.waiting_for_gpu:
            return ModelStatus(state=state, vram_needed_mb=st.vramNeededMB or 0, vram_free_mb=st.vramFreeMB or 0,
                               retry_in_secs=st.retryInSecs or self.gpu_poll_interval_secs)
        return ModelStatus(state=state)

    def gpu(self) -> GpuInfo | None:
        """What the ready inference pods report (``status.gpu``, copied by the operator from the
        workers' load-state annotations); None while no pod is ready or the pods have no GPU."""
        wm = self.obj
        if wm is None or _state(wm) != ModelState.ready or wm.status.gpu is None:
            return None
        return GpuInfo.from_report(wm.status.gpu.dump())

    def _demand(self, action: str) -> None:
        try:
            self.res.patch(self.model, crds.demand_annotation(action))
        except kube.NotFound:
            log.warning("no WhisperModel to record demand on", extra={"model": self.model, "action": action})

    def request_load(self) -> bool:
        if self.state == ModelState.ready:
            return False
        self._demand("load")
        return True

    def request_unload(self) -> None:
        if self.obj is not None:
            self._demand("unload")

    def observe_jobs(self, informer: ResourceWatch) -> None:
        """Report a :class:`JobTiming` (the facade's speed histogram) for every job of this model
        that this process sees turn ``Done`` (from the TranscriptionJob watch it shares)."""
        informer.add_callback(self._on_job_event)

    def _on_job_event(self, typ: str, tj: crds.TranscriptionJob, prev: crds.TranscriptionJob | None) -> None:
        if typ == "DELETED" or prev is None or tj.phase != crds.Phase.Done or prev.phase == crds.Phase.Done:
            return
        if tj.spec.model != self.model:
            return
        start, end, audio = tj.status.startTime, tj.status.completionTime, tj.status.durationSecs
        if not (start and end and audio):
            return
        timing = JobTiming(job_id=tj.name, audio_secs=float(audio),
                           wall_secs=max((end - start).total_seconds(), 1e-3))
        self._listeners.publish(timing)

    def notify_job_queued(self) -> None:
        pass  # the operator watches the TranscriptionJobs itself

    def subscribe(self, listener: RuntimeListener) -> Unsubscribe:
        return self._listeners.add(listener)

    def start(self) -> None:
        self.informer.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.informer.stop(timeout)

    # ── watch → model events ─────────────────────────────────────────────

    def _streams_event(self, state: ModelState, wm: WM, prev: WM | None) -> None:
        """``model_streams`` when a ready model's ``status.streams`` grew (issue 14: workers added
        decode streams as GPU memory freed up)."""
        if state != ModelState.ready or prev is None:
            return
        streams, wanted, before = wm.status.streams, wm.status.streamsWanted, prev.status.streams
        if streams is not None and wanted is not None and before is not None and streams > before:
            self._listeners.publish(ModelStreamsEvent(streams=streams, streams_wanted=wanted))

    def _event_for(self, wm: WM | None) -> RuntimeEvent | None:
        state = _state(wm)
        if state == ModelState.loading:
            return ModelLoadingEvent()
        if state == ModelState.ready:
            return ModelReadyEvent(loaded_at=(wm.status.loadedAt if wm else None) or kube.now())
        if state == ModelState.unloaded:
            return ModelUnloadedEvent()
        s = self.status()
        return ModelWaitingForGpuEvent(vram_needed_mb=s.vram_needed_mb or 0, vram_free_mb=s.vram_free_mb or 0,
                                       retry_in_secs=s.retry_in_secs or 0)

    def _on_event(self, typ: str, obj: WM, prev: WM | None) -> None:
        new = _state(None if typ == "DELETED" else obj)
        old = _state(prev)
        if new == old:
            self._streams_event(new, obj, prev)
            return
        event = self._event_for(None if typ == "DELETED" else obj)
        if event is None:
            return
        self._listeners.publish(event)
