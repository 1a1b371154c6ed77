"""bench/gpu.py's many-jobs case cuts real speech into jobs whose reference
text is exact: a job boundary falls only at a pause between clips (never
inside a clip, never between clips joined with no pause), each job's
reference is the text of the clips it holds, and the jobs wrap around the
speech when it is shorter than their total. A wrong cut would silently turn
the many-jobs WER into noise (issue 18: "same WER ±0.5 points")."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from whisperop.inference.audio import SAMPLE_RATE, decode_audio
from whisperop.testing.speech import build_speech, english_sentences, espeak_available

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_jobs_are_cut_at_pauses_with_exact_references(tmp_path: Path) -> None:
    gpu = _bench_gpu()
    sentences = english_sentences()[:8]
    # every 3rd clip joined to the previous one with no pause: those two must stay in one job
    speech = build_speech(sentences, no_pause_every=3, seed=5)
    assert len(speech.texts) == len(speech.spans) == 8
    wav = speech.write(tmp_path / "speech.wav")
    (tmp_path / "speech.spans.json").write_text(json.dumps([[s, e, t] for (s, e), t in zip(speech.spans, speech.texts)]))
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()

    jobs = gpu.cut_jobs(wav, 6, (6.0, 12.0), jobs_dir)

    assert len(jobs) == 6
    clip_texts = speech.texts
    joined = {i for i in range(1, len(clip_texts)) if speech.spans[i][0] - speech.spans[i - 1][1] < 0.2}
    assert joined, "the recipe joins some clips with no pause"
    position = 0
    total_secs = 0.0
    for path, reference, secs in jobs:
        with decode_audio(path) as audio:
            assert abs(audio.duration_secs - secs) < 0.01
            assert audio.n_samples > SAMPLE_RATE
        # the reference is a run of whole clips, continuing where the last job ended (wrapping to the start)
        n = 0
        while " ".join(clip_texts[position:position + n]) != reference:
            n += 1
            assert position + n <= len(clip_texts), f"{reference!r} is not a run of clips from clip {position}"
        end = position + n
        assert end == len(clip_texts) or end not in joined, f"a job ends between clips {end - 1} and {end}, joined with no pause"
        total_secs += secs
        position = 0 if end == len(clip_texts) or speech.spans[-1][1] - speech.spans[end][0] < 6.0 else end
    assert total_secs > speech.duration_secs, "six jobs of 6-12 s are longer than the speech: they wrap"


def test_issue18_groups_parse() -> None:
    gpu = _bench_gpu()
    assert gpu.GROUPS["issue18"] == gpu.GROUPS["issue18-whispercpp"] + gpu.GROUPS["issue18-ct2"]
    for kind in gpu.GROUPS["issue18"]:
        gpu.parse(kind)  # every row of the table is a known configuration
    ct2 = gpu.parse("ours-ct2-b1-s32")
    assert (ct2["engine"], ct2["beam"], ct2["batch"]) == ("ours-ct2", 1, 32)
    many = gpu.parse("many32-ours-p8-b1-fa")
    assert (many["jobs"], many["single"], many["parallelism"], many["fa"]) == (32, "ours-p8-b1-fa", 8, True)
    q = gpu.parse("rawq-p16-b1-fa")
    assert (q["engine"], q["contexts"], q["fa"], q["timestamps"]) == ("rawq", 16, True, False)
    ts = gpu.parse("rawq-p8-b1-fa-ts")  # the harness in our decode mode
    assert (ts["contexts"], ts["fa"], ts["timestamps"]) == (8, True, True)
    assert "rawq-p8-b1-fa-ts" in gpu.GROUPS["issue18-whispercpp"]
    assert gpu.parse("fwbatch-b1")["batch"] == 16 and gpu.parse("fwbatch-b1-s128")["batch"] == 128


def test_issue18_ratios_state_engine_overhead_and_timestamp_cost() -> None:
    """With the harness run in our decode mode (``-ts``) beside the plain one,
    the derived table states ours / -ts (engine overhead) and -ts / plain."""
    gpu = _bench_gpu()
    rows = [{"audio": "long.flac", "kind": k, "x_realtime": x, "wer": w}
            for k, x, w in (("ours-p8-b1-fa-c30", 500.0, 0.086), ("rawq-p8-b1-fa", 750.0, 0.065), ("rawq-p8-b1-fa-ts", 550.0, 0.085))]
    d = gpu.derive(rows)
    assert d["ours-p8-b1-fa-c30 / rawq-p8-b1-fa: speed (same windows) (target ≥ 0.9)"] == round(500 / 750, 3)
    assert d["ours-p8-b1-fa-c30 / rawq-p8-b1-fa-ts: speed (same windows), engine overhead (target ≥ 0.9)"] == round(500 / 550, 3)
    assert d["rawq-p8-b1-fa-ts / rawq-p8-b1-fa: speed, what timestamps cost"] == round(550 / 750, 3)
    assert d["rawq-p8-b1-fa-ts − rawq-p8-b1-fa: WER points"] == 2.0
