"""A strict SRT / WebVTT parser for tests: every block must be well formed, or it raises.

SRT: numbered blocks from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, one or more text
lines, blocks separated by one blank line. WebVTT: the ``WEBVTT`` header, a
blank line, then cues (optional identifier line) with ``.`` as the millisecond
separator. Cues must not end before they start nor start before the previous
one started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")
_VTT_TIME = re.compile(r"^(\d{2,}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2,}):(\d{2}):(\d{2})\.(\d{3})(?: .*)?$")


class SubtitleError(ValueError):
    pass


@dataclass(frozen=True)
class ParsedCue:
    start: float
    end: float
    lines: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def _secs(g: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in g)
    if m > 59 or s > 59:
        raise SubtitleError(f"bad clock {g}")
    return h * 3600 + m * 60 + s + ms / 1000


def _blocks(text: str) -> list[list[str]]:
    if "\r" in text:
        raise SubtitleError("carriage return in output")
    if not text.endswith("\n"):
        raise SubtitleError("does not end with a newline")
    body = text.rstrip("\n")
    return [b.split("\n") for b in body.split("\n\n")] if body else []


def _cue(time_re: re.Pattern[str], timing: str, lines: list[str], prev: ParsedCue | None) -> ParsedCue:
    m = time_re.match(timing)
    if not m:
        raise SubtitleError(f"bad timing line {timing!r}")
    start, end = _secs(m.groups()[:4]), _secs(m.groups()[4:8])
    if end < start:
        raise SubtitleError(f"cue ends before it starts: {timing!r}")
    if prev is not None and start < prev.start:
        raise SubtitleError(f"cue starts before the previous one: {timing!r}")
    if not lines or any(not ln.strip() or "-->" in ln for ln in lines):
        raise SubtitleError(f"bad cue text {lines!r}")
    return ParsedCue(start, end, lines)


def parse_srt(text: str) -> list[ParsedCue]:
    cues: list[ParsedCue] = []
    for i, block in enumerate(_blocks(text), start=1):
        if len(block) < 3 or block[0] != str(i):
            raise SubtitleError(f"block {i} malformed: {block!r}")
        cues.append(_cue(_SRT_TIME, block[1], block[2:], cues[-1] if cues else None))
    return cues


def parse_vtt(text: str) -> list[ParsedCue]:
    blocks = _blocks(text)
    if not blocks or blocks[0][0].split(" ")[0] != "WEBVTT" or len(blocks[0]) != 1:
        raise SubtitleError("missing WEBVTT header")
    cues: list[ParsedCue] = []
    for block in blocks[1:]:
        if "-->" not in block[0]:
            block = block[1:]  # cue identifier
        if len(block) < 2:
            raise SubtitleError(f"cue malformed: {block!r}")
        cues.append(_cue(_VTT_TIME, block[0], block[1:], cues[-1] if cues else None))
    return cues
