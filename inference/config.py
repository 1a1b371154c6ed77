"""``whisperop worker``'s settings: one pydantic-settings object, read once at start by the
CLI and passed down as values (every knob is in docs/configuration.md), like
``whisperop serve``'s :class:`whisperop.api.config.ServeSettings` and the
operator's :class:`whisperop.operator.config.OperatorSettings`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from whisperop.cluster.s3 import S3Settings
from whisperop.core import crds, modelsource
from whisperop.core.settings import DeployableSettings, EngineSettings, FaultHooks, KubeSettings
from whisperop.core.urlguard import ALLOW_ENV


class WorkerConfig(DeployableSettings):
    """Everything ``whisperop worker`` reads from its environment, read once at start: its own
    knobs, and the groups it shares with other deployables (the engine's :class:`EngineSettings`,
    :class:`S3Settings`, the load loop's test hooks, the API server's :class:`KubeSettings`);
    ``whisperop worker`` flags override (docs/configuration.md lists every knob)."""

    # no populate_by_name: only the documented names are read (a pod's PORT or MODEL is not ours)
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", env_ignore_empty=True)

    pod: str = Field(alias="POD_NAME", description="downward API")
    namespace: str = Field(alias="POD_NAMESPACE", description="downward API")
    model: str = Field(crds.DEFAULT_MODEL, alias="WHISPEROP_MODEL_NAME", description="the WhisperModel to serve")
    model_uri: str | None = Field(None, alias="WHISPEROP_MODEL_URI", description="overrides spec.modelURI")
    port: int = Field(8081, ge=0, alias="WHISPEROP_WORKER_PORT", description="/healthz, /readyz, /metrics (0 = any)")
    bind: str = Field("0.0.0.0", alias="WHISPEROP_WORKER_BIND",
                      description="address of that server: the kubelet probes the pod IP, so all interfaces")
    heartbeat_secs: float = Field(10.0, gt=0, alias="WHISPEROP_HEARTBEAT_SECS")
    progress_secs: float = Field(0.5, ge=0, alias="WHISPEROP_PROGRESS_SECS", description="at most one progress write per")
    drain_secs: float = Field(100.0, ge=0, alias="WHISPEROP_DRAIN_SECS", description="SIGTERM: time the running job gets")
    resync_secs: float = Field(30.0, gt=0, alias="WHISPEROP_RESYNC_SECS", description="forget the claims tried")
    model_path: str | None = Field(None, alias=modelsource.MODEL_PATH_ENV,
                                   description="a local GGML file (PVC source), wins over any URI")
    outbound_allow: str = Field("", alias=ALLOW_ENV, description="which http(s) audio URLs may be fetched")
    engine: EngineSettings = Field(default_factory=EngineSettings, exclude=True)
    s3: S3Settings = Field(default_factory=S3Settings, exclude=True)
    faults: FaultHooks = Field(default_factory=FaultHooks, exclude=True)
    kube: KubeSettings = Field(default_factory=KubeSettings, exclude=True)

    @classmethod
    def from_env(cls, **overrides: Any) -> "WorkerConfig":
        """The environment, with the non-None ``overrides`` (the CLI's flags) on top."""
        try:
            return cls(**{cls.model_fields[k].alias or k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            if {e["loc"][0] for e in exc.errors()} & {"POD_NAME", "POD_NAMESPACE", "pod", "namespace"}:
                raise SystemExit("POD_NAME and POD_NAMESPACE must be set (downward API)") from None
            raise
