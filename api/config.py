"""``whisperop serve``'s settings (both modes): one pydantic-settings object, read once at
start by the CLI and passed down as values (every knob is in docs/configuration.md).

The groups it shares with other deployables keep their own classes (``server``
is the REST facade's, ``engine`` the engine's, ``webhooks`` the sender's, ...);
this object only puts together what this deployable reads, so nothing below
the CLI reads the environment. Only the standard library and pydantic are
imported here: the cluster-only groups load no Kubernetes or S3 client.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from whisperop.cluster.s3 import S3Settings
from whisperop.core.settings import (ClusterFacadeSettings, DeployableSettings, EngineSettings, FaultHooks, KubeSettings,
                                     ServerSettings, WebhookRegistrySettings, WebhookSettings)


class ServeSettings(DeployableSettings):
    """Everything ``whisperop serve`` reads from its environment; its flags override."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True, env_ignore_empty=True)

    mode: str = Field("local", alias="WHISPEROP_MODE", description="local (SQLite + files + in-process worker) or cluster")
    auth_tokens_file: str | None = Field(None, alias="WHISPEROP_AUTH_TOKENS_FILE",
                                         description="bearer tokens, one per line: every endpoint but /health wants one")
    namespace: str | None = Field(None, alias="WHISPEROP_NAMESPACE",
                                  description="cluster mode: the namespace of the jobs; else POD_NAMESPACE, else the "
                                              "service account's, else default")
    server: ServerSettings = Field(default_factory=ServerSettings, exclude=True)
    engine: EngineSettings = Field(default_factory=EngineSettings, exclude=True)
    faults: FaultHooks = Field(default_factory=FaultHooks, exclude=True)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings, exclude=True)
    registry: WebhookRegistrySettings = Field(default_factory=WebhookRegistrySettings, exclude=True)
    cluster: ClusterFacadeSettings = Field(default_factory=ClusterFacadeSettings, exclude=True)
    s3: S3Settings = Field(default_factory=S3Settings, exclude=True)
    kube: KubeSettings = Field(default_factory=KubeSettings, exclude=True)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        mode = v.strip().lower()
        if mode not in ("local", "cluster"):
            raise ValueError("WHISPEROP_MODE is local or cluster")
        return mode

    def with_server(self, **overrides: Any) -> ServeSettings:
        """A copy whose ``server`` group has ``overrides`` (the command line's flags) on top."""
        return self.model_copy(update={"server": self.server.model_copy(update=overrides)})
