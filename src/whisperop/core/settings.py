"""Settings from environment variables, with the original server's names.

One class per component so each reads only what it uses. The names that the
original contract defines (``PORT``, ``WHISPER_MODEL_PATH``, ``WHISPER_MODEL``,
``IDLE_TIMEOUT_SECS``, ``GPU_POLL_INTERVAL_SECS``, ``CUDA_DEVICE``,
``DATA_DIR``) keep their meaning so existing deployments carry over.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    """``~/.cache/whisperop`` (or ``$XDG_CACHE_HOME/whisperop``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "whisperop"


#: Decoders per worker on a GPU when PARALLELISM is unset: on an H100 with
#: whisper base, 8 streams decode 3.8x the audio of one (440x real time,
#: flash attention on) for ~380 MB of GPU memory each; 16 add <1 % (greedy).
GPU_DEFAULT_PARALLELISM = 8


class EngineSettings(BaseSettings):
    """How audio is cut and how whisper.cpp runs."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

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
    tmp_dir: Path | None = Field(None, alias="WHISPEROP_TMP_DIR")
    chunk_time_limit_factor: float = Field(
        5.0, gt=0.0, alias="CHUNK_TIME_LIMIT_FACTOR",
        description="a chunk may take CHUNK_TIME_LIMIT_MIN_SECS + this x its duration; over it: one retry, then the chunk fails",
    )
    chunk_time_limit_min_secs: float = Field(60.0, ge=0.0, alias="CHUNK_TIME_LIMIT_MIN_SECS")
    job_time_limit_secs: float = Field(0.0, ge=0.0, alias="JOB_TIME_LIMIT_SECS",
                                       description="wall time of one run of a job; 0 = only the chunk limits")
    fault_slow_chunk: str = Field(
        "", alias="WHISPEROP_FAULT_SLOW_CHUNK",
        description="test hook 'INDEX:ATTEMPTS': the first ATTEMPTS decodes of chunk INDEX do not end on their own (held in whisper.cpp's abort callback until the time limit or a cancel stops them)",
    )

    def fault_slow(self, index: int, attempt: int) -> bool:
        """Whether the slow-chunk test hook applies to this chunk and attempt (0-based)."""
        if not self.fault_slow_chunk:
            return False
        chunk, _, attempts = self.fault_slow_chunk.partition(":")
        return int(chunk) == index and attempt < int(attempts or "1")


class ServerSettings(BaseSettings):
    """``whisperop serve`` and the REST facade."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", alias="HOST")
    port: int = Field(8080, ge=1, le=65535, alias="PORT")
    model_path: Path | None = Field(None, alias="WHISPER_MODEL_PATH")
    # default = whisperop.modelstore.cache.DEFAULT_MODEL (not imported: settings stay dependency-free)
    model_name: str = Field("base-q8_0", alias="WHISPER_MODEL", description="display name; also the cache name")
    idle_timeout_secs: int = Field(300, ge=0, alias="IDLE_TIMEOUT_SECS", description="0 = never unload")
    gpu_poll_interval_secs: int = Field(30, ge=1, alias="GPU_POLL_INTERVAL_SECS")
    data_dir: Path = Field(Path("./data"), alias="DATA_DIR")
    queue_while_loading: bool = Field(False, alias="QUEUE_WHILE_LOADING")
    max_job_attempts: int = Field(
        3, ge=1, alias="MAX_JOB_ATTEMPTS",
        description="runs a job may start; one running at a crash is queued again (resuming) until then; 1 = fail it at once (original contract)",
    )
