"""A person transcribing jfk.wav in headless Chromium, against ``whisperop serve`` with the real base weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import audio as audio_mod
from tests.support.browser import playwright_expect
from tests.support.server import ServerProcess

expect = playwright_expect()

pytestmark = pytest.mark.slow

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "web-ui.png"


@pytest.fixture(scope="module")
def base_server(servers: Any) -> ServerProcess:
    from whisperop.core.settings import EngineSettings
    from whisperop.modelstore.cache import resolve_model

    # base-q8_0: the weights `whisperop serve` uses by default (converted into the model cache on first use)
    model = resolve_model("base-q8_0", EngineSettings().model_cache_dir)
    return servers.start("base", model, WHISPER_MODEL="base-q8_0", CHUNK_MAX_SECS="20")


def test_transcribe_jfk_read_play_and_download(open_page: Any, base_server: ServerProcess, tmp_path: Path) -> None:
    s = open_page(base_server, viewport={"width": 1280, "height": 720})
    page = s.goto("/")
    expect(page.locator("#model-state")).to_have_attribute("data-state", "unloaded")
    # the model starts unloaded: the first upload is answered 503, which starts the load;
    # the page keeps the file and sends it again when the model is ready
    page.locator("#audio").set_input_files(str(audio_mod.JFK_WAV))
    expect(page.locator("#chosen")).to_have_text("jfk.wav")
    page.get_by_label("Language").select_option("en")
    page.get_by_role("button", name="Transcribe").click()

    job = page.locator(".job").first
    expect(job).to_have_attribute("data-status", "done", timeout=600_000)
    expect(job.locator(".job-pct")).to_have_text("100 %")
    expect(page.locator("#model-state")).to_have_attribute("data-state", "ready")

    words = page.locator("#segments .word")
    spoken = " ".join(words.all_inner_texts())
    assert audio_mod.normalize_words(spoken) == audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))
    assert s.foreign == [] and s.errors == []

    # the job as the server has it: the page followed the same job
    job_id = job.get_attribute("data-job-id")
    server_job = httpx.get(f"{s.origin}/jobs/{job_id}").json()
    assert server_job["status"] == "done" and server_job["filename"] == "jfk.wav"

    # click a word: the browser's own copy of the file plays from that word's start
    country = words.filter(has_text=re.compile(r"^country\.?$")).last
    start = float(country.get_attribute("data-start") or "nan")
    country.click()
    page.wait_for_function("document.getElementById('player').currentTime > 0")
    t = page.evaluate("document.getElementById('player').currentTime")
    assert start - 0.05 <= t <= start + 3.0, (start, t)
    assert page.evaluate("document.getElementById('player').src").startswith("blob:")

    # keyboard: the words are one tab stop; arrows move, Enter plays from the focused word
    page.evaluate("document.getElementById('player').pause()")
    words.first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    third = words.nth(2)
    expect(third).to_be_focused()
    assert third.get_attribute("tabindex") == "0" and words.first.get_attribute("tabindex") == "-1"
    page.keyboard.press("Enter")
    third_start = float(third.get_attribute("data-start") or "nan")
    page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {third_start}) < 3")
    assert page.evaluate("document.getElementById('player').currentTime") >= third_start - 0.05

    if SCREENSHOT.parent.is_dir() and _wants_screenshot():
        country.click()
        page.wait_for_selector(".word.now")
        page.evaluate("document.getElementById('player').pause(); document.activeElement.blur()")
        page.screenshot(path=str(SCREENSHOT))

    with page.expect_download() as dl:
        page.get_by_role("button", name="SRT").click()
    srt_path = tmp_path / "jfk.srt"
    dl.value.save_as(srt_path)
    assert dl.value.suggested_filename == "jfk.srt"
    _check_srt(srt_path.read_text(), server_job)

    # every format is byte for byte what `whisperop transcribe --format` writes for the same segments
    from whisperop.core.models import Segment, TranscriptionResult
    from whisperop.inference.writers import render

    result = TranscriptionResult(language=server_job["language"], duration_secs=server_job["duration_secs"],
                                 segments=[Segment.model_validate(x) for x in server_job["segments"]])

    def expected(fmt: str) -> str:
        # the server's own file where it has a transcript route (issue 19), else the CLI writers' output
        r = httpx.get(f"{s.origin}/jobs/{job_id}/transcript.{fmt}")
        return r.text if r.status_code == 200 else render(result, fmt)

    assert srt_path.read_text() == expected("srt")
    for fmt in ("json", "vtt", "txt"):
        with page.expect_download() as dl:
            page.get_by_role("button", name=fmt.upper()).click()
        assert dl.value.suggested_filename == f"jfk.{fmt}"
        got = Path(dl.value.path()).read_text()
        if fmt == "json":  # same document; JavaScript writes 11.0 as 11
            assert json.loads(got) == json.loads(expected("json"))
        else:
            assert got == expected(fmt), fmt


def _secs(cue: str) -> float:
    h, m, rest = cue.split("\n")[1].split(" --> ")[0].split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest.replace(",", "."))


def _wants_screenshot() -> bool:
    import os

    return os.environ.get("WHISPEROP_WEB_SCREENSHOT") == "1"


def _check_srt(text: str, job: dict) -> None:
    """Numbered cues in time order inside the audio, with the reference sentence as their text."""
    cues = [c for c in text.strip().split("\n\n") if c]
    assert len(cues) >= len(job["segments"]) >= 1
    stamp = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)$")
    last_end = 0.0
    for i, cue in enumerate(cues, start=1):
        lines = cue.split("\n")
        assert lines[0] == str(i) and len(lines) >= 3, cue
        m = stamp.match(lines[1])
        assert m, lines[1]
        g = [int(x) for x in m.groups()]
        start, end = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000, g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        assert last_end - 0.001 <= start < end <= job["duration_secs"] + 0.5, (cue, last_end)
        last_end = end
    first = job["segments"][0]  # the first cue starts with the first segment, or its first word (issue 19's cues)
    assert first["start"] - 0.001 <= _secs(cues[0]) <= max(first["start"], *(w["start"] for w in first["words"][:1])) + 0.001
    said = " ".join(c.split("\n", 2)[2] for c in cues)
    assert audio_mod.normalize_words(said) == audio_mod.normalize_words(audio_mod.reference_text("jfk.wav"))


def test_cancel_a_long_job(open_page: Any, base_server: ServerProcess, web_dir: Path) -> None:
    long_wav = audio_mod.bursts_wav(web_dir / "long.wav", 600.0, seed=3)  # 600 s: minutes of work for base on 2 cores
    s = open_page(base_server)
    page = s.goto("/")
    badge = page.locator("#model-state")
    expect(badge).not_to_have_attribute("data-state", "unknown")
    if badge.get_attribute("data-state") != "ready":  # the jfk test before this one may have loaded it
        page.get_by_role("button", name="Load model").click()
    expect(badge).to_have_attribute("data-state", "ready", timeout=300_000)
    page.locator("#audio").set_input_files(str(long_wav))
    page.get_by_role("button", name="Transcribe").click()

    job = page.locator(".job").first
    expect(job).to_have_attribute("data-status", "running", timeout=300_000)
    job.get_by_role("button", name="Cancel").click()
    expect(job).to_have_attribute("data-status", "cancelled")
    expect(job.get_by_role("button", name="Cancel")).to_be_hidden()
    server_job = httpx.get(f"{s.origin}/jobs/{job.get_attribute('data-job-id')}").json()
    assert server_job["status"] == "cancelled"
    assert s.errors == []
