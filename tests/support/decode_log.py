"""The engine's "chunk decoded" log lines, counted by chunk index: which chunks a run really decoded
(a resumed job decodes only the unfinished ones, a chunk over its time limit never finishes one).
One fixture for the engine tests that count them (tests/engine/test_limits_checkpoints.py,
tests/engine/test_isolation.py); a test module imports ``decodes`` to use it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


class DecodeLog(logging.Handler):
    """Counts the engine's "chunk decoded" lines (one per finished whisper.cpp call) by chunk index."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "chunk decoded":
            self.chunks.append(int(record.__dict__["chunk"]))


@pytest.fixture
def decodes() -> Iterator[DecodeLog]:
    """A :class:`DecodeLog` on ``whisperop.engine`` (at INFO, where the lines are) for one test."""
    h = DecodeLog()
    lg = logging.getLogger("whisperop.engine")
    old = lg.level
    lg.setLevel(logging.INFO)
    lg.addHandler(h)
    yield h
    lg.removeHandler(h)
    lg.setLevel(old)
