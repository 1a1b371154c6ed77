"""Long English speech with its exact transcript, for the GPU benchmark.

    python bench/speech.py --minutes 30 --out .carry/audio

Writes ``speech-<N>min.flac`` (16 kHz mono, lossless) and ``speech-<N>min.txt``
(the reference text, in spoken order) plus ``speech-<N>min.json`` (duration,
voices, number of clips) and ``speech-<N>min.spans.json`` (each clip's start,
end and text: the many-jobs case of bench/gpu.py cuts its jobs between clips). The speech is the project's English sentences
spoken by espeak-ng in several voices (each pass shuffled), with jfk.wav
repeats interleaved, joined by pauses of 0.3-1.2 s and now and then no pause
at all (so the chunker also meets continuous speech): the same recipe as the
test corpus (:mod:`whisperop.testing.speech`), only longer.

Made here (espeak-ng and sox are on the developer machine) and carried to the
GPU machine as FLAC, which has neither.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
JFK = REPO / "tests" / "data" / "jfk.wav"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
VOICES = ("en-us", "en-gb", "en-us+m3", "en-gb+f3", "en-gb-x-rp", "en-us+f2", "en-us+m7", "en-gb+m2")


def build(minutes: float, seed: int = 3, jfk_every_secs: float = 90.0):
    from whisperop.inference.audio import SAMPLE_RATE, decode_audio
    from whisperop.testing.speech import build_speech, english_sentences

    with decode_audio(JFK) as a:
        jfk = a.read()
    sentences = english_sentences()
    # one pass of the sentences lasts about 5 minutes; add passes until long enough
    import math

    passes = max(1, math.ceil(minutes / 5.6))
    while True:
        voices = tuple(VOICES[i % len(VOICES)] for i in range(passes))
        approx = passes * 5.3 * 60
        extra = [(jfk, JFK_TEXT)] * int(approx / jfk_every_secs)
        speech = build_speech(sentences, voices=voices, no_pause_every=7, seed=seed, extra=extra)
        if speech.duration_secs >= minutes * 60:
            return speech, voices, len(extra), SAMPLE_RATE
        passes += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=REPO / ".carry" / "audio")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    speech, voices, n_jfk, sr = build(args.minutes, args.seed)
    stem = args.out / f"speech-{int(args.minutes)}min"
    wav = stem.with_suffix(".wav")
    speech.write(wav)
    subprocess.run(["sox", str(wav), "-b", "16", str(stem.with_suffix(".flac"))], check=True)
    wav.unlink()
    stem.with_suffix(".txt").write_text(speech.text + "\n", encoding="utf-8")
    meta = {"duration_secs": round(speech.duration_secs, 3), "voices": list(voices), "jfk_repeats": n_jfk,
            "clips": len(speech.spans), "words": len(speech.text.split()), "sample_rate": sr,
            "silence_frac": round(float(np.mean(np.abs(speech.pcm) < 1e-4)), 3)}
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    # each clip's span and text: bench/gpu.py's many-jobs case cuts jobs at the pauses between clips
    spans = [[round(s, 3), round(e, 3), t] for (s, e), t in zip(speech.spans, speech.texts)]
    stem.with_suffix(".spans.json").write_text(json.dumps(spans))
    print(json.dumps(meta), file=sys.stderr)
    print(stem.with_suffix(".flac"))


if __name__ == "__main__":
    main()
