"""Peak resident memory of another process while a block runs (upload tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class RssGrowth:
    base: int
    peak: int

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / (1 << 20)


@contextmanager
def peak_rss(pid: int, interval: float = 0.02) -> Iterator[RssGrowth]:
    """Sample ``pid``'s RSS every ``interval`` s from a thread while the block runs;
    ``growth_mb`` is read after it: peak minus the RSS at the start."""
    import psutil

    proc = psutil.Process(pid)
    seen = RssGrowth(base=proc.memory_info().rss, peak=0)
    seen.peak = seen.base
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                seen.peak = max(seen.peak, proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()
