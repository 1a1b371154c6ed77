"""Transcript writers: JSON (the contract's shapes), SRT, WebVTT and plain text."""

from __future__ import annotations

import json
from collections.abc import Callable

from whisperop.core.models import Segment, TranscriptionResult

FORMATS = ("json", "srt", "vtt", "txt")


def _clock(secs: float, sep: str) -> str:
    ms = int(round(max(secs, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_json(result: TranscriptionResult) -> str:
    doc = {
        "language": result.language,
        "duration_secs": result.duration_secs,
        "segments": [s.model_dump(mode="json") for s in result.segments],
        # what repetition handling removed and which chunks ran over their time limit: nothing vanishes silently
        "removed": [r.model_dump(mode="json") for r in result.removed],
        "degraded_chunks": [d.model_dump(mode="json") for d in result.degraded_chunks],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def to_srt(result: TranscriptionResult) -> str:
    blocks = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{_cue_text(s)}\n"
        for i, s in enumerate(result.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(result: TranscriptionResult) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{_cue_text(s)}\n" for s in result.segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(result: TranscriptionResult) -> str:
    return "".join(s.text.strip() + "\n" for s in result.segments)


def _cue_text(seg: Segment) -> str:
    # A blank line ends a cue in both SRT and WebVTT; "-->" would start a timing line.
    return " ".join(seg.text.split()).replace("-->", "->")


WRITERS: dict[str, Callable[[TranscriptionResult], str]] = {"json": to_json, "srt": to_srt, "vtt": to_vtt, "txt": to_txt}


def render(result: TranscriptionResult, fmt: str) -> str:
    try:
        return WRITERS[fmt](result)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}") from None
