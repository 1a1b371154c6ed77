"""Repetition decided by the audio: constructed speech (espeak-ng + sox) and
silence, decoded by the real decoder into the energy map the engine uses.

Segments are constructed where whisper's own output would be luck (a loop
over silence cannot be ordered from whisper base); the 7x sentence and the
chant also run through the real base weights (``slow``)."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest

from whisperop.core.models import Segment, Word
from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import decode_audio
from whisperop.inference.engine import TranscribeRequest, WhisperEngine
from whisperop.inference.normalize import SpeechMap, normalize
from tests.support.audio import SAMPLE_RATE, speech_wav, write_wav

SENTENCE = ("When the meeting starts tomorrow morning, please bring the quarterly report "
            "and the signed contracts to the second floor office")
PAUSE_SECS = 2.0


def _pcm(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767


def _silence(secs: float) -> np.ndarray:
    return np.zeros(int(secs * SAMPLE_RATE), np.float32)


def _speech_map(path: Path) -> SpeechMap:
    with decode_audio(path) as audio:
        return SpeechMap.from_frame_db(audio.frame_db)


def seg(start: float, end: float, text: str, words: list[Word] | None = None) -> Segment:
    return Segment(index=0, start=start, end=end, text=text, words=words or [])


@pytest.fixture(scope="module")
def sentence_7x(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """The sentence said 7 times with 2 s pauses; returns the file and each utterance's span."""
    d = tmp_path_factory.mktemp("rep")
    one = _pcm(speech_wav(d / "one.wav", SENTENCE))
    parts, spans, t = [_silence(0.5)], [], 0.5
    for _ in range(7):
        parts += [one, _silence(PAUSE_SECS)]
        spans.append((t, t + one.size / SAMPLE_RATE))
        t += one.size / SAMPLE_RATE + PAUSE_SECS
    return write_wav(d / "seven.wav", np.concatenate(parts)), spans


@pytest.fixture(scope="module")
def hello_then_silence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """'Hello everyone' (~1 s) then 30 s of digital silence."""
    d = tmp_path_factory.mktemp("sil")
    return write_wav(d / "hello.wav", np.concatenate([_pcm(speech_wav(d / "h.wav", "Hello everyone")), _silence(30)]))


@pytest.fixture(scope="module")
def chant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """'no' spoken four times with 0.4 s pauses, then 5 s of silence; returns each 'no's span."""
    d = tmp_path_factory.mktemp("chant")
    no = _pcm(speech_wav(d / "no.wav", "no"))
    parts, spans, t = [_silence(0.5)], [], 0.5
    for _ in range(4):
        parts += [no, _silence(0.4)]
        spans.append((t, t + no.size / SAMPLE_RATE))
        t += no.size / SAMPLE_RATE + 0.4
    parts.append(_silence(5))
    return write_wav(d / "chant.wav", np.concatenate(parts)), spans


def test_seven_spoken_repetitions_are_all_kept(sentence_7x: tuple[Path, list[tuple[float, float]]]) -> None:
    path, spans = sentence_7x
    # whisper's segments tile the audio: each touches the next (the old rule dropped them)
    bounds = [0.3] + [e + PAUSE_SECS / 2 for _, e in spans]
    segs = [seg(bounds[i], bounds[i + 1], SENTENCE + ".") for i in range(7)]
    out = normalize(segs, _speech_map(path))
    assert len(out.segments) == 7 and out.removed == []
    assert all(s.suspect is None for s in out.segments)


def test_repeats_over_silence_collapse_and_are_recorded(hello_then_silence: Path) -> None:
    segs = [seg(0.0, 1.2, "Hello everyone."), seg(5, 7, "Thank you."), seg(9, 11, "Thank you."), seg(14, 16, "thank you")]
    out = normalize(segs, _speech_map(hello_then_silence))
    assert [s.text for s in out.segments] == ["Hello everyone.", "Thank you."]
    assert [(r.start, r.text, r.reason) for r in out.removed] == [
        (9, "Thank you.", "repeat_over_silence"), (14, "thank you", "repeat_over_silence")]
    assert out.segments[0].suspect is None
    assert out.segments[1].suspect is not None and "no_speech" in out.segments[1].suspect  # flagged, not removed


def test_a_repeat_over_the_previous_span_is_removed(sentence_7x: tuple[Path, list[tuple[float, float]]]) -> None:
    path, spans = sentence_7x
    s, e = spans[0]
    out = normalize([seg(s, e, SENTENCE), seg(s + 1.0, e, SENTENCE)], _speech_map(path))
    assert len(out.segments) == 1 and [r.reason for r in out.removed] == ["repeat_overlapping"]


def _no_words(spans: list[tuple[float, float]]) -> list[Word]:
    return [Word(text="no,", start=round(s, 2), end=round(e, 2), probability=0.9) for s, e in spans]


def test_a_spoken_chant_is_kept(chant: tuple[Path, list[tuple[float, float]]]) -> None:
    path, spans = chant
    words = _no_words(spans)
    out = normalize([seg(spans[0][0], spans[-1][1], "no, no, no, no,", words)], _speech_map(path))
    assert out.segments[0].text == "no, no, no, no," and len(out.segments[0].words) == 4
    assert out.removed == []


def test_a_loop_over_silence_inside_one_segment_collapses(chant: tuple[Path, list[tuple[float, float]]]) -> None:
    path, spans = chant
    first = spans[0]
    # the same text, but only the first 'no' is over speech: whisper kept looping into the silence after the chant
    fake = [first] + [(spans[-1][1] + 1.0 + i, spans[-1][1] + 1.5 + i) for i in range(3)]
    out = normalize([seg(fake[0][0], fake[-1][1], "no, no, no, no,", _no_words(fake))], _speech_map(path))
    assert out.segments[0].text == "no,"
    assert [r.reason for r in out.removed] == ["loop_in_span"] * 3
    assert [r.start for r in out.removed] == [round(s, 2) for s, _ in fake[1:]]


def test_a_loop_piled_on_one_instant_collapses(chant: tuple[Path, list[tuple[float, float]]]) -> None:
    """Whisper's looping tokens often share one timestamp: no span of their own."""
    path, spans = chant
    s, e = spans[0]
    words = [Word(text="no,", start=s, end=e, probability=0.9)] + [Word(text="no,", start=e, end=e, probability=0.9)] * 4
    out = normalize([seg(s, e, "no, no, no, no, no,", words)], _speech_map(path))
    assert out.segments[0].text == "no," and len(out.removed) == 4


def test_rolling_partials_are_merged_and_recorded(sentence_7x: tuple[Path, list[tuple[float, float]]]) -> None:
    path, spans = sentence_7x
    s, e = spans[0]
    out = normalize([seg(s, s + 1, "When the meeting"), seg(s + 0.5, e, SENTENCE)], _speech_map(path))
    assert [x.text for x in out.segments] == [SENTENCE] and out.segments[0].start == s
    assert [(r.text, r.reason) for r in out.removed] == [("When the meeting", "partial")]


def test_low_probability_and_high_compression_flag_a_segment(sentence_7x: tuple[Path, list[tuple[float, float]]]) -> None:
    path, spans = sentence_7x
    s, e = spans[0]
    text = "please bring the quarterly report to the second floor office, " * 3  # 3 repeats: no loop, but compresses 2.7x
    words = [Word(text=w, start=s, end=e, probability=0.2) for w in text.split()]
    out = normalize([seg(s, e, text, words)], _speech_map(path))
    assert out.segments[0].suspect == ["low_probability", "high_compression"]


def _count(text: str, phrase: str) -> int:
    norm = lambda t: " ".join(re.sub(r"[^\w\s]", " ", t.lower()).split())  # noqa: E731
    return norm(text).count(norm(phrase))


@pytest.mark.slow
def test_real_model_keeps_seven_repetitions_and_the_chant(base_model: Path, sentence_7x: tuple[Path, list[tuple[float, float]]],
                                                          tmp_path: Path) -> None:
    engine = WhisperEngine(base_model, EngineSettings(USE_GPU=False))
    try:
        path, _ = sentence_7x
        result = engine.transcribe_file(path, TranscribeRequest(language="en"))
        text = " ".join(s.text for s in result.segments)
        # whisper base writes 'contract' for 'contracts'; the phrase before it is exact
        assert _count(text, "please bring the quarterly report") == 7, text
        assert result.removed == []
        chant_path = write_wav(tmp_path / "chant.wav", np.concatenate([
            _silence(1.0), _pcm(speech_wav(tmp_path / "c.wav", "Listen to me. No, no, no, no. I said it clearly.")), _silence(1.0)]))
        result = engine.transcribe_file(chant_path, TranscribeRequest(language="en"))
        text = " ".join(s.text for s in result.segments)
        assert _count(text, "no no no no") == 1, text
    finally:
        engine.close()
