"""Fixtures of the facade's own unit tests (in-process, real components).

The tiny random-weight model (``tiny_model`` from tests/conftest.py) makes a
real whisper.cpp engine load in well under a second; its transcripts are
noise, which is all these tests need. Audio is generated here with numpy:
tone bursts separated by silences, so the chunker cuts it into several
chunks and progress/cancel have something to act on.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore

PLUGIN = "whisperop.testenv.pytest_plugin"
SR = 16_000


def pytest_configure(config: pytest.Config) -> None:
    # the s3_env fixture (real MinIO) lives in the test-environment plugin
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)


def bursts_wav(path: Path, total_secs: float, burst_secs: float = 4.0, gap_secs: float = 1.0, seed: int = 0) -> Path:
    """16 kHz mono PCM: tone+noise bursts with silent gaps (chunkable at the gaps)."""
    rng = np.random.default_rng(seed)
    n = int(total_secs * SR)
    out = np.zeros(n, dtype=np.float32)
    t, period = 0, int((burst_secs + gap_secs) * SR)
    while t < n:
        m = min(int(burst_secs * SR), n - t)
        x = np.arange(m) / SR
        out[t : t + m] = 0.3 * np.sin(2 * np.pi * 440 * x) + 0.05 * rng.standard_normal(m)
        t += period
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(out, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-audio")


@pytest.fixture(scope="session")
def make_wav(audio_dir: Path):  # type: ignore[no-untyped-def]
    """``make_wav(name, total_secs, **kw)``: a bursts WAV in the session's audio folder."""
    return lambda name, total_secs, **kw: bursts_wav(audio_dir / name, total_secs, **kw)


@pytest.fixture(scope="session")
def short_wav(audio_dir: Path) -> Path:
    return bursts_wav(audio_dir / "short.wav", 3.0)


@pytest.fixture(scope="session")
def chunked_wav(audio_dir: Path) -> Path:
    """9 s, cut into 3 chunks with CHUNK_MAX_SECS=3 (each chunk costs a whisper call)."""
    return bursts_wav(audio_dir / "chunked.wav", 9.0, burst_secs=2.0, gap_secs=1.0, seed=1)


@pytest.fixture(scope="session")
def long_wav(audio_dir: Path) -> Path:
    """2 minutes (~40 chunks): a job that is still running when a test cancels it."""
    return bursts_wav(audio_dir / "long.wav", 120.0, burst_secs=2.0, gap_secs=1.0, seed=2)


@pytest.fixture
def jobstore(tmp_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore.in_data_dir(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def blobstore(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore.in_data_dir(tmp_path / "data")
