"""The operator's settings: one pydantic-settings object, read once per process
(every knob is in docs/configuration.md, with its default and meaning).

Before, the operator read its environment four ways (a hand-rolled cached
``_f``, bare reads in main.py, ``S3Settings.from_env()`` in the handlers,
``WebhookSigner.from_env()`` per delivery); now :func:`config` is the only
reader and everything else receives values from it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from whisperop.cluster.s3 import S3Settings
from whisperop.core.settings import (DEFAULT_WATCH_TIMEOUT_SECS, DeployableSettings, KubeSettings, LogSettings,
                                     WebhookRegistrySettings, WebhookSettings)


class OperatorSettings(DeployableSettings):
    """Everything ``kopf run -m whisperop.operator.main`` reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True, env_ignore_empty=True)

    reconcile_secs: float = Field(5.0, gt=0, alias="WHISPEROP_RECONCILE_SECS",
                                  description="WhisperModel reconcile period (heartbeats, TTL, scaling, state)")
    heartbeat_timeout_secs: float = Field(60.0, gt=0, alias="WHISPEROP_HEARTBEAT_TIMEOUT_SECS",
                                          description="a Running job whose heartbeat is older is requeued")
    max_attempts: int = Field(3, ge=1, alias="WHISPEROP_MAX_ATTEMPTS",
                              description="lost workers tolerated per job before it fails")
    metrics_port: int = Field(9090, ge=0, le=65535, alias="WHISPEROP_METRICS_PORT", description="/metrics port; 0 = none")
    metrics_bind: str = Field("0.0.0.0", alias="WHISPEROP_METRICS_BIND",
                              description="address of the /metrics server (Prometheus scrapes the pod IP)")
    worker_port: int = Field(8081, ge=1, le=65535, alias="WHISPEROP_WORKER_PORT",
                             description="the inference pods' health/metrics port (set in the Deployment it renders)")
    worker_grace_secs: int = Field(120, ge=0, alias="WHISPEROP_WORKER_GRACE_SECS",
                                   description="terminationGracePeriodSeconds of inference pods")
    worker_heartbeat_secs: float = Field(10.0, gt=0, alias="WHISPEROP_HEARTBEAT_SECS",
                                         description="heartbeat period passed to the workers")
    s3_secret: str = Field("whisperop-s3", alias="WHISPEROP_S3_SECRET",
                           description="Secret with WHISPEROP_S3_* keys, envFrom'd into inference pods (optional)")
    threads: int = Field(16, ge=1, alias="WHISPEROP_OPERATOR_THREADS", description="kopf's handler threads")
    watch_timeout_secs: int = Field(DEFAULT_WATCH_TIMEOUT_SECS, ge=1, alias="WHISPEROP_WATCH_TIMEOUT_SECS",
                                    description="server-side timeout of each watch request (the facade's default too)")
    kopf_scanning: bool = Field(False, alias="WHISPEROP_KOPF_SCANNING",
                                description="let kopf scan CRDs/namespaces cluster-wide (needs a ClusterRole)")
    peering: str = Field("", alias="WHISPEROP_PEERING",
                         description="KopfPeering name for single-active-replica deployments; empty = standalone")
    outbound_allow: str = Field("", alias="WHISPEROP_OUTBOUND_ALLOW",
                                description="internal hosts/addresses/CIDRs webhook URLs may reach")
    # the groups shared with other deployables (their knobs are listed under their own names)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings, exclude=True)
    registry: WebhookRegistrySettings = Field(default_factory=WebhookRegistrySettings, exclude=True)
    s3: S3Settings = Field(default_factory=S3Settings, exclude=True)
    kube: KubeSettings = Field(default_factory=KubeSettings, exclude=True)
    log: LogSettings = Field(default_factory=LogSettings, exclude=True)


@lru_cache(maxsize=1)
def config() -> OperatorSettings:
    return OperatorSettings()


_api = None


def api() -> Any:
    """One shared kubernetes ApiClient for the handlers (thread-safe)."""
    global _api
    if _api is None:
        from whisperop.cluster.kube import api_client

        _api = api_client(config().kube)
    return _api
