"""Bounded work per upload, at the decoder: implausible formats are refused before
decoding and durations out of proportion to the input's size are refused as
decompression bombs (issue 16: an 80 KB WAV and a 7.5 MB silent FLAC each decoded
to 11 h of audio). Real files, real PyAV/ffmpeg."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from whisperop.core.errors import AudioDecodeError
from whisperop.inference.audio import bomb_limit_secs, decode_audio


def wav_claiming(path: Path, sample_rate: int, data_bytes: int, channels: int = 1) -> Path:
    """A PCM16 WAV whose header says ``sample_rate``; the data is ``data_bytes`` of silence."""
    block = 2 * channels
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16) + b"data" + struct.pack("<I", data_bytes)
    path.write_bytes(header + bytes(data_bytes))
    return path


def silent_flac(path: Path, secs: int) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(secs),
                    "-c:a", "flac", str(path)], check=True, timeout=300)
    return path


def leftovers(d: Path) -> list[Path]:
    return list(d.iterdir())


def test_one_sample_per_second_wav_is_refused_before_decoding(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src = wav_claiming(tmp_path / "slow.wav", 1, 80_000)  # the 80 KB file: "11 h" of audio
    with pytest.raises(AudioDecodeError, match="implausible sample rate 1 Hz"):
        decode_audio(src, tmp_dir=work, max_secs_per_mb=3600)
    assert leftovers(work) == []


def test_too_many_channels_refused(tmp_path: Path) -> None:
    src = wav_claiming(tmp_path / "wide.wav", 16000, 2 * 100 * 1600, channels=100)
    with pytest.raises(AudioDecodeError, match="implausible channel count 100"):
        decode_audio(src, tmp_dir=tmp_path, max_secs_per_mb=3600)


def test_silent_flac_out_of_proportion_to_its_size_is_a_bomb(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src = silent_flac(tmp_path / "silence.flac", 1800)  # 30 min of digital silence: a few hundred KB
    size = src.stat().st_size
    limit = bomb_limit_secs(size, 3600)
    assert limit is not None and limit < 1800, (size, limit)
    with pytest.raises(AudioDecodeError, match="decompression bomb") as exc:
        decode_audio(src, tmp_dir=work, max_secs_per_mb=3600)
    assert "AUDIO_MAX_SECS_PER_MB" in str(exc.value)
    assert leftovers(work) == []
    # the rule is configurable: 0 turns it off and the same file decodes
    with decode_audio(src, tmp_dir=work, max_secs_per_mb=0) as audio:
        assert audio.duration_secs == pytest.approx(1800, abs=1)


def test_ordinary_speech_sized_input_passes(tmp_path: Path) -> None:
    # 11 s of 16 kHz PCM (352 KB): far below any ratio; also short audio is never a bomb
    src = wav_claiming(tmp_path / "ok.wav", 16000, 16000 * 2 * 11)
    with decode_audio(src, tmp_dir=tmp_path, max_secs_per_mb=3600) as audio:
        assert audio.duration_secs == pytest.approx(11, abs=0.01)
    assert bomb_limit_secs(1000, 3600) == 600.0


def test_truncated_wav_is_refused_not_transcribed_in_part(tmp_path: Path) -> None:
    full = wav_claiming(tmp_path / "full.wav", 16000, 16000 * 2 * 60)
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # an interrupted download: header says 60 s, 30 s present
    with pytest.raises(AudioDecodeError, match="audio is truncated: the WAV header declares 1920000 bytes"):
        decode_audio(cut, tmp_dir=tmp_path, max_secs_per_mb=3600)
    with decode_audio(full, tmp_dir=tmp_path, max_secs_per_mb=3600) as audio:  # the whole file is fine
        assert audio.duration_secs == pytest.approx(60, abs=0.01)
