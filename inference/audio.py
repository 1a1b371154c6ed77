"""Decode any audio ffmpeg can read into 16 kHz mono float32, streaming.

PyAV (ffmpeg's libraries) decodes packet by packet; each resampled block is
appended to a temporary raw float32 file and its energy measured on the fly.
So a 2-hour input never exists as one array in memory: what stays resident is
the per-10-ms energy envelope (720 000 floats for 2 h) that the chunker needs,
and each chunk is read back from disk only when it is transcribed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Callable

import av
import numpy as np

from whisperop.core.errors import AudioDecodeError, AudioTooLongError, EmptyAudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 160  # 10 ms energy frames
#: Decoded audio shorter than this fraction of what the container declares is
#: treated as truncated (a cut-off download, a partial upload).
TRUNCATION_RATIO = 0.9
TRUNCATION_MIN_MISSING_SECS = 1.0
_SILENCE_DB = -100.0
#: Plausible input formats, checked before decoding: issue 16's 80 KB WAV whose
#: header claimed 1 sample/s decoded to 11 h of audio (a 2.56 GB temp file,
#: ~50 minutes of worker time). No real recording is outside these bounds.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
#: Decompression-bomb rule: audio this short is never refused for its ratio.
BOMB_FLOOR_SECS = 600.0


@dataclass
class DecodedAudio:
    """16 kHz mono float32 PCM in a temporary file, plus its energy envelope."""

    path: Path
    n_samples: int
    frame_db: np.ndarray = field(repr=False)
    declared_secs: float | None = None

    @property
    def duration_secs(self) -> float:
        return self.n_samples / SAMPLE_RATE

    def read(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Samples ``[start, end)`` as a fresh float32 array."""
        end = self.n_samples if end is None else min(end, self.n_samples)
        start = max(0, min(start, end))
        with open(self.path, "rb") as f:
            f.seek(start * 4)
            data = np.fromfile(f, dtype="<f4", count=end - start)
        return data.astype(np.float32, copy=False)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> DecodedAudio:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _EnergyMeter:
    """Accumulates mean-square energy per 10 ms frame across arbitrary block sizes."""

    def __init__(self) -> None:
        self._carry = np.zeros(0, dtype=np.float32)
        self._db: list[np.ndarray] = []

    def feed(self, block: np.ndarray) -> None:
        data = np.concatenate([self._carry, block]) if self._carry.size else block
        n_full = data.size // FRAME_SAMPLES
        if n_full:
            frames = data[: n_full * FRAME_SAMPLES].reshape(n_full, FRAME_SAMPLES).astype(np.float64)
            self._db.append(_to_db(np.mean(frames * frames, axis=1)))
        self._carry = data[n_full * FRAME_SAMPLES :].copy()

    def so_far(self) -> np.ndarray:
        """The envelope of the complete frames fed so far."""
        return np.concatenate(self._db).astype(np.float32, copy=False) if self._db else np.zeros(0, dtype=np.float32)

    def finish(self) -> np.ndarray:
        if self._carry.size:
            tail = self._carry.astype(np.float64)
            self._db.append(_to_db(np.array([np.mean(tail * tail)])))
            self._carry = np.zeros(0, dtype=np.float32)
        return np.concatenate(self._db).astype(np.float32) if self._db else np.zeros(0, dtype=np.float32)


@dataclass
class DecodeProgress:
    """How far a streaming decode has got: the temporary file holds (flushed)
    ``n_samples`` samples, whose envelope :meth:`frame_db` gives."""

    path: Path
    n_samples: int
    _meter: _EnergyMeter = field(repr=False)

    def frame_db(self) -> np.ndarray:
        return self._meter.so_far()


OnBlock = Callable[[DecodeProgress], None]


def _to_db(mean_square: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(mean_square)
    return np.maximum(db, _SILENCE_DB)


def _declared_duration(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def bomb_limit_secs(size_bytes: int, max_secs_per_mb: float | None) -> float | None:
    """The longest audio ``size_bytes`` of input may decode to (None: no limit).

    ``max_secs_per_mb`` (``AUDIO_MAX_SECS_PER_MB``, default 3600) is an average
    bitrate floor of ~2.3 kbit/s: speech codecs at their lowest rates (Opus 6
    kbit/s, AMR-NB 4.75 kbit/s) stay below 1 800 s per MB, while issue 16's
    11-hour silent FLAC of 7.5 MB is 5 280 s per MB and the 1-sample/s WAV
    500 000. Anything up to :data:`BOMB_FLOOR_SECS` passes whatever its size."""
    if not max_secs_per_mb:
        return None
    return max(BOMB_FLOOR_SECS, size_bytes / 1e6 * max_secs_per_mb)


def _bomb_error(secs: float, size: int, limit: float) -> AudioDecodeError:
    return AudioDecodeError(
        f"audio would decode to {secs:.0f} s from only {size} bytes (more than {limit:.0f} s for this size: "
        "a decompression bomb or a corrupt header; raise AUDIO_MAX_SECS_PER_MB to allow it)"
    )


def _wav_shortfall(src: Path, size: int) -> tuple[int, int] | None:
    """(declared, present) data bytes of a RIFF/WAVE file cut short, else None.

    ffmpeg derives a WAV's duration from the file size when the header's data
    size is larger, so a cut-off WAV decoded "fine" into a partial transcript
    (issue 16). Streaming writers put 0 or 0xFFFFFFFF there: not a claim."""
    with open(src, "rb") as f:
        head = f.read(64 * 1024)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        cid, csize = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"data":
            present = size - (pos + 8)
            if csize in (0, 0xFFFFFFFF) or csize <= present:
                return None
            return csize, present
        pos += 8 + csize + (csize & 1)
    return None


def _check_format(stream: av.audio.stream.AudioStream) -> None:
    rate = stream.codec_context.sample_rate or stream.sample_rate or 0
    if rate and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(f"implausible sample rate {rate} Hz (accepted: {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz)")
    channels = stream.codec_context.channels or 0
    if channels > MAX_CHANNELS:
        raise AudioDecodeError(f"implausible channel count {channels} (at most {MAX_CHANNELS})")


def decode_audio(source: str | os.PathLike[str], max_secs: float = 12 * 3600.0, tmp_dir: str | os.PathLike[str] | None = None,
                 max_secs_per_mb: float | None = None, on_block: OnBlock | None = None) -> DecodedAudio:
    """Decode ``source`` to 16 kHz mono float32 in a temp file.

    ``on_block`` is called after every block of about 10 s written (on this
    thread, the file flushed up to that point), so a caller can start on the
    audio's beginning while the rest decodes; a failure later in the decode
    still raises here (the caller drops what it started).

    Raises :class:`EmptyAudioError`, :class:`AudioDecodeError` (corrupt,
    truncated or non-audio input; an implausible sample rate or channel count;
    a duration out of proportion to the file's size, :func:`bomb_limit_secs`)
    or :class:`AudioTooLongError` (checked against the container's declared
    duration before decoding, and again while decoding for containers that
    declare none).
    """
    src = Path(source)
    try:
        size = src.stat().st_size
    except OSError as exc:
        raise AudioDecodeError(f"cannot read audio file: {exc.strerror or exc}") from exc
    if size == 0:
        raise EmptyAudioError("audio file is empty (0 bytes)")
    try:
        container = av.open(str(src), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"not a readable audio file: {_ffmpeg_message(exc)}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix="whisperop-pcm-", suffix=".f32", dir=tmp_dir)
    tmp_path = Path(tmp_name)
    try:
        with container, os.fdopen(fd, "wb") as out:
            audio_streams = list(container.streams.audio)
            if not audio_streams:
                raise AudioDecodeError("no audio stream found in the file")
            stream = audio_streams[0]
            _check_format(stream)
            short = _wav_shortfall(src, size)
            if short is not None:
                raise AudioDecodeError(f"audio is truncated: the WAV header declares {short[0]} bytes of audio "
                                       f"but the file holds {short[1]}")
            declared = _declared_duration(container, stream)
            if declared is not None and declared > max_secs:
                raise AudioTooLongError(declared, max_secs)
            bomb = bomb_limit_secs(size, max_secs_per_mb)
            if bomb is not None and declared is not None and declared > bomb:
                raise _bomb_error(declared, size, bomb)
            try:
                n_samples, frame_db = _decode_stream(container, stream, out, min(max_secs, bomb) if bomb else max_secs,
                                                     on_block, tmp_path)
            except AudioTooLongError as exc:
                if bomb is not None and bomb < max_secs and exc.duration_secs > bomb:
                    raise _bomb_error(exc.duration_secs, size, bomb) from None
                raise
        if n_samples == 0:
            raise EmptyAudioError("the audio stream holds no samples")
        decoded_secs = n_samples / SAMPLE_RATE
        if (
            declared is not None
            and decoded_secs < declared * TRUNCATION_RATIO
            and declared - decoded_secs > TRUNCATION_MIN_MISSING_SECS
        ):
            raise AudioDecodeError(
                f"audio is truncated: the file declares {declared:.1f} s but only {decoded_secs:.1f} s could be decoded"
            )
        return DecodedAudio(tmp_path, n_samples, frame_db, declared)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


#: Decoded frames are handled in batches of about this many samples (10 s):
#: codecs hand out 20–100 ms frames, and per-frame numpy/file calls were most of
#: the decode time of long files.
_BATCH_SAMPLES = 10 * SAMPLE_RATE


def _decode_stream(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, out: BinaryIO, max_secs: float,
                   on_block: OnBlock | None = None, path: Path | None = None) -> tuple[int, np.ndarray]:
    # Let ffmpeg decode on several threads where the codec can (frame threads).
    stream.codec_context.thread_type = "AUTO"
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    meter = _EnergyMeter()
    n_samples = 0
    max_samples = int(max_secs * SAMPLE_RATE)
    pending: list[np.ndarray] = []
    pending_samples = 0

    def flush() -> None:
        nonlocal n_samples, pending_samples
        if not pending:
            return
        block = np.concatenate(pending) if len(pending) > 1 else pending[0]
        pending.clear()
        pending_samples = 0
        np.nan_to_num(block, copy=False)
        out.write(block.tobytes())
        meter.feed(block)
        n_samples += block.size
        if n_samples > max_samples:
            raise AudioTooLongError(n_samples / SAMPLE_RATE, max_secs)
        if on_block is not None and path is not None:
            out.flush()
            on_block(DecodeProgress(path, n_samples, meter))

    def emit(frames: list[av.AudioFrame]) -> None:
        nonlocal pending_samples
        for frame in frames:
            # a copy: the batch outlives the codec's frame buffer
            block = frame.to_ndarray().reshape(-1).astype(np.float32)
            if block.size:
                pending.append(block)
                pending_samples += block.size
        if pending_samples >= _BATCH_SAMPLES:
            flush()

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                emit(resampler.resample(frame))
        emit(resampler.resample(None))
        flush()
    except av.error.FFmpegError as exc:
        raise AudioDecodeError(f"audio is corrupt or truncated: {_ffmpeg_message(exc)}") from exc
    return n_samples, meter.finish()


def _ffmpeg_message(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    return str(strerror or exc)


def write_wav(path: str | os.PathLike[str], pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float PCM as 16-bit WAV (used by tests, benchmarks and warm-up fixtures)."""
    import wave

    clipped = np.clip(pcm, -1.0, 1.0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((clipped * 32767.0).astype("<i2").tobytes())
