"""JobQueue on SQLite (stdlib ``sqlite3``, WAL) — the local ``whisperop serve`` backend.

One connection shared by every thread, guarded by a lock: the facade, the
worker thread and the webhook sender all write, and SQLite serialises
writers anyway, so a pool would add nothing but "database is locked"
retries. Writes use ``BEGIN IMMEDIATE`` so two processes on the same file
(a server and a stray CLI) still cannot interleave a read-modify-write.

Watchers are called *while the lock is held*, right after the commit: that
is what keeps change notifications in commit order (progress 3 never
arrives after done). Watchers must therefore be quick and never call back
into the store; the in-process ones only enqueue.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from whisperop.core.checkpoints import ChunkRecord
from whisperop.core.errors import JobAlreadyTerminal, JobNotFound, JobStillActive
from whisperop.core.models import DegradedChunk, Job, JobStatus, RemovedText, Segment, TranscriptionResult, utcnow
from whisperop.core.ports import ChangeKind, DecodeHints, JobChange, JobPage, JobWatcher, Unsubscribe
from whisperop.core.settings import WebhookRegistrySettings
from whisperop.core.subscribers import Subscribers

log = logging.getLogger("whisperop.stores.sqlite")

RESTART_MESSAGE = "server restarted while job was running"
DEPTH_WAIT_SECS = 0.5
OPEN_TIMEOUT_SECS = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL,
    task          TEXT NOT NULL,
    language      TEXT,
    progress      INTEGER NOT NULL DEFAULT 0,
    chunk         INTEGER NOT NULL DEFAULT 0,
    chunks_total  INTEGER NOT NULL DEFAULT 0,
    duration_secs REAL,
    segments      TEXT NOT NULL DEFAULT '[]',
    error         TEXT,
    webhook_url   TEXT,
    filename      TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    completed_at  TEXT,
    audio_key     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_completed ON jobs(completed_at);
CREATE TABLE IF NOT EXISTS job_chunks (
    job_id        TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    start_sample  INTEGER NOT NULL,
    end_sample    INTEGER NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0,
    language      TEXT,
    segments      TEXT,
    degraded      TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS webhook_urls (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    url           TEXT NOT NULL UNIQUE,
    registered_at TEXT NOT NULL
);
"""

_ACTIVE = (JobStatus.queued.value, JobStatus.running.value)
_TERMINAL = tuple(s.value for s in JobStatus if s.terminal)
# every column but the segments (a listing never needs them; a 2-hour transcript is ~1 MB of JSON)
_SUMMARY = ("seq, id, status, task, language, progress, chunk, chunks_total, duration_secs, '[]' AS segments, error,"
            " webhook_url, filename, created_at, started_at, completed_at, audio_key, removed, degraded,"
            " time_limit_secs, chunk_time_limit_factor")

#: Columns added after the first release: every database gets them on open, a new one and
#: one written by an older server alike (``ALTER TABLE ... ADD COLUMN``, instant in SQLite).
_ADDED_COLUMNS = {
    "priority": "INTEGER NOT NULL DEFAULT 0",
    "hints": "TEXT",
    "owner": "TEXT",
    "removed": "TEXT NOT NULL DEFAULT '[]'",
    "degraded": "TEXT NOT NULL DEFAULT '[]'",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "time_limit_secs": "REAL",
    "chunk_time_limit_factor": "REAL",
}

#: Runs a job may start: one that was running at a crash is queued again
#: (and resumes from its checkpoint) until it has been started this often;
#: then it fails with ``RESTART_MESSAGE``. 1 = the original contract (a job
#: running at a restart fails at once). Cluster mode's default is also 3.
DEFAULT_MAX_ATTEMPTS = 3


def _migrate(conn: sqlite3.Connection) -> None:
    have = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    for name, decl in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(timezone.utc).isoformat()


def _end_row(c: sqlite3.Connection, job_id: str, sets: str, args: tuple[object, ...], guard: str = "") -> bool:
    """Make a job terminal (``sets``: its status and fields) and drop its checkpoint; False when
    ``guard`` (e.g. still running) did not hold."""
    cur = c.execute(f"UPDATE jobs SET {sets}, completed_at = ? WHERE id = ?{guard}", (*args, _ts(utcnow()), job_id))
    if cur.rowcount:
        c.execute("DELETE FROM job_chunks WHERE job_id = ?", (job_id,))
    return bool(cur.rowcount)


def _dumps(items: Sequence[BaseModel]) -> str:
    return json.dumps([i.model_dump(mode="json") for i in items])


_FAILED = "status = 'failed', segments = '[]', error = ?"
_RUNNING = " AND status = 'running'"


def _row_to_job(row: sqlite3.Row) -> Job:
    removed = [RemovedText.model_validate(r) for r in json.loads(row["removed"])]
    return Job(
        id=row["id"],
        status=JobStatus(row["status"]),
        task=row["task"],
        language=row["language"],
        progress=row["progress"],
        duration_secs=row["duration_secs"],
        segments=json.loads(row["segments"]),
        error=row["error"],
        webhook_url=row["webhook_url"],
        filename=row["filename"],
        created_at=datetime.fromisoformat(row["created_at"]),
        completed_at=datetime.fromisoformat(row["completed_at"]) if row["completed_at"] else None,
        segments_removed=len(removed),
        removed=removed,
        degraded_chunks=json.loads(row["degraded"]),
        time_limit_secs=row["time_limit_secs"],
        chunk_time_limit_factor=row["chunk_time_limit_factor"],
    )


@dataclass(frozen=True)
class ClaimedJob:
    """A job :meth:`SqliteJobStore.claim_next` moved to ``running``, where its audio is, and its decode
    hints (:class:`whisperop.stores.local_queue.LocalWorkQueue` turns it into the executor's lease)."""

    job: Job
    audio_key: str
    hints: DecodeHints = DecodeHints()


class SqliteJobStore:
    """The local JobQueue: ``<data_dir>/jobs.sqlite3``."""

    def __init__(self, path: str | Path, registry: WebhookRegistrySettings | None = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self.path = Path(path)
        self.registry = registry or WebhookRegistrySettings()
        self.max_attempts = max(1, max_attempts)
        self._last_depth = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._watchers: Subscribers[JobChange] = Subscribers("job watcher")
        # opening waits at most OPEN_TIMEOUT_SECS for another process's lock: a server that
        # cannot get at its database says so at start (whisperop.api.cli) instead of hanging
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=OPEN_TIMEOUT_SECS)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            conn.executescript(_SCHEMA)
            _migrate(conn)
            conn.execute("CREATE INDEX IF NOT EXISTS jobs_by_queue ON jobs(status, priority DESC, seq)")
            self._migrate_registry(conn)
            conn.execute("PRAGMA busy_timeout=30000")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @classmethod
    def in_data_dir(cls, data_dir: str | Path, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                    registry: WebhookRegistrySettings | None = None) -> "SqliteJobStore":
        return cls(Path(data_dir) / "jobs.sqlite3", registry=registry, max_attempts=max_attempts)

    # ── plumbing ─────────────────────────────────────────────────────────

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under the lock (callers notify before releasing it)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _one(self, job_id: str) -> sqlite3.Row | None:
        return self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()

    def _must(self, job_id: str) -> sqlite3.Row:
        row = self._one(job_id)
        if row is None:
            raise JobNotFound(job_id)
        return row

    def _notify(self, kind: ChangeKind, row: sqlite3.Row) -> Job:
        job = _row_to_job(row)
        change = JobChange(kind=kind, job=job, chunk=row["chunk"], chunks_total=row["chunks_total"])
        self._watchers.publish(change, {"job_id": job.id})  # a broken watcher must not fail the writer
        return job

    # ── jobs ─────────────────────────────────────────────────────────────

    def create(self, job: Job, audio_key: str, priority: int = 0, hints: DecodeHints | None = None,
               owner: str | None = None) -> Job:
        hints_json = hints.to_json() if hints else None
        with self._lock:
            with self._write() as c:
                c.execute(
                    "INSERT INTO jobs (id, status, task, language, progress, duration_secs, segments, error,"
                    " webhook_url, filename, created_at, completed_at, audio_key, priority, hints, owner,"
                    " time_limit_secs, chunk_time_limit_factor)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        job.id, job.status.value, job.task.value, job.language, job.progress, job.duration_secs,
                        _dumps(job.segments), job.error, job.webhook_url,
                        job.filename, _ts(job.created_at), _ts(job.completed_at), audio_key, priority, hints_json,
                        owner, job.time_limit_secs, job.chunk_time_limit_factor,
                    ),
                )
                row = self._must(job.id)
            return self._notify("created", row)

    def owner(self, job_id: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return row[0]  # type: ignore[no-any-return]

    def count_queued(self, owner: str) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND owner = ?",
                                          (owner,)).fetchone()[0])

    def get(self, job_id: str) -> Job:
        with self._lock:
            return _row_to_job(self._must(job_id))

    def list_page(self, statuses: Sequence[JobStatus] | None, limit: int, cursor: str | None = None,
                  owner: str | None = None) -> JobPage:
        """Newest first by ``seq``; the cursor is the last ``seq`` served (``s<seq>``), so jobs
        submitted meanwhile (higher seq) never shift the next page."""
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if cursor is not None:
            if not cursor.startswith("s") or not cursor[1:].isdigit():
                raise ValueError(f"invalid cursor {cursor!r}")
            where.append("seq < ?")
            args.append(int(cursor[1:]))
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(s.value for s in statuses)
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        sql = f"SELECT {_SUMMARY} FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return JobPage([_row_to_job(r) for r in rows], f"s{rows[-1]['seq']}" if more and rows else None)

    def delete(self, job_id: str) -> str | None:
        with self._lock:
            with self._write() as c:
                row = self._must(job_id)
                if row["status"] in _ACTIVE:
                    raise JobStillActive(job_id, row["status"])
                c.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return str(row["audio_key"]) if row["audio_key"] else None

    def finished_before(self, cutoff: datetime, limit: int = 500) -> list[str]:
        sql = (f"SELECT id FROM jobs WHERE status IN ({','.join('?' * len(_TERMINAL))}) AND completed_at IS NOT NULL"
               " AND completed_at < ? ORDER BY completed_at LIMIT ?")
        with self._lock:
            return [r[0] for r in self._conn.execute(sql, (*_TERMINAL, _ts(cutoff), limit))]

    def count_by_status(self) -> dict[JobStatus, int]:
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        counts = {s: 0 for s in JobStatus}
        for status, n in rows:
            counts[JobStatus(status)] = n
        return counts

    def queue_depth(self) -> int:
        """Queued jobs; the last value read when the store is busy for more than
        :data:`DEPTH_WAIT_SECS` — ``/health`` (a liveness probe) must not wait for a writer
        stuck on a database another process has locked (up to its 30 s busy timeout)."""
        if not self._lock.acquire(timeout=DEPTH_WAIT_SECS):
            return self._last_depth
        try:
            self._last_depth = int(self._conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0])
            return self._last_depth
        finally:
            self._lock.release()

    def cancel(self, job_id: str) -> Job:
        with self._lock:
            with self._write() as c:
                status = self._must(job_id)["status"]
                if status not in _ACTIVE:
                    raise JobAlreadyTerminal(job_id, status)
                _end_row(c, job_id, "status = 'cancelled', segments = '[]'", ())
                row = self._must(job_id)
            return self._notify("finished", row)

    def claim_next(self) -> ClaimedJob | None:
        with self._lock:
            with self._write() as c:
                row = c.execute(
                    "SELECT seq FROM jobs WHERE status = 'queued' ORDER BY priority DESC, seq LIMIT 1").fetchone()
                if row is None:
                    return None
                c.execute("UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE seq = ?",
                          (_ts(utcnow()), row["seq"]))
                row = c.execute("SELECT * FROM jobs WHERE seq = ?", (row["seq"],)).fetchone()
            job = self._notify("started", row)
            return ClaimedJob(job=job, audio_key=row["audio_key"], hints=DecodeHints.from_json(row["hints"]))

    def record_progress(self, job_id: str, chunk: int, chunks_total: int, duration_secs: float | None = None) -> bool:
        percent = 100 if chunks_total <= 0 else (100 * chunk) // chunks_total
        with self._lock:
            with self._write() as c:
                cur = c.execute(
                    "UPDATE jobs SET chunk = ?, chunks_total = ?, progress = ?, duration_secs = COALESCE(?, duration_secs)"
                    " WHERE id = ? AND status = 'running'",
                    (chunk, chunks_total, percent, duration_secs, job_id),
                )
                row = self._one(job_id) if cur.rowcount else None
            if row is None:
                return False
            self._notify("progress", row)
            return True

    def progress(self, job_id: str) -> tuple[int, int] | None:
        with self._lock:
            row = self._conn.execute("SELECT status, chunk, chunks_total FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row["status"] != "running" or row["chunks_total"] < 1:
            return None
        return int(row["chunk"]), int(row["chunks_total"])

    def complete(self, job_id: str, result: TranscriptionResult) -> Job | None:
        return self._finish(job_id, "status = 'done', progress = 100, chunk = chunks_total, language = COALESCE(?, language),"
                                    " duration_secs = ?, segments = ?, removed = ?, degraded = ?, error = NULL",
                            (result.language, result.duration_secs, _dumps(result.segments), _dumps(result.removed),
                             _dumps(result.degraded_chunks)))

    def fail(self, job_id: str, error: str) -> Job | None:
        return self._finish(job_id, _FAILED, (error,))

    def _finish(self, job_id: str, sets: str, args: tuple[object, ...]) -> Job | None:
        """A running job's end (None when it is no longer running: cancelled meanwhile)."""
        with self._lock:
            with self._write() as c:
                row = self._one(job_id) if _end_row(c, job_id, sets, args, _RUNNING) else None
            return None if row is None else self._notify("finished", row)

    def requeue(self, job_id: str, reason: str, count_attempt: bool = True) -> Job | None:
        """running → queued (its checkpoint kept: it resumes at its first unfinished chunk), in its
        original FIFO place: the engine died under it. A job that has started ``max_attempts`` runs
        fails instead (an audio that kills the engine every time must not loop); ``count_attempt``
        False (an out-of-memory death: the GPU's fault, not the job's) gives the attempt back.
        Returns the queued job, None when it failed or was no longer running."""
        with self._lock:
            with self._write() as c:
                row = c.execute("SELECT attempts FROM jobs WHERE id = ? AND status = 'running'", (job_id,)).fetchone()
                if row is None:
                    return None
                attempts = row["attempts"] - (0 if count_attempt else 1)
                queued = self._again(c, job_id, attempts, f"transcription failed {attempts} times: {reason}")
                row = self._must(job_id)
            job = self._notify("created" if queued else "finished", row)
        log.warning("job requeued: the engine died under it" if queued else "job failed: the engine died under it too often",
                    extra={"job_id": job_id, "attempts": attempts, "reason": reason})
        return job if queued else None

    def _again(self, c: sqlite3.Connection, job_id: str, attempts: int, error: str) -> bool:
        """A running job queued again (True: in its FIFO place, its checkpoint kept) while it has
        started fewer than ``max_attempts`` runs, else failed with ``error``."""
        if attempts >= self.max_attempts:
            _end_row(c, job_id, _FAILED, (error,))
            return False
        c.execute("UPDATE jobs SET status = 'queued', attempts = ? WHERE id = ?", (attempts, job_id))
        return True

    def audio_key(self, job_id: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT audio_key FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def recover_interrupted(self) -> list[Job]:
        """Jobs left ``running`` by a dead process: queued again (they resume from
        their checkpoint, in their original FIFO place) while they have started
        fewer than ``max_attempts`` runs; the others fail with ``RESTART_MESSAGE``.
        Returns the failed ones (the caller deletes their audio)."""
        with self._lock:
            with self._write() as c:
                rows = c.execute("SELECT id, attempts FROM jobs WHERE status = 'running' ORDER BY seq").fetchall()
                retried = [r["id"] for r in rows if self._again(c, r["id"], r["attempts"], RESTART_MESSAGE)]
            jobs = [self._notify("finished", self._must(r["id"])) for r in rows if r["id"] not in retried]
        for job_id in retried:
            log.warning("job was running when the server stopped: queued again, resumes from its checkpoint",
                        extra={"job_id": job_id})
        for job in jobs:
            log.warning("job was running when the server stopped: marked failed", extra={"job_id": job.id,
                                                                                          "max_attempts": self.max_attempts})
        return jobs

    # ── checkpoints ──────────────────────────────────────────────────────

    def checkpoint(self, job_id: str) -> "SqliteCheckpoint":
        return SqliteCheckpoint(self, job_id)

    def watch(self, callback: JobWatcher) -> Unsubscribe:
        return self._watchers.add(callback)

    # ── webhook registry ─────────────────────────────────────────────────

    def _migrate_registry(self, conn: sqlite3.Connection) -> None:
        """Databases from before issue 16: add the registry's expiry columns (old registry rows
        get a full TTL; the job owner column is one of ``_ADDED_COLUMNS``)."""
        cols = {r[1] for r in conn.execute("PRAGMA table_info(webhook_urls)")}
        if "expires_at" not in cols:
            conn.execute("ALTER TABLE webhook_urls ADD COLUMN expires_at REAL")
            conn.execute("ALTER TABLE webhook_urls ADD COLUMN pending INTEGER NOT NULL DEFAULT 0")
            conn.execute("UPDATE webhook_urls SET expires_at = ?", (time.time() + self.registry.ttl_secs,))

    def register_webhook(self, url: str, pending: bool = False) -> bool:
        lim, now = self.registry, time.time()
        expires = now + (lim.pending_ttl_secs if pending else lim.ttl_secs)
        with self._lock:
            with self._write() as c:
                c.execute("DELETE FROM webhook_urls WHERE expires_at <= ?", (now,))
                row = c.execute("SELECT pending FROM webhook_urls WHERE url = ?", (url,)).fetchone()
                if row is not None:
                    if not pending or row[0]:
                        c.execute("UPDATE webhook_urls SET expires_at = MAX(expires_at, ?), pending = ? WHERE url = ?",
                                  (expires, int(pending and bool(row[0])), url))
                    return True
                count, pendings = c.execute("SELECT COUNT(*), COALESCE(SUM(pending), 0) FROM webhook_urls").fetchone()
                if pending and (pendings >= lim.max_pending or count >= lim.max_entries):
                    log.warning("webhook registry: URL of a rejected submission not registered (full)",
                                extra={"pending": pendings, "entries": count})
                    return False
                if count >= lim.max_entries:
                    c.execute("DELETE FROM webhook_urls WHERE seq IN (SELECT seq FROM webhook_urls "
                              "ORDER BY pending DESC, expires_at LIMIT ?)", (count - lim.max_entries + 1,))
                c.execute("INSERT INTO webhook_urls (url, registered_at, expires_at, pending) VALUES (?, ?, ?, ?)",
                          (url, _ts(utcnow()), expires, int(pending)))
                return True

    def unregister_webhook(self, url: str) -> bool:
        with self._lock:
            with self._write() as c:
                return c.execute("DELETE FROM webhook_urls WHERE url = ?", (url,)).rowcount > 0

    def webhook_urls(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT url FROM webhook_urls WHERE expires_at > ? ORDER BY seq",
                                                     (time.time(),))]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"SqliteJobStore({str(self.path)!r})"


class SqliteCheckpoint:
    """One job's :class:`whisperop.core.checkpoints.Checkpoint` in ``job_chunks`` rows (the job's
    terminal write deletes them: its result, if any, is in its row)."""

    def __init__(self, store: SqliteJobStore, job_id: str) -> None:
        self._store = store
        self.job_id = job_id

    def plan(self) -> list[tuple[int, int]] | None:
        with self._store._lock:
            rows = self._store._conn.execute("SELECT start_sample, end_sample FROM job_chunks WHERE job_id = ? ORDER BY idx",
                                             (self.job_id,)).fetchall()
        return [(int(r[0]), int(r[1])) for r in rows] or None

    def save_plan(self, plan: list[tuple[int, int]]) -> None:
        with self._store._lock, self._store._write() as c:
            c.execute("DELETE FROM job_chunks WHERE job_id = ?", (self.job_id,))
            c.executemany("INSERT INTO job_chunks (job_id, idx, start_sample, end_sample) VALUES (?,?,?,?)",
                          [(self.job_id, i, start, end) for i, (start, end) in enumerate(plan)])

    def done(self) -> dict[int, ChunkRecord]:
        with self._store._lock:
            rows = self._store._conn.execute(
                "SELECT idx, language, segments, degraded FROM job_chunks WHERE job_id = ? AND done = 1", (self.job_id,))
            return {int(r["idx"]): ChunkRecord(int(r["idx"]), [Segment.model_validate(s) for s in json.loads(r["segments"])],
                                               r["language"], DegradedChunk.model_validate_json(r["degraded"]) if r["degraded"] else None)
                    for r in rows}

    def save(self, rec: ChunkRecord) -> None:
        segments = _dumps(rec.segments)
        degraded = rec.degraded.model_dump_json() if rec.degraded is not None else None
        with self._store._lock, self._store._write() as c:
            c.execute("UPDATE job_chunks SET done = 1, language = ?, segments = ?, degraded = ? WHERE job_id = ? AND idx = ?",
                      (rec.language, segments, degraded, self.job_id, rec.index))
