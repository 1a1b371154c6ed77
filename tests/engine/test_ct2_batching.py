"""Cross-job batching on the CTranslate2 engine (issue 18): the windows of all
running jobs share one batch queue. Real whisper base weights (the CTranslate2
export, int8 on this CPU), two jobs in two threads on one engine — what
``JOB_CONCURRENCY=2`` does in ``whisperop serve`` and the worker.

The jobs meet at a barrier in ``on_decoded`` (after their audio is decoded,
before any window is submitted), so both are running when the first window
arrives, and a large ``CT2_BATCH_WAIT_MS`` lets the first batch wait for the
other job's window instead of racing it: the mixing is deterministic, no
wall-clock bound is asserted."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from whisperop.core.errors import JobCancelled
from whisperop.core.models import TranscriptionResult
from whisperop.core.settings import EngineSettings
from whisperop.inference.ct2engine import CT2Engine
from whisperop.inference.engine import Progress, TranscribeRequest, create_engine
from whisperop.modelstore.cache import resolve_model
from whisperop.testing.speech import word_error_rate
from tests.engine.test_ct2_engine import SENTENCES, six_sentences  # noqa: F401 - the fixture
from tests.support import audio as audio_mod



@pytest.fixture(scope="module")
def ct2_model() -> Path:
    return resolve_model("base-ct2", EngineSettings().model_cache_dir)


def _engine(ct2_model: Path, **env: Any) -> CT2Engine:
    eng = create_engine(ct2_model, EngineSettings(**{"USE_GPU": False, "ENGINE": "ctranslate2", "CT2_BATCH_WAIT_MS": 60000,
                                                     **env}))
    assert isinstance(eng, CT2Engine)
    return eng


@pytest.fixture(scope="module")
def engine(ct2_model: Path) -> Iterator[CT2Engine]:
    eng = _engine(ct2_model, CT2_BATCH_SIZE=4)
    yield eng
    eng.close()


def _words(result: TranscriptionResult) -> list[str]:
    return audio_mod.normalize_words(" ".join(s.text for s in result.segments))


def _run_jobs(engine: CT2Engine, jobs: list[dict[str, Any]]) -> list[TranscriptionResult | BaseException]:
    """Each job's transcribe_file in its own thread (as the executor runs them), all released
    together once every job's audio is decoded."""
    barrier = threading.Barrier(len(jobs), timeout=300)
    out: list[TranscriptionResult | BaseException] = [RuntimeError("not run")] * len(jobs)

    def run(i: int, job: dict[str, Any]) -> None:
        try:
            out[i] = engine.transcribe_file(job["path"], job.get("request", TranscribeRequest()),
                                            on_progress=job.get("on_progress"), should_cancel=job.get("should_cancel"),
                                            on_decoded=lambda *_: barrier.wait())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    assert not any(t.is_alive() for t in threads)
    return out


def test_two_concurrent_jobs_share_batches_and_both_get_the_reference(engine: CT2Engine, jfk_wav: Path) -> None:
    before = engine.batch_stats.multi_job_batches
    results = _run_jobs(engine, [{"path": jfk_wav}, {"path": jfk_wav}])
    ref = audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    for r in results:
        assert isinstance(r, TranscriptionResult), r
        assert r.language == "en" and _words(r) == ref
        assert all(s.words for s in r.segments)
    # jfk.wav is one window: the two jobs' windows went out in one batch
    assert engine.batch_stats.multi_job_batches >= before + 1
    assert engine.batch_stats.max_jobs_in_batch == 2


def test_a_lone_job_does_not_wait_for_a_full_batch(engine: CT2Engine, jfk_wav: Path) -> None:
    """CT2_BATCH_WAIT_MS is 60 s here: a job alone with one window must not sit out that wait."""
    import time

    t0 = time.monotonic()
    r = engine.transcribe_file(jfk_wav)
    assert _words(r) == audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    assert time.monotonic() - t0 < 60


def test_cancelling_one_job_leaves_the_other_untouched(ct2_model: Path, six_sentences: Path) -> None:  # noqa: F811
    eng = _engine(ct2_model, CT2_BATCH_SIZE=2, CHUNK_MAX_SECS=5, CHUNK_MIN_SECS=1)
    try:
        cancel = threading.Event()
        seen_a: list[Progress] = []
        seen_b: list[Progress] = []

        def b_progress(p: Progress) -> None:
            seen_b.append(p)
            cancel.set()  # B is cancelled once its first chunk is done (the language detection)

        a, b = _run_jobs(eng, [
            {"path": six_sentences, "on_progress": seen_a.append},
            {"path": six_sentences, "on_progress": b_progress, "should_cancel": cancel.is_set},
        ])
        assert isinstance(b, JobCancelled), b
        assert isinstance(a, TranscriptionResult), a
        assert [p.chunk for p in seen_a] == list(range(1, a.chunks + 1))
        assert len(seen_b) < a.chunks
        assert word_error_rate(" ".join(SENTENCES), " ".join(s.text for s in a.segments)) < 0.4
        assert eng.batch_stats.multi_job_batches >= 1  # the first windows (language detection) went together
    finally:
        eng.close()


def test_a_lone_jobs_batches_do_not_depend_on_timing(ct2_model: Path, six_sentences: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A job running alone gets the same batches, hence the same text, on every run: its windows
    reach the batcher together, not one by one as their features are computed (which let the
    batcher thread take a batch of 1 while the next window's features were still being made;
    on the H100 two undisturbed runs of a 30-minute job then differed in words,
    bench/results/gpu-oom-ct2-h100-2026-11-27.json)."""
    eng = _engine(ct2_model, CT2_BATCH_SIZE=4, CHUNK_MAX_SECS=5)
    sizes: list[int] = []
    real = eng._run_round

    def spy(tasks: list[Any]) -> Any:
        sizes.append(len(tasks))
        return real(tasks)

    monkeypatch.setattr(eng, "_run_round", spy)
    try:
        first = eng.transcribe_file(six_sentences)
        first_sizes, sizes[:] = list(sizes), []
        second = eng.transcribe_file(six_sentences)
    finally:
        eng.close()
    # six one-sentence windows: the first alone (it detects the job's language), then 4 and 1
    assert first_sizes[:3] == [1, 4, 1], first_sizes
    assert sizes == first_sizes
    assert [s.text for s in second.segments] == [s.text for s in first.segments]


def test_the_need_reported_for_a_ctranslate2_directory_is_its_weights(ct2_model: Path) -> None:
    """A CUDA out-of-memory exception carries no size: waiting_for_gpu then reports the model's
    size on disk, which for a CTranslate2 directory is its files' (the H100 run showed 1 MB: the
    directory entry's own size)."""
    from whisperop.inference.lifecycle import _size_mb

    assert _size_mb(ct2_model) >= (ct2_model / "model.bin").stat().st_size // (1024 * 1024) > 100
