"""The page and the API docs in headless Chromium against a real ``whisperop serve`` (tiny model).

What a person sees and does that does not depend on the quality of the
transcript: the docs render with no other host reachable, the model badge
follows the model, a token is asked for when auth is on, the page is
keyboard-usable and fits a phone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.support.browser import playwright_expect
from tests.support.server import ServerProcess

expect = playwright_expect()


def test_page_and_docs_make_no_request_to_another_host(open_page: Any, tiny_server: ServerProcess) -> None:
    s = open_page(tiny_server)
    page = s.goto("/")
    expect(page.locator("#model-state")).not_to_have_attribute("data-state", "unknown")
    expect(page.locator("#model")).to_have_value("tiny-test")

    page.goto(s.origin + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("whisper-operator")
    expect(page.locator(".opblock-summary-path", has_text="/jobs/{job_id}/stream").first).to_be_visible()

    page.goto(s.origin + "/redoc")
    expect(page.locator("h1", has_text="whisper-operator")).to_be_visible()
    expect(page.get_by_role("heading", name="Submit an audio file for transcription")).to_be_visible()

    assert s.foreign == [], f"requests to other hosts: {s.foreign}"
    asked = {u.removeprefix(s.origin) for u in s.requests}
    # the docs really loaded their scripts from the facade (not just rendered an empty shell)
    assert {"/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/redoc/redoc.standalone.js",
            "/openapi.json", "/static/app.js"} <= asked
    assert s.errors == []


def _watch_badge(page: Any) -> None:
    page.evaluate("""() => {
        const badge = document.getElementById('model-state');
        window.badgeStates = [badge.dataset.state];
        new MutationObserver(() => window.badgeStates.push(badge.dataset.state))
            .observe(badge, {attributes: true, attributeFilter: ['data-state']});
    }""")


def test_model_badge_follows_load_waiting_for_gpu_and_unload(open_page: Any, servers: Any, tiny_model: Path) -> None:
    # one load attempt fails as if VRAM were full: unloaded → loading → waiting_for_gpu → loading → ready
    srv = servers.start("badge", tiny_model, WHISPER_MODEL="tiny-test", WHISPEROP_FAULT_LOAD_OOM_COUNT="1")
    page = open_page(srv).goto("/")
    badge = page.locator("#model-state")
    expect(badge).to_have_attribute("data-state", "unloaded")
    expect(page.get_by_role("button", name="Unload")).to_be_disabled()
    _watch_badge(page)

    page.get_by_role("button", name="Load model").click()
    expect(badge).to_have_attribute("data-state", "ready", timeout=60_000)
    expect(badge).to_have_text("ready")
    states = page.evaluate("window.badgeStates")
    assert "waiting_for_gpu" in states and "loading" in states, states
    assert states.index("waiting_for_gpu") < len(states) - 1
    expect(page.get_by_role("button", name="Load model")).to_be_disabled()

    page.get_by_role("button", name="Unload").click()
    expect(badge).to_have_attribute("data-state", "unloaded", timeout=60_000)
    expect(badge).to_have_text("unloaded")
    expect(page.get_by_role("button", name="Load model")).to_be_enabled()


def test_auth_enabled_server_asks_for_the_token(open_page: Any, servers: Any, tiny_model: Path, web_dir: Path) -> None:
    tokens = web_dir / "tokens"
    tokens.write_text("# test token\nright-token-4f1c\n")
    srv = servers.start("auth", tiny_model, WHISPER_MODEL="tiny-test", WHISPEROP_AUTH_TOKENS_FILE=str(tokens))
    s = open_page(srv)
    sent: list[tuple[str, str | None]] = []
    s.page.on("request", lambda r: sent.append((r.url.removeprefix(s.origin), r.headers.get("authorization"))))
    page = s.goto("/")

    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#token-reason")).to_contain_text("needs an access token")
    page.get_by_label("Bearer token").fill("wrong-token")
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#token-reason")).to_contain_text("refused")
    expect(dialog).to_be_visible()

    page.get_by_label("Bearer token").fill("right-token-4f1c")
    page.get_by_role("button", name="Use token").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#model-state")).to_have_attribute("data-state", "unloaded")

    page.get_by_role("button", name="Load model").click()
    expect(page.locator("#model-state")).to_have_attribute("data-state", "ready", timeout=60_000)
    api_calls = [(u, h) for u, h in sent if u.startswith(("/model/", "/jobs"))]
    assert ("/model/load", "Bearer right-token-4f1c") in api_calls
    # after the right token, every API call carries it (SSE included: fetch streaming, not EventSource)
    last_wrong = max(i for i, (_, h) in enumerate(api_calls) if h != "Bearer right-token-4f1c")
    assert all(h == "Bearer right-token-4f1c" for _, h in api_calls[last_wrong + 1:])
    assert ("/model/events", "Bearer right-token-4f1c") in api_calls[last_wrong + 1:]

    # the docs fetch /openapi.json (behind auth) with the token the page keeps for this tab
    page.goto(s.origin + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("whisper-operator")
    assert ("/openapi.json", "Bearer right-token-4f1c") in sent


def test_docs_ask_for_the_token_themselves(open_page: Any, servers: Any, tiny_model: Path, web_dir: Path) -> None:
    tokens = web_dir / "tokens-docs"
    tokens.write_text("docs-token-77\n")
    srv = servers.start("auth-docs", tiny_model, WHISPER_MODEL="tiny-test", WHISPEROP_AUTH_TOKENS_FILE=str(tokens))
    s = open_page(srv)
    prompts: list[str] = []

    def answer(d: Any) -> None:
        prompts.append(d.message)
        d.accept("docs-token-77")

    s.page.on("dialog", answer)
    page = s.goto("/redoc")
    expect(page.get_by_role("heading", name="Submit an audio file for transcription")).to_be_visible()
    assert len(prompts) == 1 and "needs an access token" in prompts[0]
    assert s.foreign == [] and s.errors == []


def test_keyboard_reaches_every_control_in_order(open_page: Any, tiny_server: ServerProcess) -> None:
    page = open_page(tiny_server).goto("/")
    expect(page.locator("#model-state")).not_to_have_attribute("data-state", "unknown")
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    order = ["audio", "language", "task", "model", "submit"]
    positions = [focused.index(x) for x in order]
    assert positions == sorted(positions), focused
    assert "model-load" in focused or "model-unload" in focused, focused
    # the hidden file input shows focus on its drop zone
    page.locator("#audio").focus()
    outline = page.evaluate("getComputedStyle(document.getElementById('drop')).outlineStyle")
    assert outline == "solid"


def test_page_fits_a_phone(open_page: Any, tiny_server: ServerProcess) -> None:
    page = open_page(tiny_server, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True).goto("/")
    expect(page.locator("#model-state")).not_to_have_attribute("data-state", "unknown")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    for sel in ("#drop", "#language", "#submit", "#model-load"):
        box = page.locator(sel).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, (sel, box)
    # one column: the transcript card is below the form, not beside it
    form, transcript = page.locator("#submit-form").bounding_box(), page.locator("#transcript").bounding_box()
    assert transcript["y"] > form["y"] + form["height"]


def test_bad_upload_shows_the_servers_error(open_page: Any, tiny_server: ServerProcess, web_dir: Path) -> None:
    bad = web_dir / "not-audio.txt"
    bad.write_text("this is not audio\n" * 100)
    page = open_page(tiny_server).goto("/")
    page.locator("#audio").set_input_files(str(bad))
    page.get_by_role("button", name="Transcribe").click()
    job = page.locator(".job").first
    expect(job).to_have_attribute("data-status", "failed", timeout=120_000)
    expect(job.locator(".job-note")).not_to_be_empty()
    stored = json.loads(page.evaluate("localStorage.getItem('whisperop.jobs')"))
    assert stored[0]["filename"] == "not-audio.txt"


def test_several_files_at_once_and_the_queue_survives_a_reload(open_page: Any, tiny_server: ServerProcess, web_dir: Path) -> None:
    from tests.support import audio as audio_mod

    files = [audio_mod.tone_wav(web_dir / f"tone-{i}.wav", 1.5, 300.0 + 100 * i) for i in range(2)]
    page = open_page(tiny_server).goto("/")
    page.locator("#audio").set_input_files([str(f) for f in files])
    expect(page.locator("#chosen")).to_contain_text("2 files")
    page.get_by_role("button", name="Transcribe").click()
    # the server's GET /jobs (issue 19) lists the earlier tests' jobs too (no auth here): count this test's own
    jobs = page.locator(".job").filter(has=page.locator(".job-name", has_text=re.compile(r"^tone-[01]\.wav$")))
    expect(jobs).to_have_count(2)
    for i in range(2):
        expect(jobs.nth(i)).to_have_attribute("data-status", "done", timeout=300_000)
        expect(jobs.nth(i).locator(".job-pct")).to_have_text("100 %")
    # sent in the order chosen, listed newest first
    expect(jobs.nth(0).locator(".job-name")).to_have_text("tone-1.wav")
    ids = [jobs.nth(i).get_attribute("data-job-id") for i in range(2)]

    page.reload()
    jobs = page.locator(".job")
    # newest first; a server with GET /jobs (issue 19) also lists the other tests' jobs, below these two
    expect(page.locator(f'.job[data-job-id="{ids[1]}"]')).to_have_count(1)
    assert [jobs.nth(i).get_attribute("data-job-id") for i in range(2)] == ids
    expect(jobs.nth(1)).to_have_attribute("data-status", "done")
    jobs.nth(1).get_by_role("button", name="Show transcript").click()
    expect(page.locator("#transcript-meta")).to_contain_text("tone-0.wav")
    expect(page.locator("#player")).to_be_hidden()  # the audio stayed in the tab that sent it
    expect(page.locator("#legend")).to_contain_text("do not play here")


def test_a_file_sent_while_the_model_loads_waits_in_the_page_and_goes_through(
        open_page: Any, servers: Any, tiny_model: Path, web_dir: Path) -> None:
    from tests.support import audio as audio_mod

    # every load takes 3 s longer: the first POST /jobs is answered 503 (and starts the load)
    srv = servers.start("slowload", tiny_model, WHISPER_MODEL="tiny-test", WHISPEROP_FAULT_LOAD_DELAY_SECS="3")
    page = open_page(srv).goto("/")
    expect(page.locator("#model-state")).to_have_attribute("data-state", "unloaded")
    page.locator("#audio").set_input_files(str(audio_mod.tone_wav(web_dir / "tone-wait.wav", 1.5)))
    page.get_by_role("button", name="Transcribe").click()
    job = page.locator(".job").first
    expect(job).to_have_attribute("data-status", "waiting")
    expect(job.locator(".job-status")).to_have_text("waiting for model")
    expect(page.locator("#model-state")).to_have_attribute("data-state", "loading")
    expect(job).to_have_attribute("data-status", "done", timeout=120_000)
    expect(job.locator(".job-note")).to_be_empty()
    # one job, not two: the 503 kept nothing and the page sent the file again once
    assert len(json.loads(page.evaluate("localStorage.getItem('whisperop.jobs')"))) == 1


def test_docs_without_a_token_say_so(open_page: Any, servers: Any, tiny_model: Path, web_dir: Path) -> None:
    tokens = web_dir / "tokens-none"
    tokens.write_text("some-token\n")
    srv = servers.start("auth-none", tiny_model, WHISPER_MODEL="tiny-test", WHISPEROP_AUTH_TOKENS_FILE=str(tokens))
    s = open_page(srv)
    s.page.on("dialog", lambda d: d.dismiss())
    page = s.goto("/docs")
    expect(page.locator("#viewer")).to_contain_text("Reload the page to enter a token")


def test_dropping_files_on_the_zone_chooses_them(open_page: Any, tiny_server: ServerProcess, web_dir: Path) -> None:
    import base64

    from tests.support import audio as audio_mod

    wav = audio_mod.tone_wav(web_dir / "dropped.wav", 1.5)
    page = open_page(tiny_server).goto("/")
    data = page.evaluate_handle("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.wav', {type: 'audio/wav'}));
        dt.items.add(new File([bytes], 'again.wav', {type: 'audio/wav'}));
        return dt;
    }""", base64.b64encode(wav.read_bytes()).decode())
    page.dispatch_event("#drop", "dragenter", {"dataTransfer": data})
    expect(page.locator("#drop")).to_have_class(re.compile(r"\bover\b"))
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})
    expect(page.locator("#chosen")).to_have_text("2 files: dropped.wav, again.wav")
    expect(page.locator("#drop")).not_to_have_class(re.compile(r"\bover\b"))


def _axe_violations(page: Any) -> list[str]:
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        from tests.support.browser import _missing

        _missing("axe-playwright-python is not installed (the 'test' extra)")
    found = Axe().run(page).response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}" for v in found]


def test_axe_finds_no_accessibility_violation(open_page: Any, tiny_server: ServerProcess, web_dir: Path,
                                              servers: Any, tiny_model: Path) -> None:
    """axe-core's default rules (labels, names, roles, colour contrast, ...) in light and dark, with a
    queue and a transcript on screen, and on the token dialog."""
    from tests.support import audio as audio_mod

    wav = audio_mod.tone_wav(web_dir / "tone-axe.wav", 1.5)
    for scheme in ("light", "dark"):
        page = open_page(tiny_server, color_scheme=scheme).goto("/")
        expect(page.locator("#model-state")).not_to_have_attribute("data-state", "unknown")
        assert _axe_violations(page) == [], scheme
        page.locator("#audio").set_input_files(str(wav))
        page.get_by_role("button", name="Transcribe").click()
        expect(page.locator(".job").first).to_have_attribute("data-status", "done", timeout=120_000)
        page.locator(".job").first.get_by_role("button", name="Show transcript").click()
        expect(page.locator("#transcript-body")).to_be_visible()
        assert _axe_violations(page) == [], scheme
    tokens = web_dir / "tokens-axe"
    tokens.write_text("axe-token\n")
    srv = servers.start("auth-axe", tiny_model, WHISPER_MODEL="tiny-test", WHISPEROP_AUTH_TOKENS_FILE=str(tokens))
    page = open_page(srv).goto("/")
    expect(page.locator("#token-dialog")).to_be_visible()
    assert _axe_violations(page) == []
