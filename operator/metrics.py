"""Prometheus metrics of the operator, served at ``/metrics`` on WHISPEROP_METRICS_BIND:WHISPEROP_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

QUEUE_DEPTH = Gauge("whisperop_queue_depth", "Queued TranscriptionJobs per model", ["namespace", "model"])
RUNNING = Gauge("whisperop_running_jobs", "Running TranscriptionJobs per model", ["namespace", "model"])
REPLICAS = Gauge("whisperop_model_replicas", "Replicas the operator asks for", ["namespace", "model"])
READY = Gauge("whisperop_model_ready_replicas", "Ready inference replicas", ["namespace", "model"])
STATE = Gauge("whisperop_model_state", "1 for the model's current state", ["namespace", "model", "state"])
TRANSITIONS = Counter("whisperop_job_transitions_total", "Job phase changes made by the operator", ["phase", "reason"])
REQUEUES = Counter("whisperop_job_requeues_total", "Jobs returned to the queue after a lost worker")
WEBHOOKS = Counter("whisperop_webhook_deliveries_total", "Webhook deliveries", ["kind", "result"])
RECONCILE = Histogram("whisperop_model_reconcile_seconds", "Duration of one WhisperModel reconcile")
GC = Counter("whisperop_gc_total", "Jobs garbage-collected", ["reason"])

_started = False


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """``/metrics`` on ``addr:port`` (WHISPEROP_METRICS_BIND, default all interfaces: Prometheus
    scrapes the pod IP; ``127.0.0.1`` keeps it local to the pod or the machine)."""
    global _started
    if port and not _started:
        start_http_server(port, addr=addr)
        _started = True
