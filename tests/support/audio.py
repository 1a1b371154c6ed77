"""Audio made offline for the contract suite and the benchmarks.

- ``JFK_WAV`` and its reference text (shared data).
- ``bursts_wav``: tone+noise bursts separated by silences, written as
  16 kHz mono PCM WAV with numpy; with ``CHUNK_MAX_SECS=20`` a few minutes of
  it is cut into many chunks (progress events, time to cancel mid-job).
- ``noise_bursts_wav``: white-noise bursts and pauses (the engine tests').
- ``speech_wav``: espeak-ng speech (optional; only where real words matter).
- ``garbage_bytes``: bytes no decoder accepts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

# ../shared/data/audio beside the checkout (as tests/conftest.py finds it)
SHARED_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "data" / "audio"
if not SHARED_AUDIO.is_dir():
    SHARED_AUDIO = Path("/work/shared/data/audio")
JFK_WAV = SHARED_AUDIO / "jfk.wav"
REFERENCES = SHARED_AUDIO / "references.json"

SAMPLE_RATE = 16_000


def reference_text(name: str = "jfk.wav") -> str:
    return json.loads(REFERENCES.read_text(encoding="utf-8"))[name]["text"]


def normalize_words(text: str) -> list[str]:
    """Lower-case, drop punctuation, split on whitespace."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    text = text.replace("'", "")
    return text.split()


def write_wav(path: Path, samples: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def bursts(total_secs: float, burst_secs: float = 8.0, gap_secs: float = 1.5, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Tone+noise bursts separated by silences, ``total_secs`` long."""
    rng = np.random.default_rng(seed)
    n_total = int(total_secs * sr)
    out = np.zeros(n_total, dtype=np.float32)
    pos, i = int(0.5 * sr), 0
    while pos < n_total:
        n = min(int(burst_secs * sr), n_total - pos)
        t = np.arange(n) / sr
        f0 = 180.0 + 40.0 * (i % 7)
        sig = 0.25 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 2.5 * f0 * t)
        sig *= 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t) ** 2  # syllable-ish envelope
        sig += 0.05 * rng.standard_normal(n)
        out[pos : pos + n] = sig
        pos += n + int(gap_secs * sr)
        i += 1
    return out


def bursts_wav(path: Path, total_secs: float, seed: int = 0, **kw: float) -> Path:
    return write_wav(path, bursts(total_secs, seed=seed, **kw))


def noise_bursts_wav(path: Path, n: int, speech_secs: float = 8.0, pause_secs: float = 1.0) -> Path:
    """``n`` bursts of white noise (seed 0) each followed by a pause: the engine tests' input (tiny model)."""
    rng = np.random.default_rng(0)
    parts = []
    for _ in range(n):
        parts += [(rng.standard_normal(int(speech_secs * SAMPLE_RATE)) * 0.2).astype(np.float32), np.zeros(int(pause_secs * SAMPLE_RATE), np.float32)]
    return write_wav(path, np.concatenate(parts))


def tone_wav(path: Path, secs: float = 1.5, freq: float = 440.0) -> Path:
    t = np.arange(int(secs * SAMPLE_RATE)) / SAMPLE_RATE
    return write_wav(path, 0.3 * np.sin(2 * np.pi * freq * t))


def speech_wav(path: Path, text: str, voice: str = "en") -> Path:
    """espeak-ng speech resampled to 16 kHz mono with sox."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if not espeak or not sox:
        raise RuntimeError("espeak-ng and sox are needed for speech fixtures")
    raw = Path(path).with_suffix(".raw.wav")
    subprocess.run([espeak, "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run([sox, str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path)], check=True, capture_output=True)
    raw.unlink(missing_ok=True)
    return Path(path)


def garbage_bytes(n: int = 64 * 1024) -> bytes:
    """Text that no audio demuxer accepts (FFmpeg: 'Invalid data found')."""
    line = b"this is definitely not audio, just bytes in a file\n"
    return (line * (n // len(line) + 1))[:n]


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()
