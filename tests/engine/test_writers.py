"""Output formats: JSON shapes of the contract, SRT, WebVTT, text."""

from __future__ import annotations

import json

import pytest

from whisperop.core.models import Segment, TranscriptionResult, Word
from whisperop.inference.writers import render

RESULT = TranscriptionResult(
    language="en",
    duration_secs=3725.5,
    segments=[
        Segment(index=0, start=0.0, end=1.5, text=" Hello, world.", words=[Word(text="Hello,", start=0.0, end=0.7, probability=0.9)]),
        Segment(index=1, start=3723.25, end=3725.5, text="Last --> line"),
    ],
)


def test_json_has_contract_shapes() -> None:
    doc = json.loads(render(RESULT, "json"))
    assert doc["language"] == "en" and doc["duration_secs"] == 3725.5
    assert set(doc["segments"][0]) == {"index", "start", "end", "text", "words", "suspect"}
    assert doc["removed"] == [] and doc["degraded_chunks"] == []
    assert set(doc["segments"][0]["words"][0]) == {"text", "start", "end", "probability"}


def test_srt() -> None:
    assert render(RESULT, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello, world.\n\n2\n01:02:03,250 --> 01:02:05,500\nLast -> line\n"
    )


def test_vtt() -> None:
    out = render(RESULT, "vtt")
    assert out.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello, world.\n")
    assert "01:02:03.250 --> 01:02:05.500\nLast -> line\n" in out


def test_txt() -> None:
    assert render(RESULT, "txt") == "Hello, world.\nLast --> line\n"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(RESULT, "docx")


# ── readable cues ───────────────────────────────────────────────────────────

from whisperop.inference.writers import CueOptions, cues  # noqa: E402

from tests.support.subtitles import parse_srt, parse_vtt  # noqa: E402

_LONG_TEXT = ("And so my fellow Americans ask not what your country can do for you "
              "ask what you can do for your country and then some more words to fill a long segment")


def _long_segment() -> Segment:
    """One 24 s whisper segment of 29 words, each 0.6 s long with 0.2 s gaps (word timings exact)."""
    words = [Word(text=w, start=round(i * 0.8, 3), end=round(i * 0.8 + 0.6, 3), probability=0.9)
             for i, w in enumerate(_LONG_TEXT.split())]
    return Segment(index=0, start=0.0, end=words[-1].end, text=" " + _LONG_TEXT, words=words)


@pytest.mark.parametrize("opts", [CueOptions(), CueOptions(max_line_chars=20, max_lines=1, max_cue_secs=3.0),
                                  CueOptions(max_line_chars=60, max_lines=3, max_cue_secs=30.0)])
def test_long_segment_is_cut_into_readable_cues_on_word_times(opts: CueOptions) -> None:
    seg = _long_segment()
    result = TranscriptionResult(language="en", duration_secs=seg.end, segments=[seg])
    got = cues(result, opts)
    starts, ends = {w.start for w in seg.words}, {w.end for w in seg.words}
    assert len(got) > 1 if opts.max_cue_secs < 24 else True
    for c in got:
        assert len(c.lines) <= opts.max_lines and all(len(ln) <= opts.max_line_chars for ln in c.lines)
        assert c.end - c.start <= opts.max_cue_secs
        assert c.start in starts and c.end in ends  # exact word boundaries
    assert " ".join(" ".join(c.lines) for c in got) == _LONG_TEXT  # no word lost or repeated
    srt, vtt = parse_srt(render(result, "srt", opts)), parse_vtt(render(result, "vtt", opts))
    assert [c.text for c in srt] == [c.text for c in vtt] == [" ".join(c.lines) for c in got]
    assert [(c.start, c.end) for c in srt] == [(c.start, c.end) for c in got]


def test_segment_without_matching_words_shares_its_time_by_characters() -> None:
    seg = Segment(index=0, start=10.0, end=22.0, text=_LONG_TEXT)
    got = cues(TranscriptionResult(language="en", duration_secs=22.0, segments=[seg]))
    assert got[0].start == 10.0 and abs(got[-1].end - 22.0) < 1e-6
    assert all(c.end - c.start <= 7.0 for c in got) and len(got) >= 2
    assert all(a.end <= b.start + 1e-9 for a, b in zip(got, got[1:]))


def test_cue_options_are_bounded() -> None:
    for bad in ({"max_line_chars": 5}, {"max_lines": 0}, {"max_cue_secs": 0.1}):
        with pytest.raises(ValueError):
            CueOptions(**bad)  # type: ignore[arg-type]


def test_a_segment_does_not_end_on_a_one_word_orphan_cue() -> None:
    # jfk.wav's first segment as the base model times it: 7.2 s, one word over the 7 s limit
    text = "And so my fellow Americans ask not what your country can do for you,"
    words = [Word(text=w, start=round(0.32 + i * 0.52, 2), end=round(0.32 + i * 0.52 + 0.37, 2), probability=0.9)
             for i, w in enumerate(text.split())]
    seg = Segment(index=0, start=0.32, end=words[-1].end, text=text, words=words)
    got = cues(TranscriptionResult(language="en", duration_secs=8.0, segments=[seg]))
    assert [" ".join(c.lines) for c in got] == ["And so my fellow Americans ask not", "what your country can do for you,"]
    assert got[1].start == words[7].start and got[1].end == words[-1].end
