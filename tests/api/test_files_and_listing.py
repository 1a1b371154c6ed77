"""Transcripts as files, ``GET /jobs`` and retention, through the real app (SQLite + files, in-process).

Done jobs are made through the JobStore's own worker protocol (create → claim →
complete) with a known transcript, so the files can be checked word for word;
the engine is not needed for that (tests/real covers the whisper path).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.subtitles import parse_srt, parse_vtt
from tests.support.local_app import LocalApp, LocalAppFactory, local_apps
from whisperop.api.retention import sweep
from whisperop.core.models import Job, JobStatus, Segment, TranscriptionResult, Word, utcnow
from whisperop.inference.runtime import FaultHooks

TEXT = "And so my fellow Americans ask not what your country can do for you ask what you can do for your country"


def _result() -> TranscriptionResult:
    words = [Word(text=w, start=round(0.3 + i * 0.45, 3), end=round(0.3 + i * 0.45 + 0.35, 3), probability=0.9)
             for i, w in enumerate(TEXT.split())]
    seg = Segment(index=0, start=0.3, end=words[-1].end, text=" " + TEXT, words=words)
    return TranscriptionResult(language="en", duration_secs=11.0, segments=[seg], chunks=1)


class Env(LocalApp):
    def job(self, status: JobStatus = JobStatus.done, filename: str = "speech.wav", keep_audio: bool = False) -> str:
        """A job stored as the worker would leave it (done: with the known transcript)."""
        job_id = str(uuid.uuid4())
        key = f"audio/{job_id}/source.wav"
        if keep_audio or not status.terminal:
            self.blobs.put(key, [b"RIFF....WAVE"])
        fields: dict[str, object] = {"completed_at": utcnow()} if status.terminal else {}
        if status == JobStatus.done:
            r = _result()
            fields.update(language=r.language, duration_secs=r.duration_secs, segments=r.segments, progress=100)
        elif status == JobStatus.failed:
            fields["error"] = "boom"
        self.jobs.create(Job(id=job_id, status=status, filename=filename, **fields), key)  # type: ignore[arg-type]
        return job_id


@pytest.fixture
def make_env(tmp_path: Path, tiny_model: Path) -> Iterator[LocalAppFactory]:
    with local_apps(tmp_path, tiny_model, server={"GPU_POLL_INTERVAL_SECS": 30},
                    engine={"WHISPER_THREADS": 1, "USE_GPU": False}, app_class=Env) as make:
        yield make


# ── transcripts as files ────────────────────────────────────────────────────


def test_transcript_files_have_type_disposition_and_valid_syntax(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    job_id = env.job(filename="Ansprache München.wav")
    c = env.client
    r = c.get(f"/jobs/{job_id}/transcript.srt")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-subrip; charset=utf-8"
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"Ansprache M_nchen.srt\"; filename*=UTF-8''Ansprache%20M%C3%BCnchen.srt")
    srt = parse_srt(r.text)
    assert " ".join(cue.text for cue in srt) == TEXT
    assert len(srt) > 1 and all(len(ln) <= 42 for cue in srt for ln in cue.lines)

    r = c.get(f"/jobs/{job_id}/transcript.vtt", params={"max_line_chars": 20, "max_lines": 1, "max_cue_secs": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "text/vtt; charset=utf-8"
    vtt = parse_vtt(r.text)
    assert " ".join(cue.text for cue in vtt) == TEXT
    assert len(vtt) > len(srt)
    assert all(len(cue.lines) == 1 and len(cue.lines[0]) <= 20 and cue.end - cue.start <= 2 for cue in vtt)

    r = c.get(f"/jobs/{job_id}/transcript.txt")
    assert r.headers["content-type"] == "text/plain; charset=utf-8" and r.text == TEXT + "\n"
    r = c.get(f"/jobs/{job_id}/transcript.json")
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"].startswith('attachment; filename="Ansprache M_nchen.json"')
    doc = r.json()
    assert doc["language"] == "en" and doc["duration_secs"] == 11.0
    assert doc["segments"][0]["words"][0] == {"text": "And", "start": 0.3, "end": 0.65, "probability": 0.9}


def test_transcript_errors(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    done, queued, failed = env.job(), env.job(JobStatus.queued), env.job(JobStatus.failed)
    c = env.client
    r = c.get(f"/jobs/{done}/transcript.docx")
    assert r.status_code == 404 and "unknown transcript format 'docx'" in r.json()["error"]
    assert c.get(f"/jobs/{uuid.uuid4()}/transcript.srt").status_code == 404
    for job_id, status in ((queued, "queued"), (failed, "failed")):
        r = c.get(f"/jobs/{job_id}/transcript.srt")
        assert r.status_code == 409 and r.json() == {
            "error": f"job {job_id} is {status}; a transcript exists only when it is done"}
    r = c.get(f"/jobs/{done}/transcript.srt", params={"max_line_chars": 3})
    assert r.status_code == 400 and set(r.json()) == {"error"}


# ── listing ─────────────────────────────────────────────────────────────────


def test_listing_250_jobs_newest_first_with_filters_and_cursor(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    cycle = [JobStatus.done, JobStatus.failed, JobStatus.cancelled, JobStatus.queued, JobStatus.done]
    made = [(env.job(cycle[i % 5]), cycle[i % 5]) for i in range(250)]
    newest_first = [j for j, _ in reversed(made)]

    def pages(insert: bool = False, **params: object) -> tuple[list[str], int]:
        ids: list[str] = []
        n, cursor = 0, None
        while True:
            q = {**params, **({"cursor": cursor} if cursor else {})}
            r = env.client.get("/jobs", params=q)
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"jobs", "next_cursor"}
            assert all("segments" not in j for j in body["jobs"])
            ids += [j["id"] for j in body["jobs"]]
            n += 1
            cursor = body["next_cursor"]
            if cursor is None:
                return ids, n
            if n == 1 and insert:
                late.append(env.job())  # a job submitted mid-listing shifts nothing on later pages

    late: list[str] = []
    ids, n = pages(insert=True, limit=100)
    assert ids == newest_first and n == 3
    made.append((late[0], JobStatus.done))
    newest_first.insert(0, late[0])
    ids, n = pages()
    assert ids == newest_first and n == 6  # default page size 50
    done = [j for j, s in reversed(made) if s == JobStatus.done]
    ids, _ = pages(status="done", limit=33)
    assert ids == done
    ids, _ = pages(status=["failed", "cancelled"], limit=200)
    assert ids == [j for j, s in reversed(made) if s in (JobStatus.failed, JobStatus.cancelled)]
    ids, _ = pages(status="queued,failed", limit=200)
    assert ids == [j for j, s in reversed(made) if s in (JobStatus.queued, JobStatus.failed)]
    first = env.client.get("/jobs", params={"limit": 1}).json()["jobs"][0]
    assert first["status"] == "done" and first["filename"] == "speech.wav" and first["language"] == "en"


@pytest.mark.parametrize("params, message", [
    ({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"status": "finished"}, "unknown status 'finished'"),
    ({"cursor": "nope"}, "invalid cursor"),
])
def test_listing_rejects_bad_parameters(make_env, params: dict, message: str) -> None:  # type: ignore[no-untyped-def]
    r = make_env().client.get("/jobs", params=params)
    assert r.status_code == 400 and message in r.json()["error"]


# ── deletion and retention ──────────────────────────────────────────────────


def test_purge_deletes_a_finished_job_and_its_files_and_delete_stays_409(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    job_id = env.job(keep_audio=True)
    key = env.jobs.audio_key(job_id)
    assert key and env.blobs.exists(key)
    assert env.client.delete(f"/jobs/{job_id}").status_code == 409  # the contract's cancel of a finished job
    r = env.client.delete(f"/jobs/{job_id}", params={"purge": "true"})
    assert r.status_code == 204 and r.content == b""
    assert env.client.get(f"/jobs/{job_id}").status_code == 404
    assert not env.blobs.exists(key)
    assert env.client.delete(f"/jobs/{job_id}", params={"purge": "true"}).status_code == 404
    queued = env.job(JobStatus.queued)
    qkey = env.jobs.audio_key(queued)
    assert env.client.delete(f"/jobs/{queued}", params={"purge": "true"}).status_code == 204
    assert env.client.get(f"/jobs/{queued}").status_code == 404 and qkey and not env.blobs.exists(qkey)


def test_finished_jobs_expire_after_the_ttl_rows_and_files(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(JOB_TTL_SECS=2)
    old = [env.job(s, keep_audio=True) for s in (JobStatus.done, JobStatus.failed, JobStatus.cancelled)]
    keys = [env.jobs.audio_key(j) for j in old]
    queued = env.job(JobStatus.queued)
    assert sweep(env.jobs, env.blobs, 3600) == 0  # younger than the TTL: kept
    listed: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = [j["id"] for j in env.client.get("/jobs").json()["jobs"]]
        if listed == [queued]:
            break
        time.sleep(0.2)
    assert listed == [queued]  # a queued job never expires
    for j, k in zip(old, keys):
        assert env.client.get(f"/jobs/{j}").status_code == 404
        assert k and not env.blobs.exists(k)
    assert env.blobs.exists(env.jobs.audio_key(queued) or "")



def test_decode_hints_travel_with_the_claim(make_env) -> None:  # type: ignore[no-untyped-def]
    from whisperop.core.ports import DecodeHints

    env = make_env()
    plain, hinted = str(uuid.uuid4()), str(uuid.uuid4())
    env.jobs.create(Job(id=plain), "audio/p")
    env.jobs.create(Job(id=hinted), "audio/h", hints=DecodeHints(prompt="Kubernetes, kopf, whisper.cpp", temperature=0.4))
    first, second = env.jobs.claim_next(), env.jobs.claim_next()
    assert first is not None and first.job.id == plain and first.hints == DecodeHints()
    assert second is not None and second.job.id == hinted
    assert second.hints == DecodeHints(prompt="Kubernetes, kopf, whisper.cpp", temperature=0.4)


@pytest.mark.parametrize("raw", ['{"prompt": "kopf", "temperature": 0.4}', "not json", "[1]", '"a string"', "null"])
def test_a_malformed_decode_hints_annotation_is_ignored_not_fatal(raw: str) -> None:
    """A TranscriptionJob's ``whisperop.io/decode-hints`` annotation can be written by anyone with
    kubectl: whatever it holds, the worker's claim reads hints or none — a JSON list or string
    used to raise AttributeError out of the claim, and so out of the worker's serving loop."""
    from whisperop.cluster.work_queue import decode_hints
    from whisperop.core import crds
    from whisperop.core.ports import DecodeHints

    job = crds.as_job({"apiVersion": crds.API_VERSION, "kind": crds.JOB_KIND,
                       "metadata": {"name": "j", "namespace": "ns", "annotations": {crds.ANN_DECODE_HINTS: raw}},
                       "spec": {"audio": "s3://b/a.wav"}})
    want = DecodeHints(prompt="kopf", temperature=0.4) if raw.startswith("{") else DecodeHints()
    assert decode_hints(job) == want


# ── priority over REST ──────────────────────────────────────────────────────


def test_priority_orders_the_queue_and_bad_values_are_400(make_env, short_wav: Path) -> None:  # type: ignore[no-untyped-def]
    env = make_env(FaultHooks(WHISPEROP_FAULT_LOAD_DELAY_SECS=30), QUEUE_WHILE_LOADING=True)  # held in loading
    ids = {}
    for name, prio in (("a", None), ("b", "5"), ("c", "0"), ("d", "1000000"), ("e", "5")):
        data = {"priority": prio} if prio is not None else {}
        r = env.client.post("/jobs", data=data, files={"audio": (f"{name}.wav", short_wav.read_bytes(), "audio/wav")})
        assert r.status_code == 202, r.text
        ids[r.json()["job_id"]] = name
    order = []
    while (claimed := env.jobs.claim_next()) is not None:  # the runtime is still loading: the store's own order
        order.append(ids[claimed.job.id])
    assert order == ["d", "b", "e", "a", "c"]
    for bad in ("-1", "1000001", "high", "1.5"):
        r = env.client.post("/jobs", data={"priority": bad}, files={"audio": ("x.wav", b"RIFF", "audio/wav")})
        assert r.status_code == 400 and r.json() == {"error": "priority must be an integer between 0 and 1000000"}
