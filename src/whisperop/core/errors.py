"""Typed errors shared by the engine, the worker and the facade.

Each failure a user can cause or meet has its own type so callers can react
precisely: the facade maps them to HTTP answers, the worker to a failed job
with a clear message, and the model lifecycle tells "not enough GPU memory"
(wait and retry: ``waiting_for_gpu``) apart from a broken model file (fail).
"""

from __future__ import annotations


class WhisperOpError(Exception):
    """Base class of every error this project raises on purpose."""


class AudioError(WhisperOpError):
    """The input could not be used as audio (the job fails with this message)."""


class AudioDecodeError(AudioError):
    """Corrupt, truncated or non-audio input."""


class EmptyAudioError(AudioError):
    """Zero-length input, or a file whose audio stream holds no samples."""


class AudioTooLongError(AudioError):
    """Longer than the configured maximum duration; rejected before decoding it all."""

    def __init__(self, duration_secs: float, max_secs: float) -> None:
        super().__init__(
            f"audio is {duration_secs:.0f} s long, more than the maximum of {max_secs:.0f} s "
            "(raise MAX_AUDIO_SECS to allow it)"
        )
        self.duration_secs = duration_secs
        self.max_secs = max_secs


class ModelError(WhisperOpError):
    """The model could not be loaded or used."""


class ModelNotFoundError(ModelError):
    """No model file at the configured path or name."""


class ModelLoadError(ModelError):
    """The model file exists but whisper.cpp refused it."""


class GpuMemoryError(ModelLoadError):
    """Loading failed for lack of (GPU) memory: retry later (``waiting_for_gpu``)."""

    def __init__(self, message: str, vram_needed_mb: int | None = None, vram_free_mb: int | None = None) -> None:
        super().__init__(message)
        self.vram_needed_mb = vram_needed_mb
        self.vram_free_mb = vram_free_mb


class TranscriptionError(WhisperOpError):
    """whisper.cpp failed while transcribing."""


class EngineCrashed(TranscriptionError):
    """The engine's process died during a job (``ENGINE_ISOLATION=process``):
    the job goes back to the queue with its checkpoint, the engine is loaded
    again. ``oom`` says whether its last log lines were out of (GPU) memory."""

    def __init__(self, message: str, oom: bool = False) -> None:
        super().__init__(message)
        self.oom = oom


class JobCancelled(WhisperOpError):
    """Raised inside the pipeline when the job's cancel check turns true."""


class JobNotFound(WhisperOpError):
    """No job with this id (the facade answers 404 with this exact message)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class JobAlreadyTerminal(WhisperOpError):
    """A cancel of a job that already ended (the facade answers 409)."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} is already in terminal state {status}")
        self.job_id = job_id
        self.status = status


class JobStillActive(WhisperOpError):
    """A purge of a job that is still queued or running (cancel it first; the facade answers 409)."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} is still {status}; cancel it before deleting it")
        self.job_id = job_id
        self.status = status


class BlobNotFound(WhisperOpError):
    """No blob under this key."""


class UnsafeURLError(WhisperOpError, ValueError):
    """A URL the server must not fetch or POST to (``whisperop.core.urlguard``): not
    http(s), credentials in it, or a host that is or resolves to an internal address.
    The facade answers 400 with this message."""

    http_status = 400
