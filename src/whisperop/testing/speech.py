"""Speech with a known transcript, made offline with espeak-ng.

Tests and benchmarks need long, multilingual audio whose exact text is known.
espeak-ng speaks each sentence; sentences are joined with pauses of varying
length (and occasionally none, so the chunker also meets continuous speech).
The reference transcript is the text in the order spoken.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whisperop.inference.audio import SAMPLE_RATE, decode_audio, write_wav

DATA_DIR = Path(__file__).resolve().parents[3] / "tests" / "data"


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", words_per_minute: int = 165) -> np.ndarray:
    """One utterance as 16 kHz mono float32."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text], check=True, capture_output=True)
        with decode_audio(wav) as audio:
            return audio.read()


@dataclass
class Speech:
    pcm: np.ndarray
    text: str
    #: (start_secs, end_secs) of each spoken sentence
    spans: list[tuple[float, float]]
    #: the text of each span (bench/gpu.py cuts the speech into jobs between spans and needs each job's reference)
    texts: list[str] = field(default_factory=list)

    @property
    def duration_secs(self) -> float:
        return self.pcm.size / SAMPLE_RATE

    def write(self, path: str | Path) -> Path:
        write_wav(path, self.pcm)
        return Path(path)


def build_speech(
    sentences: list[str],
    voices: tuple[str, ...] = ("en-us",),
    min_pause: float = 0.3,
    max_pause: float = 1.2,
    no_pause_every: int = 0,
    seed: int = 0,
    extra: list[tuple[np.ndarray, str]] | None = None,
) -> Speech:
    """Speak ``sentences`` once per voice, shuffled per pass, with random pauses.

    ``extra`` clips (pcm, text) are interleaved evenly (e.g. jfk.wav repeats).
    ``no_pause_every = n`` joins every n-th sentence to the previous one with
    no pause at all.
    """
    rng = random.Random(seed)
    items: list[tuple[str, str | None, np.ndarray | None]] = []
    for pass_voice in voices:
        order = sentences[:]
        rng.shuffle(order)
        items += [(s, pass_voice, None) for s in order]
    if extra:
        step = max(1, len(items) // (len(extra) + 1))
        for k, (extra_pcm, extra_text) in enumerate(extra, start=1):
            items.insert(min(len(items), k * step + k - 1), (extra_text, None, extra_pcm))
    parts: list[np.ndarray] = []
    texts: list[str] = []
    spans: list[tuple[float, float]] = []
    pos = 0
    for i, (text, voice, pcm) in enumerate(items):
        clip = pcm if pcm is not None else speak(text, voice or "en-us")
        if i and not (no_pause_every and i % no_pause_every == 0):
            gap = np.zeros(int(rng.uniform(min_pause, max_pause) * SAMPLE_RATE), dtype=np.float32)
            parts.append(gap)
            pos += gap.size
        parts.append(clip.astype(np.float32))
        spans.append((pos / SAMPLE_RATE, (pos + clip.size) / SAMPLE_RATE))
        pos += clip.size
        texts.append(text)
    return Speech(np.concatenate(parts) if parts else np.zeros(0, np.float32), " ".join(texts), spans, texts)


def english_sentences() -> list[str]:
    return [line.strip() for line in (DATA_DIR / "english_sentences.txt").read_text(encoding="utf-8").splitlines() if line.strip()]


_PUNCT = re.compile(r"[^\w\s']", re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation (keep apostrophes inside words), collapse spaces."""
    return " ".join(_PUNCT.sub(" ", text.lower().replace("’", "'")).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))
