"""Prometheus metrics of the facade and the runtime behind it.

Counts that live in the JobQueue (jobs by status, queue depth) and the
model state are read at scrape time by a collector, so they are right after
a restart and need no bookkeeping on every transition. Things that only
pass by (uploaded bytes, transcription speed) are counted as they happen.
Each app gets its own registry: several apps in one test process do not
collide on the global default registry.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from whisperop.core.models import ModelState
from whisperop.core.ports import JobQueue, JobTiming, ModelRuntime, RuntimeEvent, Unsubscribe

SPEED_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)


class _StoreCollector(Collector):
    def __init__(self, jobstore: JobQueue, runtime: ModelRuntime) -> None:
        self.jobstore = jobstore
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("whisperop_jobs", "Jobs in the JobQueue by status", labels=["status"])
        for status, n in self.jobstore.count_by_status().items():
            jobs.add_metric([status.value], n)
        yield jobs
        yield GaugeMetricFamily("whisperop_queue_depth", "Jobs waiting to run (not counting the running one)",
                                value=self.jobstore.queue_depth())
        state = GaugeMetricFamily("whisperop_model_state", "1 for the model's current state", labels=["state"])
        current = self.runtime.state
        for s in ModelState:
            state.add_metric([s.value], 1.0 if s == current else 0.0)
        yield state


class Metrics:
    """The registry and the instruments the facade updates."""

    def __init__(self, jobstore: JobQueue, runtime: ModelRuntime) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runtime = runtime
        self.upload_bytes = Counter("whisperop_upload_bytes", "Audio bytes received by POST /jobs", registry=self.registry)
        self.uploads = Counter("whisperop_uploads", "POST /jobs uploads by outcome", ["outcome"], registry=self.registry)
        self.speed = Histogram(
            "whisperop_transcription_speed",
            "Audio seconds transcribed per wall-clock second, per finished job",
            buckets=SPEED_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(jobstore, runtime))
        self._unsub: Unsubscribe | None = None

    def start(self) -> None:
        self._unsub = self.runtime.subscribe(self._on_runtime)

    def stop(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None

    def _on_runtime(self, event: RuntimeEvent) -> None:
        if isinstance(event, JobTiming) and event.wall_secs > 0:
            self.speed.observe(event.audio_secs / event.wall_secs)

    def render(self) -> bytes:
        return generate_latest(self.registry)

