"""Segment normalisation on constructed cases: repair the known failure
patterns, leave legitimate speech alone."""

from __future__ import annotations

from whisperop.core.models import Segment, Word
from whisperop.inference.normalize import collapse_loop, normalize_segments


def seg(start: float, end: float, text: str) -> Segment:
    return Segment(index=99, start=start, end=end, text=text)


def texts(segs: list[Segment]) -> list[str]:
    return [s.text for s in segs]


def test_clean_segments_pass_through_reindexed() -> None:
    out = normalize_segments([seg(0, 2, "Hello there."), seg(2.5, 4, "How are you?")])
    assert texts(out) == ["Hello there.", "How are you?"]
    assert [s.index for s in out] == [0, 1]


def test_rolling_partial_hypothesis_chain_keeps_the_longest() -> None:
    out = normalize_segments([seg(0, 1, "And so my"), seg(0.5, 2, "And so my fellow"), seg(1, 4, "and so, my fellow Americans")])
    assert texts(out) == ["and so, my fellow Americans"]
    assert out[0].start == 0


def test_extension_far_apart_in_time_is_kept() -> None:
    out = normalize_segments([seg(0, 1, "Yes"), seg(30, 31, "Yes indeed")])
    assert texts(out) == ["Yes", "Yes indeed"]


def test_touching_duplicate_is_dropped() -> None:
    out = normalize_segments([seg(0, 2, "Thank you."), seg(2.1, 3, "thank you")])
    assert texts(out) == ["Thank you."]


def test_two_separate_identical_sentences_are_kept() -> None:
    out = normalize_segments([seg(0, 1, "No."), seg(10, 11, "No.")])
    assert texts(out) == ["No.", "No."]


def test_three_or_more_identical_in_a_row_collapse_to_two() -> None:
    out = normalize_segments([seg(i * 10, i * 10 + 1, "Thank you.") for i in range(6)] + [seg(70, 72, "Goodbye.")])
    assert texts(out) == ["Thank you.", "Thank you.", "Goodbye."]


def test_repetition_loop_inside_a_segment_collapses() -> None:
    s = seg(0, 10, "Thank you. Thank you. Thank you. Thank you. Thank you.")
    assert collapse_loop(s).text == "Thank you."


def test_loop_after_real_words_keeps_the_real_words() -> None:
    s = seg(0, 10, "We will meet again soon, soon, soon, soon, soon.")
    assert collapse_loop(s).text == "We will meet again soon,"


def test_three_repeats_are_not_a_loop() -> None:
    s = seg(0, 3, "Go, go, go!")
    assert collapse_loop(s).text == "Go, go, go!"


def test_loop_collapse_keeps_words_aligned() -> None:
    words = [Word(text=w, start=i, end=i + 0.5, probability=0.9) for i, w in enumerate("la la la la la end".split())]
    s = Segment(index=0, start=0, end=6, text="la la la la la end", words=words)
    out = collapse_loop(s)
    assert out.text == "la end"
    assert [w.text for w in out.words] == ["la", "end"]


def test_empty_and_punctuation_only_segments_are_dropped() -> None:
    assert normalize_segments([seg(0, 1, " "), seg(1, 2, "..."), seg(2, 3, "Real.")]) == [
        Segment(index=0, start=2, end=3, text="Real.")
    ]
