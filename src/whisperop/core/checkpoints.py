"""Chunk checkpoints: what a job keeps of its finished chunks so that a crash
costs at most the chunk in flight.

The engine saves a job's chunk plan before its first chunk and each finished
chunk's segments (absolute times, before normalisation) *before* it reports
progress; a resumed job reads both back, decodes only the chunks not saved,
and normalises the whole list at the end — so with greedy decoding (chunks
are independent: no prompt crosses a chunk boundary) the transcript equals
an uninterrupted run's. Local mode keeps them in SQLite rows
(:class:`whisperop.stores.sqlite_jobs.SqliteCheckpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from whisperop.core.models import DegradedChunk, Segment


@dataclass(frozen=True)
class ChunkRecord:
    """One finished chunk: its segments, the language it was decoded in, and
    whether it ran over its time limit."""

    index: int
    segments: list[Segment]
    language: str | None
    degraded: DegradedChunk | None = None


class Checkpoint(Protocol):
    """A job's checkpoint (see the module docstring)."""

    def plan(self) -> list[tuple[int, int]] | None:
        """The saved chunk plan (``[start, end)`` samples per chunk), None before the first run."""
        ...

    def save_plan(self, plan: list[tuple[int, int]]) -> None:
        ...

    def done(self) -> dict[int, ChunkRecord]:
        """Chunks finished by earlier runs, by index."""
        ...

    def save(self, record: ChunkRecord) -> None:
        """Persist one finished chunk (durably: it is not decoded again after a crash)."""
        ...


@runtime_checkable
class CheckpointStore(Protocol):
    """A JobQueue that keeps checkpoints (local mode's SQLite store)."""

    def checkpoint(self, job_id: str) -> Checkpoint:
        ...
