"""The OpenAI-compatible API (``/v1``): the official ``openai`` client against real servers.

In-process (tiny random-weight model): request validation, OpenAI's error
shape, the bounded wait for a model load and the 503 past it. Real server
processes (``tests/support/server.py``): a client that hangs up cancels its
job (tiny model); with the real whisper base model (``slow``), every
response format on jfk.wav gives the reference sentence and valid subtitles,
verbose_json carries word and segment timestamps, translations, /v1/models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from tests.support import audio as audio_mod
from tests.support.server import ServerProcess
from tests.support.subtitles import parse_srt, parse_vtt
from tests.support.local_app import LocalApp, LocalAppFactory, local_apps
from whisperop.api.app import create_app
from whisperop.core.settings import EngineSettings, ServerSettings
from whisperop.inference.runtime import FaultHooks, LocalModelRuntime
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.sqlite_jobs import SqliteJobStore

REFERENCE = audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))


App = LocalApp


@pytest.fixture
def make_app(tmp_path: Path, tiny_model: Path) -> Iterator[LocalAppFactory]:
    with local_apps(tmp_path, tiny_model) as make:
        yield make


def _post(app: App, path: str = "/v1/audio/transcriptions", audio: bytes | None = b"RIFF....", **fields: str):  # type: ignore[no-untyped-def]
    files = {"file": ("a.wav", audio, "audio/wav")} if audio is not None else {"note": (None, "x")}
    return app.client.post(path, data={"model": "whisper-1", **fields}, files=files)


def _is_openai_error(body: dict, param: str | None = None) -> bool:
    err = body.get("error")
    return (isinstance(err, dict) and set(err) == {"message", "type", "param", "code"} and bool(err["message"])
            and (param is None or err["param"] == param))


@pytest.mark.parametrize("fields, audio, status, param", [
    ({}, None, 400, "file"),
    ({}, b"", 400, "file"),
    ({"model": "gpt-9"}, b"x", 404, "model"),
    ({"model": ""}, b"x", 400, "model"),
    ({"response_format": "docx"}, b"x", 400, "response_format"),
    ({"temperature": "1.5"}, b"x", 400, "temperature"),
    ({"temperature": "warm"}, b"x", 400, "temperature"),
    ({"language": "xx"}, b"x", 400, "language"),
    ({"timestamp_granularities[]": "char"}, b"x", 400, "timestamp_granularities"),
    ({"stream": "true"}, b"x", 400, "stream"),
    ({"prompt": "x" * 2001}, b"x", 400, "prompt"),
])
def test_bad_requests_get_openai_errors_and_keep_nothing(make_app, fields, audio, status, param) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    r = _post(app, audio=audio, **fields)
    assert r.status_code == status, r.text
    assert _is_openai_error(r.json(), param), r.json()
    assert app.blob_files() == [] and app.jobs.list_page(None, 100).jobs == []
    assert app.client.get("/model/status").json()["state"] == "unloaded"  # a rejected request loads nothing


def test_unknown_v1_route_and_multipart_errors_are_openai_shaped(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    r = app.client.get("/v1/nothing")
    assert r.status_code == 404 and _is_openai_error(r.json())
    r = app.client.post("/v1/audio/transcriptions", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 400 and _is_openai_error(r.json()) and "multipart" in r.json()["error"]["message"]
    assert app.client.get("/jobs/nope").json() == {"error": "job nope not found"}  # the contract's shape stays


def test_models_list_the_served_model_and_the_openai_alias(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=app.client)
    assert [m.id for m in client.models.list()] == ["tiny-test", "whisper-1"]
    assert client.models.retrieve("whisper-1").owned_by == "whisper-operator"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_request_while_unloaded_waits_for_the_load_and_runs_through_the_queue(make_app, short_wav: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(FaultHooks(WHISPEROP_FAULT_LOAD_DELAY_SECS=1.0))
    assert app.client.get("/model/status").json()["state"] == "unloaded"
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=app.client, max_retries=0)
    with short_wav.open("rb") as f:
        out = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert out.duration == pytest.approx(3.0, abs=0.1)
    listed = app.client.get("/jobs").json()["jobs"]
    assert len(listed) == 1 and listed[0]["status"] == "done" and listed[0]["filename"] == "short.wav"
    assert app.client.get("/model/status").json()["state"] == "ready"


def test_a_model_that_does_not_get_ready_in_time_is_a_503_with_retry_after(make_app, short_wav: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(FaultHooks(WHISPEROP_FAULT_LOAD_OOM_COUNT=99), SYNC_LOAD_WAIT_SECS=1)
    r = _post(app, audio=short_wav.read_bytes())
    assert r.status_code == 503, r.text
    assert _is_openai_error(r.json()) and r.json()["error"]["code"] == "model_not_ready"
    assert "did not become ready within 1 s" in r.json()["error"]["message"]
    assert r.headers["retry-after"] in ("7", "30")  # waiting_for_gpu (poll interval) or still unloaded/loading
    assert app.blob_files() == [] and app.jobs.list_page(None, 100).jobs == []


# ── a real server process ───────────────────────────────────────────────────


def _server(tmp_path: Path, name: str, model: Path, **env: str) -> ServerProcess:
    base = {"WHISPER_MODEL_PATH": str(model), "IDLE_TIMEOUT_SECS": "0", "USE_GPU": "false", "WHISPER_THREADS": "2"}
    return ServerProcess(name, tmp_path / name / "data", tmp_path / name / "logs", env={**base, **env}).start()


def test_a_client_that_hangs_up_cancels_its_job(tmp_path: Path, tiny_model: Path, make_wav) -> None:  # type: ignore[no-untyped-def]
    blocker_wav = make_wav("blocker.wav", 900.0, burst_secs=2.0, gap_secs=1.0, seed=5)  # ~300 chunks
    srv = _server(tmp_path, "hangup", tiny_model, CHUNK_MAX_SECS="3", CHUNK_MIN_SECS="0.5", QUEUE_WHILE_LOADING="true")
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            blocker = c.post("/jobs", files={"audio": ("b.wav", blocker_wav.read_bytes(), "audio/wav")}).json()["job_id"]
            with pytest.raises(httpx.ReadTimeout):  # the job waits behind the blocker; the client gives up
                c.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                       files={"file": ("mine.wav", b"RIFF" + bytes(4000), "audio/wav")}, timeout=httpx.Timeout(30, read=3))
            deadline, mine = time.monotonic() + 120, None
            while time.monotonic() < deadline:
                jobs = c.get("/jobs").json()["jobs"]
                mine = next((j for j in jobs if j["filename"] == "mine.wav"), None)
                if mine is not None and mine["status"] == "cancelled":
                    break
                time.sleep(0.2)
            assert mine is not None and mine["status"] == "cancelled", mine
            assert c.get(f"/jobs/{blocker}").json()["status"] in ("queued", "running")  # it never got to run
            c.delete(f"/jobs/{blocker}")
    finally:
        srv.close()


def test_a_client_that_hangs_up_while_the_model_loads_leaves_nothing(tmp_path: Path, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    srv = _server(tmp_path, "hangup-load", tiny_model, WHISPEROP_FAULT_LOAD_DELAY_SECS="120")
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            with pytest.raises(httpx.ReadTimeout):
                c.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                       files={"file": ("mine.wav", b"RIFF" + bytes(4000), "audio/wav")}, timeout=httpx.Timeout(30, read=2))
            deadline = time.monotonic() + 60
            while "client went away before its job was queued" not in srv.log_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "client went away before its job was queued" in srv.log_text()
            assert c.get("/jobs").json()["jobs"] == []
            assert c.get("/model/status").json()["state"] == "loading"  # the load it asked for goes on
        assert [p for p in (srv.data_dir / "blobs").rglob("*") if p.is_file()] == []
    finally:
        srv.close()


@pytest.fixture(scope="module")
def base_server(tmp_path_factory: pytest.TempPathFactory, base_model: Path) -> Iterator[ServerProcess]:
    d = tmp_path_factory.mktemp("openai-base")
    srv = ServerProcess("openai-base", d / "data", d / "logs",
                        env={"WHISPER_MODEL_PATH": str(base_model), "WHISPER_MODEL": "base", "IDLE_TIMEOUT_SECS": "0",
                             "CHUNK_MAX_SECS": "60"})
    srv.start(timeout=300)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def sdk(base_server: ServerProcess) -> openai.OpenAI:
    """An unchanged OpenAI SDK app: only base_url differs."""
    return openai.OpenAI(base_url=base_server.base_url + "/v1", api_key="not-needed", timeout=600)


def _words(text: str) -> list[str]:
    return audio_mod.normalize_words(text)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sdk_json_text_and_verbose_json_with_word_and_segment_timestamps(sdk: openai.OpenAI, jfk_wav: Path) -> None:
    with jfk_wav.open("rb") as f:
        out = sdk.audio.transcriptions.create(model="whisper-1", file=f)
    assert _words(out.text) == REFERENCE, out.text
    with jfk_wav.open("rb") as f:
        text = sdk.audio.transcriptions.create(model="base", file=f, response_format="text", language="en")
    assert isinstance(text, str) and _words(text) == REFERENCE
    with jfk_wav.open("rb") as f:
        v = sdk.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                            timestamp_granularities=["word", "segment"])
    assert v.language == "english" and v.duration == pytest.approx(11.0, abs=0.1)
    assert _words(v.text) == REFERENCE
    assert v.words and [w.word.strip(",.") .lower() for w in v.words] == REFERENCE
    assert all(0 <= w.start <= w.end <= 11.1 for w in v.words)
    assert all(a.start <= b.start for a, b in zip(v.words, v.words[1:]))
    assert v.segments and _words(" ".join(s.text for s in v.segments)) == REFERENCE
    assert [s.id for s in v.segments] == list(range(len(v.segments)))
    with jfk_wav.open("rb") as f:
        only_words = sdk.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                     timestamp_granularities=["word"])
    assert only_words.words and only_words.segments is None
    # prompt and temperature reach whisper.cpp: an unpunctuated lower-case prompt makes the base model write so
    prompt = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
    with jfk_wav.open("rb") as f:
        styled = sdk.audio.transcriptions.create(model="whisper-1", file=f, prompt=prompt, temperature=0.0)
    assert _words(styled.text) == REFERENCE
    assert styled.text == styled.text.lower() and "," not in styled.text, styled.text
    assert out.text != out.text.lower()  # without the prompt: "And so my fellow Americans, ..."


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sdk_subtitles_translations_and_models(sdk: openai.OpenAI, base_server: ServerProcess, jfk_wav: Path) -> None:
    with jfk_wav.open("rb") as f:
        srt = sdk.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
    cues = parse_srt(srt)
    assert _words(" ".join(c.text for c in cues)) == REFERENCE and all(len(ln) <= 42 for c in cues for ln in c.lines)
    with jfk_wav.open("rb") as f:
        vtt = sdk.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    assert _words(" ".join(c.text for c in parse_vtt(vtt))) == REFERENCE
    with jfk_wav.open("rb") as f:
        tr = sdk.audio.translations.create(model="whisper-1", file=f)
    assert _words(tr.text) == REFERENCE  # English speech translated into English is the same sentence
    assert [m.id for m in sdk.models.list()] == ["base", "whisper-1"]
    # every request was a job: listed, done, and its transcript downloadable as a file
    with httpx.Client(base_url=base_server.base_url, timeout=60) as c:
        jobs = c.get("/jobs", params={"status": "done"}).json()["jobs"]
        assert jobs[0]["task"] == "translate" and all(j["filename"] == "jfk.wav" for j in jobs)
        r = c.get(f"/jobs/{jobs[1]['id']}/transcript.srt")
        assert r.status_code == 200 and r.headers["content-disposition"] == 'attachment; filename="jfk.srt"'
        assert _words(" ".join(c.text for c in parse_srt(r.text))) == REFERENCE


def test_openapi_describes_every_new_route(make_app) -> None:  # type: ignore[no-untyped-def]
    doc = make_app().client.get("/openapi.json").json()
    paths = doc["paths"]
    for path, method in [("/jobs", "get"), ("/jobs/{job_id}/transcript.{fmt}", "get"), ("/v1/models", "get"),
                         ("/v1/models/{model_id}", "get"), ("/v1/audio/transcriptions", "post"),
                         ("/v1/audio/translations", "post")]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from /openapi.json"
    listing = {p["name"] for p in paths["/jobs"]["get"]["parameters"]}
    assert listing == {"status", "limit", "cursor"}
    assert "JobList" in doc["components"]["schemas"] and "JobSummary" in doc["components"]["schemas"]
    cues = {p["name"] for p in paths["/jobs/{job_id}/transcript.{fmt}"]["get"]["parameters"]}
    assert {"max_line_chars", "max_lines", "max_cue_secs"} <= cues
    assert "purge" in {p["name"] for p in paths["/jobs/{job_id}"]["delete"]["parameters"]}
    submit = paths["/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert "priority" in submit
    body = paths["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file", "model"]
    assert set(body["properties"]) == {"file", "model", "language", "prompt", "response_format", "temperature",
                                       "timestamp_granularities[]"}
    assert body["properties"]["response_format"]["enum"] == ["json", "text", "srt", "verbose_json", "vtt"]


def test_bearer_auth_applies_and_the_sdk_api_key_is_the_token(tmp_path: Path, tiny_model: Path) -> None:
    d = tmp_path / "auth"
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    settings = ServerSettings(WHISPER_MODEL="tiny-test", DATA_DIR=d, IDLE_TIMEOUT_SECS=0, WHISPEROP_ALLOWED_HOSTS="testserver")
    jobs, blobs = SqliteJobStore.in_data_dir(d), LocalBlobStore.in_data_dir(d)
    runtime = LocalModelRuntime(tiny_model, jobs, blobs, EngineSettings(USE_GPU=False, WHISPER_THREADS=1),
                                idle_timeout_secs=0, gpu_poll_interval_secs=7)
    with TestClient(create_app(settings, runtime, jobs, blobs, auth_tokens_file=str(tokens))) as client:
        r = client.get("/v1/models")
        assert r.status_code == 401 and _is_openai_error(r.json()) and r.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/jobs").json() == {"error": "unauthorized"}
        wrong = openai.OpenAI(base_url="http://testserver/v1", api_key="guess", http_client=client, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        right = openai.OpenAI(base_url="http://testserver/v1", api_key="s3cret", http_client=client)
        assert [m.id for m in right.models.list()] == ["tiny-test", "whisper-1"]
    jobs.close()


def test_verbose_json_fields_are_derived_from_the_stored_result() -> None:
    import math
    import zlib

    from whisperop.api.openai_shapes import verbose_json
    from whisperop.core.models import Job, JobStatus, Segment, Word

    seg = Segment(index=0, start=1.25, end=3.5, text=" Ask not.",
                  words=[Word(text="Ask", start=1.25, end=1.6, probability=0.8), Word(text="not.", start=1.7, end=3.5,
                                                                                      probability=0.5)])
    job = Job(id="j", status=JobStatus.done, language="de", duration_secs=4.0, segments=[seg])
    doc = verbose_json(job, "transcribe", ["word", "segment"], None)
    assert doc["language"] == "german" and doc["duration"] == 4.0 and doc["text"] == "Ask not."
    s = doc["segments"][0]
    assert (s["id"], s["seek"], s["start"], s["end"], s["text"]) == (0, 125, 1.25, 3.5, " Ask not.")
    assert s["avg_logprob"] == round((math.log(0.8) + math.log(0.5)) / 2, 4)
    raw = " Ask not.".encode()
    assert s["compression_ratio"] == round(len(raw) / len(zlib.compress(raw)), 4)
    assert s["temperature"] is None and s["tokens"] == [] and s["no_speech_prob"] is None
    assert doc["words"] == [{"word": "Ask", "start": 1.25, "end": 1.6}, {"word": "not.", "start": 1.7, "end": 3.5}]
    assert verbose_json(job, "translate", [], 0.2)["segments"][0]["temperature"] == 0.2
    assert "words" not in verbose_json(job, "translate", [], 0.2)
