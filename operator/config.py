"""Operator settings from the environment (read once per process; no state)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


def _f(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class OperatorConfig:
    reconcile_secs: float  # WhisperModel reconcile period (heartbeats, TTL, scaling, state)
    heartbeat_timeout_secs: float  # a Running job whose heartbeat is older is requeued
    max_attempts: int  # lost workers tolerated per job before it fails
    metrics_port: int  # 0 = no /metrics server
    metrics_bind: str  # address of the /metrics server (0.0.0.0: Prometheus scrapes the pod IP)
    worker_port: int  # the inference pod's health/metrics port
    worker_grace_secs: int  # terminationGracePeriodSeconds of inference pods
    worker_heartbeat_secs: float  # passed to workers
    s3_secret: str  # Secret with WHISPEROP_S3_* keys, envFrom'd into inference pods (optional)
    webhook_attempts: int


@lru_cache(maxsize=1)
def config() -> OperatorConfig:
    return OperatorConfig(
        reconcile_secs=_f("WHISPEROP_RECONCILE_SECS", 5.0),
        heartbeat_timeout_secs=_f("WHISPEROP_HEARTBEAT_TIMEOUT_SECS", 60.0),
        max_attempts=int(_f("WHISPEROP_MAX_ATTEMPTS", 3)),
        metrics_port=int(_f("WHISPEROP_METRICS_PORT", 9090)),
        metrics_bind=os.environ.get("WHISPEROP_METRICS_BIND") or "0.0.0.0",
        worker_port=int(_f("WHISPEROP_WORKER_PORT", 8081)),
        worker_grace_secs=int(_f("WHISPEROP_WORKER_GRACE_SECS", 120)),
        worker_heartbeat_secs=_f("WHISPEROP_HEARTBEAT_SECS", 10.0),
        s3_secret=os.environ.get("WHISPEROP_S3_SECRET", "whisperop-s3"),
        webhook_attempts=int(_f("WHISPEROP_WEBHOOK_ATTEMPTS", 3)),
    )


_api = None


def api():
    """One shared kubernetes ApiClient for the handlers (thread-safe)."""
    global _api
    if _api is None:
        from whisperop.cluster.kube import api_client

        _api = api_client()
    return _api
