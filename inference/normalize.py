"""Conservative clean-up of whisper's segments before a result is stored.

Three failure patterns of whisper decoding are repaired, and nothing else:

1. **Rolling partial hypotheses**: a segment that repeats the previous one and
   adds a few words ("And so my" → "And so my fellow Americans") replaces it.
2. **Consecutive duplicates**: the same text again, overlapping or touching
   the previous segment in time, or the same text three or more times in a
   row, is dropped (two separate identical sentences with a pause stay).
3. **Repetition loops** inside a segment ("Thank you. Thank you. Thank you.
   Thank you.") collapse to one occurrence when a unit of up to 12 words
   repeats at least 4 times back to back.

Comparisons ignore case, punctuation and spacing. Indices are renumbered.
"""

from __future__ import annotations

import re

from whisperop.core.models import Segment

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
TOUCH_SECS = 0.5
MIN_LOOP_REPEATS = 4
MAX_LOOP_UNIT_WORDS = 12
MIN_DUPLICATE_RUN = 3


def _norm_words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


def _touches(prev: Segment, cur: Segment) -> bool:
    return cur.start <= prev.end + TOUCH_SECS


def collapse_loop(seg: Segment) -> Segment:
    """Collapse a unit of words repeated ``MIN_LOOP_REPEATS``+ times in a segment."""
    raw_words = seg.text.split()
    norm = [" ".join(_norm_words(w)) for w in raw_words]
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
                loop_end = begin + reps * unit
                kept_text = " ".join(raw_words[: begin + unit] + raw_words[loop_end:])
                words = seg.words
                if len(words) == n:
                    words = words[: begin + unit] + words[loop_end:]
                return collapse_loop(seg.model_copy(update={"text": kept_text, "words": words}))
    return seg


def normalize_segments(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    run = 1  # length of the current run of identical texts
    for seg in segments:
        seg = collapse_loop(seg)
        words = _norm_words(seg.text)
        if not words:
            continue
        if out:
            prev = out[-1]
            prev_words = _norm_words(prev.text)
            if words == prev_words:
                run += 1
                if _touches(prev, seg) or run >= MIN_DUPLICATE_RUN:
                    continue
                out.append(seg)
                continue
            if len(words) > len(prev_words) and words[: len(prev_words)] == prev_words and _touches(prev, seg):
                out[-1] = seg.model_copy(update={"start": min(prev.start, seg.start)})
                run = 1
                continue
        run = 1
        out.append(seg)
    return [s.model_copy(update={"index": i}) for i, s in enumerate(out)]
