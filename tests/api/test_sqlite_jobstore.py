"""SqliteJobStore: FIFO claims, conditional worker writes, cancel, recovery, watch, registry."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from whisperop.core.errors import JobAlreadyTerminal, JobNotFound
from whisperop.core.models import Job, JobStatus, Segment, Task, TranscriptionResult
from whisperop.core.ports import BlobStore, JobChange, JobQueue
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import RESTART_MESSAGE, SqliteJobStore


def _job(i: int, **kw: object) -> Job:
    return Job(id=f"job-{i:03d}", filename=f"f{i}.wav", **kw)  # type: ignore[arg-type]


def _result() -> TranscriptionResult:
    return TranscriptionResult(language="en", duration_secs=2.5, segments=[Segment(index=0, start=0.0, end=1.0, text="hi")], chunks=2)


def test_adapters_satisfy_the_ports(jobstore: SqliteJobStore, blobstore: LocalBlobStore) -> None:
    assert isinstance(jobstore, JobQueue)
    assert isinstance(blobstore, BlobStore)


def test_create_get_list_counts(jobstore: SqliteJobStore) -> None:
    created = jobstore.create(_job(1, task=Task.translate, language="de", webhook_url="http://x/y"), "audio/1")
    got = jobstore.get("job-001")
    assert got == created
    assert got.model_dump(mode="json") == created.model_dump(mode="json")
    assert (got.status, got.task, got.language, got.webhook_url, got.filename) == (JobStatus.queued, Task.translate, "de", "http://x/y", "f1.wav")
    jobstore.create(_job(2), "audio/2")
    assert [j.id for j in reversed(jobstore.list_page(None, 100).jobs)] == ["job-001", "job-002"]
    assert jobstore.queue_depth() == 2
    assert jobstore.count_by_status()[JobStatus.queued] == 2
    assert jobstore.audio_key("job-002") == "audio/2"
    with pytest.raises(JobNotFound, match="job nope not found"):
        jobstore.get("nope")


def test_claims_are_fifo_and_each_job_is_claimed_once(jobstore: SqliteJobStore) -> None:
    for i in range(40):
        jobstore.create(_job(i), f"audio/{i}")
    claimed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (c := jobstore.claim_next()) is not None:
            with lock:
                claimed.append(c.job.id)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [f"job-{i:03d}" for i in range(40)]
    assert len(set(claimed)) == 40
    assert jobstore.count_by_status()[JobStatus.running] == 40 and jobstore.queue_depth() == 0


def test_claim_order_is_submission_order(jobstore: SqliteJobStore) -> None:
    for i in (5, 3, 9):
        jobstore.create(_job(i), f"audio/{i}")
    order = [jobstore.claim_next().job.id for _ in range(3)]  # type: ignore[union-attr]
    assert order == ["job-005", "job-003", "job-009"]
    assert jobstore.claim_next() is None


def test_progress_complete_and_fail_only_while_running(jobstore: SqliteJobStore) -> None:
    jobstore.create(_job(1), "a")
    assert not jobstore.record_progress("job-001", 1, 4), "a queued job cannot take progress"
    c = jobstore.claim_next()
    assert c is not None and c.job.status == JobStatus.running and c.audio_key == "a"
    assert jobstore.record_progress("job-001", 0, 4, 12.5)
    assert jobstore.record_progress("job-001", 3, 4)
    job = jobstore.get("job-001")
    assert (job.progress, job.duration_secs) == (75, 12.5)
    done = jobstore.complete("job-001", _result())
    assert done is not None and done.status == JobStatus.done and done.progress == 100 and done.completed_at is not None
    assert done.language == "en" and [s.text for s in done.segments] == ["hi"]
    assert jobstore.fail("job-001", "late") is None, "a finished job cannot fail"
    assert jobstore.get("job-001").status == JobStatus.done


def test_cancel_discards_late_worker_writes(jobstore: SqliteJobStore) -> None:
    jobstore.create(_job(1), "a")
    jobstore.claim_next()
    jobstore.record_progress("job-001", 1, 4, 9.0)
    cancelled = jobstore.cancel("job-001")
    assert cancelled.status == JobStatus.cancelled and cancelled.completed_at is not None
    assert not jobstore.record_progress("job-001", 2, 4)
    assert jobstore.complete("job-001", _result()) is None
    assert jobstore.fail("job-001", "x") is None
    job = jobstore.get("job-001")
    assert job.status == JobStatus.cancelled and job.segments == [] and job.completed_at == cancelled.completed_at


def test_cancel_errors(jobstore: SqliteJobStore) -> None:
    with pytest.raises(JobNotFound):
        jobstore.cancel("missing")
    jobstore.create(_job(1), "a")
    jobstore.cancel("job-001")
    with pytest.raises(JobAlreadyTerminal) as err:
        jobstore.cancel("job-001")
    assert str(err.value) == "job job-001 is already in terminal state cancelled"


def test_restart_recovery_fails_running_and_keeps_queued(tmp_path: Path) -> None:
    """MAX_JOB_ATTEMPTS=1: the original contract (a job running at a restart fails)."""
    path = tmp_path / "jobs.sqlite3"
    s = SqliteJobStore(path, max_attempts=1)
    for i in range(3):
        s.create(_job(i), f"a{i}")
    s.claim_next()  # job-000 running when the process "dies"
    s.close()
    s2 = SqliteJobStore(path, max_attempts=1)
    recovered = s2.recover_interrupted()
    assert [j.id for j in recovered] == ["job-000"]
    j0 = s2.get("job-000")
    assert (j0.status, j0.error) == (JobStatus.failed, RESTART_MESSAGE) and j0.completed_at is not None
    assert [s2.get(f"job-00{i}").status for i in (1, 2)] == [JobStatus.queued, JobStatus.queued]
    assert s2.claim_next().job.id == "job-001"  # type: ignore[union-attr]
    assert s2.recover_interrupted()[0].id == "job-001"
    s2.close()


def test_watch_sees_every_change_in_order_and_unsubscribes(jobstore: SqliteJobStore) -> None:
    seen: list[JobChange] = []
    unsub = jobstore.watch(seen.append)
    jobstore.create(_job(1), "a")
    jobstore.claim_next()
    jobstore.record_progress("job-001", 1, 2)
    jobstore.complete("job-001", _result())
    unsub()
    jobstore.create(_job(2), "b")
    assert [(c.kind, c.job.status.value, c.chunk, c.chunks_total) for c in seen] == [
        ("created", "queued", 0, 0),
        ("started", "running", 0, 0),
        ("progress", "running", 1, 2),
        ("finished", "done", 2, 2),
    ]


def test_broken_watcher_does_not_break_writes(jobstore: SqliteJobStore) -> None:
    def boom(_: JobChange) -> None:
        raise RuntimeError("watcher bug")

    jobstore.watch(boom)
    jobstore.create(_job(1), "a")
    assert jobstore.get("job-001").status == JobStatus.queued


def test_webhook_registry_is_persisted_and_deduplicated(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    s = SqliteJobStore(path)
    s.register_webhook("http://a/1")
    s.register_webhook("http://b/2")
    s.register_webhook("http://a/1")
    s.close()
    s2 = SqliteJobStore(path)
    assert s2.webhook_urls() == ["http://a/1", "http://b/2"]
    s2.close()


def test_webhook_registry_is_bounded_and_expires(tmp_path: Path) -> None:
    from whisperop.core.settings import WebhookRegistrySettings

    lim = WebhookRegistrySettings(WEBHOOK_REGISTRY_MAX=4, WEBHOOK_PENDING_MAX=2, WEBHOOK_PENDING_TTL_SECS=0.5)
    s = SqliteJobStore(tmp_path / "jobs.sqlite3", registry=lim)
    # rejected submissions (pending): at most 2, whatever the query string does to the URL
    assert [s.register_webhook(f"http://r/x?n={i}", pending=True) for i in range(5)] == [True, True, False, False, False]
    assert s.register_webhook("http://job/1") and s.register_webhook("http://job/2")
    assert len(s.webhook_urls()) == 4
    # full: a job's URL makes room by dropping a pending one, never another job's
    assert s.register_webhook("http://job/3")
    assert [u for u in s.webhook_urls() if u.startswith("http://job/")] == ["http://job/1", "http://job/2", "http://job/3"]
    time.sleep(1.0)  # pending entries live 0.5 s here
    assert s.webhook_urls() == ["http://job/1", "http://job/2", "http://job/3"]
    assert s.unregister_webhook("http://job/2") and not s.unregister_webhook("http://job/2")
    assert s.webhook_urls() == ["http://job/1", "http://job/3"]
    s.close()


def test_webhook_registry_of_an_older_database_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "jobs.sqlite3"
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE webhook_urls (seq INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL UNIQUE,"
                      " registered_at TEXT NOT NULL); INSERT INTO webhook_urls (url, registered_at) VALUES ('http://old/1', 'x');")
    con.close()
    s = SqliteJobStore(path)
    assert s.webhook_urls() == ["http://old/1"]
    s.close()


def test_restart_requeues_running_job_in_its_place_until_max_attempts(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    s = SqliteJobStore(path, max_attempts=2)
    for i in range(2):
        s.create(_job(i), f"a{i}")
    assert s.claim_next().job.id == "job-000"  # type: ignore[union-attr]  # attempt 1 dies
    s.close()
    s = SqliteJobStore(path, max_attempts=2)
    assert s.recover_interrupted() == [] and s.get("job-000").status == JobStatus.queued
    assert s.claim_next().job.id == "job-000"  # type: ignore[union-attr]  # FIFO place kept; attempt 2 dies
    s.close()
    s = SqliteJobStore(path, max_attempts=2)
    [failed] = s.recover_interrupted()
    assert (failed.id, failed.status, failed.error) == ("job-000", JobStatus.failed, RESTART_MESSAGE)
    assert s.get("job-001").status == JobStatus.queued
    s.close()


def test_checkpoint_rows_roundtrip_and_go_with_the_terminal_job(tmp_path: Path) -> None:
    from whisperop.core.checkpoints import ChunkRecord
    from whisperop.core.models import DegradedChunk

    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    s.create(_job(0), "a0")
    s.claim_next()
    cp = s.checkpoint("job-000")
    assert cp.plan() is None and cp.done() == {}
    cp.save_plan([(0, 16000), (20000, 50000), (60000, 90000)])
    seg = Segment(index=0, start=1.25, end=2.0, text="hello")
    bad = DegradedChunk(index=1, start=1.25, end=3.125, failed=True, reason="over its time limit")
    cp.save(ChunkRecord(0, [seg], "en"))
    cp.save(ChunkRecord(1, [], "en", bad))
    s.close()
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")  # durable across a reopen
    cp = s.checkpoint("job-000")
    assert cp.plan() == [(0, 16000), (20000, 50000), (60000, 90000)]
    assert cp.done() == {0: ChunkRecord(0, [seg], "en"), 1: ChunkRecord(1, [], "en", bad)}
    s.complete("job-000", _result())
    assert cp.plan() is None and cp.done() == {}
    s.close()


def test_requeue_after_an_engine_death_keeps_place_and_checkpoint_until_max_attempts(tmp_path: Path) -> None:
    from whisperop.core.checkpoints import ChunkRecord

    s = SqliteJobStore(tmp_path / "jobs.sqlite3", max_attempts=2)
    for i in range(2):
        s.create(_job(i), f"a{i}")
    changes: list[JobChange] = []
    s.watch(changes.append)
    s.claim_next()
    s.checkpoint("job-000").save_plan([(0, 16000), (16000, 32000)])
    s.checkpoint("job-000").save(ChunkRecord(0, [Segment(index=0, start=0.0, end=1.0, text="hi")], "en"))
    queued = s.requeue("job-000", "engine process killed by SIGABRT")  # attempt 1 counted
    assert queued is not None and queued.status == JobStatus.queued
    assert changes[-1].kind == "created" and changes[-1].job.status == JobStatus.queued
    assert s.checkpoint("job-000").done().keys() == {0}, "the checkpoint stays for the resumed run"
    assert s.claim_next().job.id == "job-000"  # type: ignore[union-attr]  # FIFO place kept; attempt 2
    assert s.requeue("job-000", "out of memory", count_attempt=False) is not None, "an OOM death gives the attempt back"
    assert s.claim_next().job.id == "job-000"  # type: ignore[union-attr]  # still attempt 2
    assert s.requeue("job-000", "engine process killed by SIGSEGV") is None  # attempt 2 of 2: fails
    failed = s.get("job-000")
    assert failed.status == JobStatus.failed and failed.error == "transcription failed 2 times: engine process killed by SIGSEGV"
    assert changes[-1].kind == "finished" and s.checkpoint("job-000").done() == {}
    assert s.requeue("job-001", "x") is None and s.get("job-001").status == JobStatus.queued, "only a running job"
    s.close()
