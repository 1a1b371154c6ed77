"""Settings from environment variables, with the original server's names.

The settings layer: one class per group of knobs, and nothing else in the code
reads the environment. Each deployable reads its environment once, into one
object holding the groups it uses (``whisperop.api.config.ServeSettings``,
``whisperop.inference.config.WorkerConfig``,
``whisperop.operator.config.OperatorSettings``) and passes values down; every
variable is in the one table of docs/configuration.md. The names that the
original contract defines (``PORT``, ``WHISPER_MODEL_PATH``, ``WHISPER_MODEL``,
``IDLE_TIMEOUT_SECS``, ``GPU_POLL_INTERVAL_SECS``, ``CUDA_DEVICE``,
``DATA_DIR``) keep their meaning so existing deployments carry over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from whisperop.core.signing import WebhookSigner
    from whisperop.core.webhooks import WebhookSender


def default_cache_dir() -> Path:
    """``~/.cache/whisperop`` (or ``$XDG_CACHE_HOME/whisperop``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "whisperop"


def _is_group(field: FieldInfo) -> bool:
    factory = field.default_factory
    return isinstance(factory, type) and issubclass(factory, BaseSettings)


class _OwnVariables(EnvSettingsSource):
    """The environment, minus the group fields: a group reads its own variables (``engine``
    must not be parsed from ``ENGINE=ctranslate2``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[object, str, bool]:
        if _is_group(field):
            return None, field_name, False
        return super().get_field_value(field, field_name)


class DeployableSettings(BaseSettings):
    """The one settings object of a deployable: its own knobs, plus fields holding the groups it
    shares with other deployables (``Field(default_factory=EngineSettings)``), each read from its
    own variables when the object is made."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _OwnVariables(settings_cls)


#: Decoders per worker on a GPU when PARALLELISM is unset: on an H100 with
#: whisper base, 8 streams decode 3.8x the audio of one (440x real time,
#: flash attention on) for ~380 MB of GPU memory each; 16 add <1 % (greedy).
GPU_DEFAULT_PARALLELISM = 8


#: The ``ENGINE`` default: ``auto`` (:meth:`EngineSettings.resolved`).
DEFAULT_ENGINE: Literal["auto", "whispercpp", "ctranslate2"] = "auto"

#: ``ENGINE=auto`` per device class: the faster backend measured there.
#: CPU: CTranslate2 int8 decoded the 10-minute file at 1.31-1.74x
#: faster-whisper int8 in 6 of 7 runs on this 2-core machine (median 1.37),
#: whisper.cpp q8_0 at 0.54x (docs/benchmarks.md). GPU: whisper.cpp (8
#: streams, flash attention). On an H200 in one sitting CTranslate2 float16
#: (batch 16) ran the 34-minute speech faster (669/713x against 600/614x, WER
#: 6.54 % against 7.12 %), but a process's first CTranslate2 load was ready
#: 4.3-4.9 s after it began (CUDA libraries; whisper.cpp: 0.49 s) and 32
#: concurrent short jobs ran at 0.80-1.03x its single-file figure (whisper.cpp:
#: 1.09-1.14x): the GPU targets (cold start < 1 s, many jobs >= 0.9x) hold for
#: whisper.cpp only (docs/benchmarks-gpu.md, "Round 4 on the H200").
AUTO_ENGINE: dict[str, Literal["whispercpp", "ctranslate2"]] = {"cpu": "ctranslate2", "gpu": "whispercpp"}


def resolve_engine(engine: str, on_gpu: bool) -> Literal["whispercpp", "ctranslate2"]:
    """The concrete backend of ``ENGINE`` on a device class (``auto`` → :data:`AUTO_ENGINE`)."""
    if engine == "whispercpp":
        return "whispercpp"
    if engine == "ctranslate2":
        return "ctranslate2"
    return AUTO_ENGINE["gpu" if on_gpu else "cpu"]


def _ct2_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ctranslate2") is not None and importlib.util.find_spec("tokenizers") is not None


class EngineSettings(BaseSettings):
    """How audio is cut and how whisper.cpp (or CTranslate2) runs."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    engine: Literal["auto", "whispercpp", "ctranslate2"] = Field(
        DEFAULT_ENGINE, alias="ENGINE",
        description="the decoding backend: whispercpp (GGML model file) or ctranslate2 (CTranslate2 model directory, "
                    "e.g. the base-ct2 model; the 'ct2' extra); auto = by device class (AUTO_ENGINE: the faster one "
                    "measured there); the pipeline around it is the same",
    )
    ct2_batch_size: int = Field(
        0, ge=0, le=256, alias="CT2_BATCH_SIZE",
        description="ENGINE=ctranslate2: windows encoded and decoded in one batch, from all running jobs; "
                    "0 = auto (4 on the CPU, 16 on a GPU)",
    )
    ct2_batch_wait_ms: float = Field(
        20.0, ge=0.0, le=60000.0, alias="CT2_BATCH_WAIT_MS",
        description="ENGINE=ctranslate2: how long a batch that is not full waits for windows of other running jobs "
                    "(only while more jobs run than the batch holds windows of; one job alone never waits)",
    )
    job_concurrency: int = Field(
        1, ge=1, le=64, alias="JOB_CONCURRENCY",
        description="jobs one whisperop serve / one worker pod runs at once (their windows share the CTranslate2 "
                    "batches; whisper.cpp jobs share its PARALLELISM contexts); 1 = one job at a time",
    )
    ct2_compute_type: str = Field(
        "", alias="CT2_COMPUTE_TYPE",
        description="ENGINE=ctranslate2: CTranslate2 compute type; empty = int8 on the CPU, float16 on a GPU",
    )

    model_cache_dir: Path = Field(default_factory=lambda: default_cache_dir() / "models", alias="WHISPEROP_MODEL_CACHE")
    chunk_max_secs: float = Field(60.0, gt=1.0, alias="CHUNK_MAX_SECS")
    chunk_min_secs: float = Field(5.0, ge=0.0, alias="CHUNK_MIN_SECS")
    min_silence_secs: float = Field(0.3, gt=0.0, alias="MIN_SILENCE_SECS")
    max_audio_secs: float = Field(12 * 3600.0, gt=0.0, alias="MAX_AUDIO_SECS")
    threads: int = Field(0, ge=0, alias="WHISPER_THREADS", description="CPU threads, split over the decode streams; 0 = auto (all cores; on a GPU with several streams 2 x cores / streams, at most 4 each)")
    beam_size: int = Field(1, ge=1, le=16, alias="BEAM_SIZE", description="1 = greedy")
    temperature: float = Field(0.0, ge=0.0, le=1.0, alias="TEMPERATURE")
    temperature_inc: float = Field(0.2, ge=0.0, le=1.0, alias="TEMPERATURE_INC", description="fallback step; 0 disables fallback")
    word_timestamps: bool = Field(True, alias="WORD_TIMESTAMPS")
    use_gpu: bool = Field(True, alias="USE_GPU")
    cuda_device: int = Field(0, ge=0, alias="CUDA_DEVICE")
    flash_attn: bool | None = Field(None, alias="FLASH_ATTN", description="whisper.cpp flash attention; unset = on (GPU and CPU: faster, same accuracy)")
    parallelism: int = Field(
        0, ge=0, le=32, alias="PARALLELISM",
        description="concurrent whisper.cpp decoders; 0 = GPU_DEFAULT_PARALLELISM on a GPU, 1 on CPU (docs/benchmarks-gpu.md)",
    )
    max_secs_per_mb: float = Field(
        3600.0, ge=0.0, alias="AUDIO_MAX_SECS_PER_MB",
        description="decompression-bomb rule: at most this many seconds of audio per MB of input beyond 600 s (0 = off)",
    )
    tmp_dir: Path | None = Field(None, alias="WHISPEROP_TMP_DIR", description="decode temp files; whisperop serve: DATA_DIR/tmp, emptied of whisperop-* leftovers at start")
    chunk_time_limit_factor: float = Field(
        5.0, gt=0.0, alias="CHUNK_TIME_LIMIT_FACTOR",
        description="a chunk may take CHUNK_TIME_LIMIT_MIN_SECS + this x its duration; over it: one retry, then the chunk fails",
    )
    chunk_time_limit_min_secs: float = Field(60.0, ge=0.0, alias="CHUNK_TIME_LIMIT_MIN_SECS")
    job_time_limit_secs: float = Field(0.0, ge=0.0, alias="JOB_TIME_LIMIT_SECS",
                                       description="wall time of one run of a job; 0 = only the chunk limits")
    engine_isolation: Literal["auto", "process", "off"] = Field(
        "auto", alias="ENGINE_ISOLATION",
        description="process = whisper.cpp runs in a supervised child process (a native crash or out-of-memory abort "
                    "becomes waiting_for_gpu or a requeued job, never a dead server); off = in this process; "
                    "auto = process when USE_GPU and NVML sees the GPU, else off (docs/serve.md, 'Engine isolation')",
    )
    fault_slow_chunk: str = Field(
        "", alias="WHISPEROP_FAULT_SLOW_CHUNK",
        description="test hook 'INDEX:ATTEMPTS': the first ATTEMPTS decodes of chunk INDEX do not end on their own (held in whisper.cpp's abort callback until the time limit or a cancel stops them)",
    )

    fault_child_die: str = Field(
        "", alias="WHISPEROP_FAULT_CHILD_DIE",
        description="test hook 'PHASE:KIND:COUNT[,…]': the next COUNT engine processes die at PHASE (load/job) "
                    "by KIND (segv, abrt, oom, exit) (whisperop.inference.isolated)",
    )

    def resolved(self, model_path: Path | None = None) -> "EngineSettings":
        """This configuration with ``ENGINE=auto`` made concrete, so every reader sees one backend.

        The model decides where only one engine can run it: a GGML file is whisper.cpp's, a
        CTranslate2 directory (``model.bin`` inside) CTranslate2's. Where no model is given yet
        (``whisperop serve`` choosing which model to fetch), the device class decides
        (:data:`AUTO_ENGINE`: a GPU when USE_GPU and NVML sees one) — CTranslate2 only where it is
        installed (the ``ct2`` extra; the inference image has it), else whisper.cpp."""
        if self.engine != "auto":
            return self
        if model_path is not None and Path(model_path).is_dir():
            return self.model_copy(update={"engine": "ctranslate2"})
        if model_path is not None:
            return self.model_copy(update={"engine": "whispercpp"})
        from whisperop.core.gpu import gpu_memory  # NVML, loaded lazily: settings stay import-light

        on_gpu = self.use_gpu and gpu_memory(self.cuda_device) is not None
        engine = resolve_engine(self.engine, on_gpu)
        if engine == "ctranslate2" and not _ct2_installed():
            engine = "whispercpp"
        return self.model_copy(update={"engine": engine})

    def fault_slow(self, index: int, attempt: int) -> bool:
        """Whether the slow-chunk test hook applies to this chunk and attempt (0-based)."""
        if not self.fault_slow_chunk:
            return False
        chunk, _, attempts = self.fault_slow_chunk.partition(":")
        return int(chunk) == index and attempt < int(attempts or "1")


#: Server-side timeout of each watch request (the watch then resumes from its resourceVersion):
#: one default for the facade's watches and the operator's (``WHISPEROP_WATCH_TIMEOUT_SECS``).
DEFAULT_WATCH_TIMEOUT_SECS = 240


class ClusterFacadeSettings(BaseSettings):
    """What ``whisperop serve --cluster`` reads on top of :class:`ServerSettings` (docs/serve.md)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", env_ignore_empty=True)  # only the aliases

    model: str = Field("default", alias="WHISPEROP_MODEL_NAME", description="the WhisperModel this facade serves")
    upload_prefix: str | None = Field(None, alias="WHISPEROP_S3_UPLOAD_PREFIX", description="default uploads/<ns>/")
    watch_timeout_secs: int = Field(DEFAULT_WATCH_TIMEOUT_SECS, ge=1, alias="WHISPEROP_WATCH_TIMEOUT_SECS")


class ServerSettings(BaseSettings):
    """``whisperop serve`` and the REST facade."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", alias="HOST")
    port: int = Field(8080, ge=1, le=65535, alias="PORT")
    model_path: Path | None = Field(None, alias="WHISPER_MODEL_PATH")
    # default = whisperop.modelstore.cache.DEFAULT_MODEL (not imported: settings stay dependency-free)
    model_name: str = Field("base-q8_0", alias="WHISPER_MODEL",
                            description="display name; also the cache name. Unset, whisperop serve takes the engine's "
                                        "model (base-q8_0 for whisper.cpp, base-ct2 for CTranslate2; ENGINE=auto)")
    idle_timeout_secs: int = Field(300, ge=0, alias="IDLE_TIMEOUT_SECS", description="0 = never unload")
    gpu_poll_interval_secs: int = Field(30, ge=1, alias="GPU_POLL_INTERVAL_SECS")
    data_dir: Path = Field(Path("./data"), alias="DATA_DIR")
    queue_while_loading: bool = Field(False, alias="QUEUE_WHILE_LOADING")
    sync_load_wait_secs: int = Field(
        120, ge=0, alias="SYNC_LOAD_WAIT_SECS",
        description="how long an OpenAI-compatible request waits for the model to become ready before 503",
    )
    audio_url_max_bytes: int = Field(1 << 30, ge=1, alias="AUDIO_URL_MAX_BYTES",
                                     description="largest audio fetched from an audio_url (default 1 GiB)")
    audio_url_timeout_secs: float = Field(30.0, gt=0, alias="AUDIO_URL_TIMEOUT_SECS",
                                          description="connect/read timeout of an audio_url fetch (per read, not in total)")
    audio_url_s3_buckets: str = Field("", alias="AUDIO_URL_S3_BUCKETS",
                                      description="cluster mode: buckets an s3:// audio_url may name (comma-separated); none by default")
    max_audio_secs: float = Field(12 * 3600.0, gt=0.0, alias="MAX_AUDIO_SECS",
                                  description="the engine's limit, checked on an audio_url's declared duration at submit")
    job_ttl_secs: int = Field(
        0, ge=0, alias="JOB_TTL_SECS",
        description="delete finished jobs (row and files) this long after they finished; 0 = keep them. "
                    "Cluster mode sets it as each job's spec.ttlSecondsAfterFinished",
    )
    allowed_hosts: str = Field(
        "", alias="WHISPEROP_ALLOWED_HOSTS",
        description="Host header values served (comma-separated, * = any); empty = the loopback names on a loopback bind, any otherwise",
    )
    cors_origins: str = Field("", alias="WHISPEROP_CORS_ORIGINS", description="origins allowed cross-origin (CORS on only when set)")
    insecure: bool = Field(False, alias="WHISPEROP_INSECURE", description="allow a non-loopback bind without bearer tokens")
    upload_idle_timeout_secs: float = Field(
        30.0, ge=0, alias="UPLOAD_IDLE_TIMEOUT_SECS", description="408 when an upload sends no data for this long (0 = never)")
    max_concurrent_uploads: int = Field(
        256, ge=0, alias="MAX_CONCURRENT_UPLOADS", description="429 beyond this many uploads being received at once (0 = no cap)")
    max_uploads_per_token: int = Field(
        16, ge=0, alias="MAX_UPLOADS_PER_TOKEN", description="429 beyond this many uploads at once per bearer token (0 = no cap)")
    max_queued_per_token: int = Field(
        500, ge=0, alias="MAX_QUEUED_JOBS_PER_TOKEN", description="429 when a bearer token already has this many queued jobs (0 = no cap)")
    outbound_allow: str = Field(
        "", alias="WHISPEROP_OUTBOUND_ALLOW",
        description="internal hosts/addresses/CIDRs that webhook and audio URLs may reach (whisperop.core.urlguard); empty = public addresses only",
    )
    max_job_attempts: int = Field(
        3, ge=1, alias="MAX_JOB_ATTEMPTS",
        description="runs a job may start; one running at a crash is queued again (resuming) until then; 1 = fail it at once (original contract)",
    )


class WebhookRegistrySettings(BaseSettings):
    """Bounds of the lifecycle-webhook registry (both modes; docs/security.md).

    The original kept every URL ever seen, forever — including those of
    rejected submissions, so 1000 rejected requests with distinct URLs made
    every model event fan out 1000 POSTs. Now a job's URL stays registered for
    ``WEBHOOK_REGISTRY_TTL_SECS`` after its last submission; the URL of a
    submission answered 503 (the contract still registers it, so the client
    hears ``model_ready``) only for ``WEBHOOK_PENDING_TTL_SECS``, and at most
    ``WEBHOOK_PENDING_MAX`` of those at a time; the registry never holds more
    than ``WEBHOOK_REGISTRY_MAX`` URLs (the one closest to expiry makes room).
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    ttl_secs: float = Field(7 * 86400.0, gt=0, alias="WEBHOOK_REGISTRY_TTL_SECS")
    pending_ttl_secs: float = Field(3600.0, gt=0, alias="WEBHOOK_PENDING_TTL_SECS")
    max_entries: int = Field(1000, ge=1, alias="WEBHOOK_REGISTRY_MAX")
    max_pending: int = Field(100, ge=0, alias="WEBHOOK_PENDING_MAX")


class WebhookSettings(BaseSettings):
    """How webhooks are delivered and signed: the same names and defaults in ``whisperop serve``
    and the operator, the two deployables that send them (:mod:`whisperop.core.webhooks`)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    attempts: int = Field(3, ge=1, le=10, alias="WHISPEROP_WEBHOOK_ATTEMPTS",
                          description="POSTs per delivery (1 s, then 2 s between them; the contract's policy)")
    timeout_secs: float = Field(10.0, gt=0, alias="WHISPEROP_WEBHOOK_TIMEOUT_SECS",
                                description="one attempt's time limit (connect + answer)")
    secret: str = Field("", alias="WHISPEROP_WEBHOOK_SECRET", repr=False,
                        description="Standard Webhooks signing secret (whsec_<base64> or any string); empty = unsigned")
    secret_previous: str = Field("", alias="WHISPEROP_WEBHOOK_SECRET_PREVIOUS", repr=False,
                                 description="the secret being rotated out: deliveries carry both signatures")
    secrets_file: str = Field("", alias="WHISPEROP_WEBHOOK_SECRETS_FILE",
                              description="a file (one secret per line, current first) or a mounted Secret directory "
                                          "(keys current, previous); wins over the two variables above")

    def signer(self) -> "WebhookSigner":
        from whisperop.core.signing import WebhookSigner

        return WebhookSigner.from_config(self.secret, self.secret_previous, self.secrets_file or None)

    def sender(self, allow: str) -> "WebhookSender":
        """A (not yet started) sender with these settings; ``allow`` = ``WHISPEROP_OUTBOUND_ALLOW``."""
        from whisperop.core.webhooks import WebhookSender

        return WebhookSender(attempts=self.attempts, timeout=self.timeout_secs, allow=allow, signer=self.signer())


class KubeSettings(BaseSettings):
    """How the cluster components find the API server (facade, worker, operator, CLI)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True, env_ignore_empty=True)

    kubeconfig: str | None = Field(None, alias="KUBECONFIG",
                                   description="kubeconfig file(s) outside a pod; unset = ~/.kube/config")
    service_host: str | None = Field(None, alias="KUBERNETES_SERVICE_HOST",
                                     description="set by the kubelet in every pod: in-cluster credentials are used")
    pod_namespace: str | None = Field(None, alias="POD_NAMESPACE",
                                      description="the pod's namespace (downward API); else the service account's")


class LogSettings(BaseSettings):
    """Log lines of every component (``--log-level``/``--log-format`` override)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True, env_ignore_empty=True)

    level: str = Field("INFO", alias="LOG_LEVEL", description="DEBUG, INFO, WARNING, ERROR")
    format: str = Field("text", alias="LOG_FORMAT",
                        description="text (level logger: message key=value…) or json (one JSON object per line)")


class FaultHooks(BaseSettings):
    """Test hooks of the model load loop, both modes (:mod:`whisperop.inference.lifecycle`); both off."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    load_oom_count: int = Field(0, ge=0, alias="WHISPEROP_FAULT_LOAD_OOM_COUNT",
                                description="test hook: the next N loads raise an out-of-GPU-memory error")
    load_delay_secs: float = Field(0.0, ge=0.0, alias="WHISPEROP_FAULT_LOAD_DELAY_SECS",
                                   description="test hook: every load takes this much longer")
