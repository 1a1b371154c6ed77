"""Helpers for tests and benchmarks (speech with known text, WER). Not used at run time."""
