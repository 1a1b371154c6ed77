"""Decoding: formats, resampling, and a typed error for every bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from whisperop.core.errors import AudioDecodeError, AudioTooLongError, EmptyAudioError
from whisperop.inference.audio import SAMPLE_RATE, decode_audio, write_wav


def tone(secs: float, rate: int = SAMPLE_RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(secs * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def test_wav_decodes_to_16k_mono_float32(jfk_wav: Path) -> None:
    with decode_audio(jfk_wav) as audio:
        assert audio.n_samples == pytest.approx(11.0 * SAMPLE_RATE, rel=0.01)
        pcm = audio.read()
        assert pcm.dtype == np.float32 and pcm.ndim == 1 and pcm.size == audio.n_samples
        assert 0.05 < float(np.abs(pcm).max()) <= 1.0
        assert audio.frame_db.size == pytest.approx(audio.n_samples / 160, abs=1)
        tmp = audio.path
    assert not tmp.exists(), "the temporary PCM file is removed on close"


def test_mp3_matches_wav_duration(jfk_wav: Path) -> None:
    with decode_audio(jfk_wav) as wav, decode_audio(jfk_wav.with_suffix(".mp3")) as mp3:
        assert abs(wav.duration_secs - mp3.duration_secs) < 0.1


def test_stereo_44k_is_resampled_and_downmixed(tmp_path: Path) -> None:
    src = tmp_path / "s.wav"
    write_wav(src, tone(2.0, 44100), 44100)
    out = tmp_path / "stereo.flac"
    ffmpeg("-i", str(src), "-ac", "2", str(out))
    with decode_audio(out) as audio:
        assert audio.n_samples == pytest.approx(2 * SAMPLE_RATE, abs=200)
        pcm = audio.read()
        # energy of a 0.3-amplitude sine survives resampling and downmix
        assert float(np.sqrt(np.mean(pcm**2))) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


def test_video_container_audio_track_is_used(tmp_path: Path) -> None:
    out = tmp_path / "clip.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=32x32:d=1", "-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-shortest", str(out))
    with decode_audio(out) as audio:
        assert audio.duration_secs == pytest.approx(1.0, abs=0.1)


def test_read_slices_are_exact(tmp_path: Path) -> None:
    src = tmp_path / "ramp.wav"
    pcm = np.linspace(-0.5, 0.5, SAMPLE_RATE * 3).astype(np.float32)
    write_wav(src, pcm)
    with decode_audio(src) as audio:
        whole = audio.read()
        np.testing.assert_array_equal(audio.read(1000, 5000), whole[1000:5000])
        assert audio.read(audio.n_samples + 10, audio.n_samples + 20).size == 0


def test_empty_file_is_a_typed_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="empty"):
        decode_audio(empty)


def test_wav_header_without_samples_is_empty(tmp_path: Path) -> None:
    src = tmp_path / "zero.wav"
    write_wav(src, np.zeros(0, np.float32))
    with pytest.raises((EmptyAudioError, AudioDecodeError)):
        decode_audio(src)


def test_garbage_bytes_are_a_decode_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioDecodeError):
        decode_audio(junk)


def test_text_file_is_a_decode_error(tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("this is not audio\n" * 100)
    with pytest.raises(AudioDecodeError):
        decode_audio(txt)


def test_image_without_audio_stream_is_rejected(tmp_path: Path) -> None:
    img = tmp_path / "pic.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=16x16:d=0.1", "-frames:v", "1", str(img))
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        decode_audio(img)


def test_truncated_file_is_a_decode_error(tmp_path: Path) -> None:
    src = tmp_path / "long.wav"
    write_wav(src, tone(20.0))
    flac = tmp_path / "long.flac"
    ffmpeg("-i", str(src), str(flac))
    data = flac.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio(cut)


def test_missing_file_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="cannot read"):
        decode_audio(tmp_path / "nope.wav")


def test_too_long_is_rejected_from_the_header_before_decoding(tmp_path: Path) -> None:
    src = tmp_path / "ten.wav"
    write_wav(src, tone(10.0))
    with pytest.raises(AudioTooLongError) as info:
        decode_audio(src, max_secs=5.0)
    assert info.value.duration_secs == pytest.approx(10.0, abs=0.1)


def test_too_long_without_declared_duration_stops_while_decoding(tmp_path: Path) -> None:
    src = tmp_path / "ten.wav"
    write_wav(src, tone(10.0))
    raw = tmp_path / "ten.adts"  # ADTS AAC carries no duration in its header
    ffmpeg("-i", str(src), "-c:a", "aac", "-f", "adts", str(raw))
    with pytest.raises(AudioTooLongError):
        decode_audio(raw, max_secs=5.0)
