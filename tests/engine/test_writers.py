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
