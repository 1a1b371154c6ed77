"""Repetition handling: decided by the audio, and never silent.

Whisper's hallucination loops and a speaker who really repeats themselves
look alike in text; they do not look alike in the audio. A real repetition
has speech energy under it and its own time span; a loop repeats inside one
span, over silence, or over the span of the segment before it. So with the
audio's energy envelope (:class:`SpeechMap`, from the decoder's 10 ms
frames) the rules are:

1. **Rolling partial hypotheses**: a segment that repeats the previous one
   and adds words ("And so my" → "And so my fellow Americans"), touching it
   in time, replaces it (the shorter one is recorded as ``partial``).
2. **The same text again** (case, punctuation and spacing ignored) is kept
   when its span does not overlap the previous segment and carries at least
   ``MIN_SPEECH_SECS`` of speech; otherwise it is removed
   (``repeat_overlapping`` / ``repeat_over_silence``). Seven identical
   sentences with pauses are seven segments.
3. **Loops inside one segment** (a unit of up to 12 words back to back at
   least 4 times): each repetition is kept when its words have their own,
   non-overlapping time span with speech under it ("no, no, no, no" spoken);
   the repetitions without speech of their own collapse (``loop_in_span``).
4. **Suspect segments** are flagged, never removed: ``suspect`` lists the
   evidence (no speech under the span; mean word probability < 0.4; zlib
   compression ratio > 2.4, whisper's own threshold for a looping decode).
   One piece of evidence other than ``no_speech`` is not enough: a real
   chant compresses well, quiet speech has low probabilities.

Every removal is returned in :class:`Normalized` ``.removed`` with its times
and reason; the Job keeps the count. Without a speech map (text only, e.g. a
caller that has no audio) the conservative text rules of the first version
apply: a duplicate touching the previous segment, the third identical
segment in a row, and a 4× loop inside a segment are removed.

Indices are renumbered.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from whisperop.core.models import RemovedText, Segment, Word

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
TOUCH_SECS = 0.5
MIN_LOOP_REPEATS = 4
MAX_LOOP_UNIT_WORDS = 12
MIN_DUPLICATE_RUN = 3  # text-only fallback
#: Speech a repeated segment needs under its own span to count as said again.
#: A spoken "no" (espeak-ng, 175 wpm) is ~0.25 s of voiced frames.
MIN_SPEECH_SECS = 0.15
#: Speech each repetition of an in-segment loop needs under its words.
MIN_REPEAT_SPEECH_SECS = 0.08
#: Overlap tolerated between a segment and the one before it (whisper's
#: timestamps are 10 ms tokens, often a frame late).
OVERLAP_SECS = 0.1
LOW_PROBABILITY = 0.4
HIGH_COMPRESSION = 2.4
FRAME_SECS = 0.01


class SpeechMap:
    """Which 10 ms frames of the audio carry speech energy.

    Built from the decoder's frame levels and the chunker's adaptive silence
    threshold, so "speech" means the same thing to both."""

    def __init__(self, voiced: np.ndarray) -> None:
        self._cum = np.concatenate([[0], np.cumsum(voiced.astype(np.int64))])

    @classmethod
    def from_frame_db(cls, frame_db: np.ndarray) -> "SpeechMap":
        from whisperop.inference.chunking import silence_threshold_db

        return cls(frame_db >= silence_threshold_db(frame_db))

    def speech_secs(self, start: float, end: float) -> float:
        """Seconds of voiced frames in ``[start, end)``."""
        n = self._cum.size - 1
        lo = min(max(int(start / FRAME_SECS), 0), n)
        hi = min(max(int(np.ceil(end / FRAME_SECS)), lo), n)
        return float(self._cum[hi] - self._cum[lo]) * FRAME_SECS


@dataclass
class Normalized:
    segments: list[Segment]
    removed: list[RemovedText] = field(default_factory=list)


def _norm_words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


def _touches(prev: Segment, cur: Segment) -> bool:
    return cur.start <= prev.end + TOUCH_SECS


def _removed(start: float, end: float, text: str, reason: str) -> RemovedText:
    return RemovedText.model_validate({"start": start, "end": end, "text": text, "reason": reason})


def _find_loop(norm: list[str]) -> tuple[int, int, int] | None:
    """``(begin, unit, reps)`` of the first unit repeated ``MIN_LOOP_REPEATS``+ times."""
    n = len(norm)
    for unit in range(1, min(MAX_LOOP_UNIT_WORDS, n // MIN_LOOP_REPEATS) + 1):
        for begin in range(0, n - unit * MIN_LOOP_REPEATS + 1):
            pattern = norm[begin : begin + unit]
            if not any(pattern):
                continue
            reps = 1
            while norm[begin + reps * unit : begin + (reps + 1) * unit] == pattern:
                reps += 1
            if reps >= MIN_LOOP_REPEATS:
                return begin, unit, reps
    return None


def _spoken_repeats(words: list[Word], begin: int, unit: int, reps: int, speech: SpeechMap) -> list[bool]:
    """Per repetition: does it have its own span (after the previous kept one) with speech under it?"""
    kept: list[bool] = []
    last_end = -1.0
    for r in range(reps):
        ws = words[begin + r * unit : begin + (r + 1) * unit]
        start, end = ws[0].start, ws[-1].end
        own = r == 0 or (end > start and start >= last_end - OVERLAP_SECS)
        ok = own and speech.speech_secs(start, end) >= MIN_REPEAT_SPEECH_SECS
        kept.append(r == 0 or ok)
        if ok or r == 0:
            last_end = end
    return kept


def collapse_loop(seg: Segment, speech: SpeechMap | None = None, removed: list[RemovedText] | None = None) -> Segment:
    """Collapse the repetitions of a loop inside ``seg`` that the audio does not back.

    Without ``speech`` (or without one word timing per word) every repetition
    after the first collapses, as in the text-only version."""
    raw_words = seg.text.split()
    norm = [" ".join(_norm_words(w)) for w in raw_words]
    found = _find_loop(norm)
    if found is None:
        return seg
    begin, unit, reps = found
    loop_end = begin + reps * unit
    aligned = len(seg.words) == len(raw_words)
    if speech is not None and aligned:
        keep = _spoken_repeats(seg.words, begin, unit, reps, speech)
    else:
        keep = [True] + [False] * (reps - 1)
    idx = list(range(begin + unit))
    for r in range(1, reps):
        span = range(begin + r * unit, begin + (r + 1) * unit)
        if keep[r]:
            idx.extend(span)
        elif removed is not None:
            ws = seg.words[span.start : span.stop] if aligned else []
            start, end = (ws[0].start, ws[-1].end) if ws else (seg.start, seg.end)
            removed.append(_removed(start, end, " ".join(raw_words[span.start : span.stop]), "loop_in_span"))
    tail = list(range(loop_end, len(raw_words)))
    if all(keep):
        # every repetition is spoken: look for a loop in the rest only
        rest = seg.model_copy(update={"text": " ".join(raw_words[loop_end:]), "words": seg.words[loop_end:] if aligned else []})
        rest = collapse_loop(rest, speech, removed) if tail else rest
        text = " ".join(raw_words[:loop_end] + ([rest.text] if rest.text else []))
        words = (seg.words[:loop_end] + rest.words) if aligned else seg.words
        return seg.model_copy(update={"text": text, "words": words})
    idx += tail
    kept_text = " ".join(raw_words[i] for i in idx)
    words = [seg.words[i] for i in idx] if aligned else seg.words
    return collapse_loop(seg.model_copy(update={"text": kept_text, "words": words}), speech, removed)


def suspect_evidence(seg: Segment, speech: SpeechMap | None) -> list[str] | None:
    """The hallucination evidence for ``seg``, or None when it is not suspect."""
    evidence: list[str] = []
    if speech is not None and speech.speech_secs(seg.start, seg.end) < MIN_SPEECH_SECS:
        evidence.append("no_speech")
    if seg.words and float(np.mean([w.probability for w in seg.words])) < LOW_PROBABILITY:
        evidence.append("low_probability")
    data = seg.text.strip().encode("utf-8")
    if len(data) >= 24 and len(data) / len(zlib.compress(data)) > HIGH_COMPRESSION:
        evidence.append("high_compression")
    if "no_speech" in evidence or len(evidence) >= 2:
        return evidence
    return None


def _said_again(prev: Segment, seg: Segment, speech: SpeechMap) -> str | None:
    """None when ``seg`` (same text as ``prev``) was said again; else why it is removed."""
    if seg.start < prev.end - OVERLAP_SECS:
        return "repeat_overlapping"
    if speech.speech_secs(seg.start, seg.end) < MIN_SPEECH_SECS:
        return "repeat_over_silence"
    return None


def normalize(segments: list[Segment], speech: SpeechMap | None = None) -> Normalized:
    """Apply the rules of the module docstring; ``speech=None`` is the text-only fallback."""
    out: list[Segment] = []
    removed: list[RemovedText] = []
    run = 1  # text-only fallback: length of the current run of identical texts
    for seg in segments:
        seg = collapse_loop(seg, speech, removed)
        words = _norm_words(seg.text)
        if not words:
            continue
        if out:
            prev = out[-1]
            prev_words = _norm_words(prev.text)
            if words == prev_words:
                run += 1
                if speech is not None:
                    why = _said_again(prev, seg, speech)
                elif _touches(prev, seg):
                    why = "repeat_overlapping"
                else:
                    why = "repeat_over_silence" if run >= MIN_DUPLICATE_RUN else None
                if why is not None:
                    removed.append(_removed(seg.start, seg.end, seg.text, why))
                    continue
                out.append(seg)
                continue
            if len(words) > len(prev_words) and words[: len(prev_words)] == prev_words and _touches(prev, seg):
                removed.append(_removed(prev.start, prev.end, prev.text, "partial"))
                out[-1] = seg.model_copy(update={"start": min(prev.start, seg.start)})
                run = 1
                continue
        run = 1
        out.append(seg)
    final = [s.model_copy(update={"index": i, "suspect": suspect_evidence(s, speech)}) for i, s in enumerate(out)]
    return Normalized(final, removed)


def normalize_segments(segments: list[Segment], speech: SpeechMap | None = None) -> list[Segment]:
    """The segments of :func:`normalize` (what was removed is dropped from view)."""
    return normalize(segments, speech).segments
