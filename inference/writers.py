"""Transcript writers: JSON (the contract's shapes), SRT, WebVTT and plain text.

Subtitles are cut into *readable* cues rather than one cue per whisper
segment: a whisper segment is often 10-30 s and 200+ characters (jfk.wav's
first one is 7.6 s / 70 characters), far beyond what a viewer reads in one
look. :class:`CueOptions` bounds characters per line, lines per cue and
seconds per cue (defaults: 42 / 2 / 7 s, the common broadcast guideline).
When a segment carries word timings whose text matches the segment, cues
start and end exactly on word boundaries; otherwise the segment's time is
shared out in proportion to the characters of each cue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from whisperop.core.models import Segment, TranscriptionResult, Word

FORMATS = ("json", "srt", "vtt", "txt")


@dataclass(frozen=True)
class CueOptions:
    """Limits of one subtitle cue. A single word longer than a line gets a line of its own."""

    max_line_chars: int = 42
    max_lines: int = 2
    max_cue_secs: float = 7.0

    def __post_init__(self) -> None:
        if not 10 <= self.max_line_chars <= 500:
            raise ValueError("max_line_chars must be between 10 and 500")
        if not 1 <= self.max_lines <= 10:
            raise ValueError("max_lines must be between 1 and 10")
        if not 0.5 <= self.max_cue_secs <= 600:
            raise ValueError("max_cue_secs must be between 0.5 and 600")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def _clock(secs: float, sep: str) -> str:
    ms = int(round(max(secs, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _clean(text: str) -> str:
    # A blank line ends a cue in both SRT and WebVTT; "-->" would start a timing line.
    return " ".join(text.split()).replace("-->", "->")


def _timed_words(seg: Segment) -> list[Word]:
    """The segment's words with times: its own when they spell its text, else an even share
    of the segment's duration by characters (so every cue still gets a sensible time)."""
    text = " ".join(seg.text.split())
    if seg.words and " ".join(w.text.strip() for w in seg.words) == text:
        return [w for w in seg.words if w.text.strip()]
    tokens = text.split()
    total = sum(len(t) + 1 for t in tokens) or 1
    span = max(seg.end - seg.start, 0.0)
    out, t = [], seg.start
    for tok in tokens:
        d = span * (len(tok) + 1) / total
        out.append(Word(text=tok, start=t, end=t + d, probability=1.0))
        t += d
    return out


def _wrap(words: list[str], width: int) -> list[str]:
    lines: list[str] = []
    for w in words:
        if lines and len(lines[-1]) + 1 + len(w) <= width:
            lines[-1] += " " + w
        else:
            lines.append(w)
    return lines


def _fits(words: list[Word], opts: CueOptions) -> bool:
    if len(_wrap([_clean(w.text) for w in words], opts.max_line_chars)) > opts.max_lines:
        return False
    return len(words) == 1 or words[-1].end - words[0].start <= opts.max_cue_secs


def segment_cues(seg: Segment, opts: CueOptions) -> list[Cue]:
    """Greedy: add words to the cue while its wrapped text and duration stay within ``opts``; then
    even out the segment's last two cues, so a segment never ends on a one-word orphan cue."""
    groups: list[list[Word]] = [[]]
    for w in _timed_words(seg):
        if groups[-1] and not _fits(groups[-1] + [w], opts):
            groups.append([])
        groups[-1].append(w)
    if len(groups) >= 2:
        _balance(groups[-2], groups[-1], opts)
    return [_cue(g, opts) for g in groups if g]


def _chars(words: list[Word]) -> int:
    return sum(len(w.text) + 1 for w in words)


def _balance(prev: list[Word], last: list[Word], opts: CueOptions) -> None:
    """Move words from the end of ``prev`` to ``last`` while ``last`` stays the shorter one and fits.
    jfk.wav's first segment (7.2 s) otherwise ends on the cue "you," of 0.37 s."""
    while len(prev) > 1:
        moved = [prev[-1]] + last
        if _chars(moved) > _chars(prev[:-1]) or not _fits(moved, opts):
            return
        last.insert(0, prev.pop())


def _cue(words: list[Word], opts: CueOptions) -> Cue:
    return Cue(words[0].start, max(words[-1].end, words[0].start), tuple(_wrap([_clean(w.text) for w in words], opts.max_line_chars)))


def cues(result: TranscriptionResult, opts: CueOptions | None = None) -> list[Cue]:
    """Every segment's cues, in time order; a cue never starts before the previous one ends."""
    opts = opts or CueOptions()
    out: list[Cue] = []
    for seg in result.segments:
        for c in segment_cues(seg, opts):
            if out and c.start < out[-1].end:
                c = Cue(out[-1].end, max(c.end, out[-1].end), c.lines)
            out.append(c)
    return out


def to_json(result: TranscriptionResult, opts: CueOptions | None = None) -> str:
    doc = {
        "language": result.language,
        "duration_secs": result.duration_secs,
        "segments": [s.model_dump(mode="json") for s in result.segments],
        # what repetition handling removed and which chunks ran over their time limit: nothing vanishes silently
        "removed": [r.model_dump(mode="json") for r in result.removed],
        "degraded_chunks": [d.model_dump(mode="json") for d in result.degraded_chunks],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def to_srt(result: TranscriptionResult, opts: CueOptions | None = None) -> str:
    blocks = [
        f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n" + "\n".join(c.lines) + "\n"
        for i, c in enumerate(cues(result, opts), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(result: TranscriptionResult, opts: CueOptions | None = None) -> str:
    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n" + "\n".join(c.lines) + "\n" for c in cues(result, opts)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(result: TranscriptionResult, opts: CueOptions | None = None) -> str:
    return "".join(s.text.strip() + "\n" for s in result.segments)


WRITERS: dict[str, Callable[[TranscriptionResult, CueOptions | None], str]] = {
    "json": to_json, "srt": to_srt, "vtt": to_vtt, "txt": to_txt,
}

MEDIA_TYPES = {
    "json": "application/json",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
}


def render(result: TranscriptionResult, fmt: str, opts: CueOptions | None = None) -> str:
    try:
        writer = WRITERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}") from None
    return writer(result, opts)
