"""Many jobs on one engine, on the CPU, with the tiny random-weight model:
its decodes are fast, so what the engine does around them (audio decode,
plan, handing chunks to streams) shows as it does on the GPU (issue 18's
many-jobs case). 16 WAV jobs of 60-120 s of noise bursts, 2 streams, ≤ 30 s
chunks: wall, when the first whisper.cpp call started, when jobs finished
(first / median) and in which order; ``single``: the same audio as one file.

    python bench/many_jobs_cpu.py LABEL [single]

Run another checkout's engine by putting a package shim first on PYTHONPATH
(as bench/gpu.py's ``ensure_importable`` builds one); figures in
docs/benchmarks-gpu.md ("Round 4")."""
import json
import sys
import tempfile
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from whisperop.core.settings import EngineSettings
from whisperop.inference.audio import write_wav
from whisperop.inference.engine import WhisperEngine, TranscribeRequest
from whisperop.inference.whispercpp import WhisperContext
from whisperop.modelstore.tiny import build_tiny_model

work = Path(tempfile.gettempdir()) / "whisperop-many-cpu"
work.mkdir(exist_ok=True)
model = work / "tiny.bin"
if not model.exists():
    build_tiny_model(model)
rng = np.random.default_rng(0)
jobs = []
for j in range(16):
    secs = rng.uniform(60, 120)
    parts = []
    while sum(p.size for p in parts) < secs * 16000:
        parts += [(rng.standard_normal(int(rng.uniform(4, 9) * 16000)) * 0.2).astype(np.float32), np.zeros(8000, np.float32)]
    p = work / f"job{j}.wav"
    if not p.exists():
        write_wav(p, np.concatenate(parts))
    jobs.append(p)
if len(sys.argv) > 2 and sys.argv[2] == "single":  # the same audio as one file
    from whisperop.inference.audio import decode_audio
    allp = work / "all.wav"
    if not allp.exists():
        pcm = []
        for p in jobs:
            with decode_audio(p) as a:
                pcm.append(a.read())
        write_wav(allp, np.concatenate(pcm))
    jobs = [allp]
eng = WhisperEngine(model, EngineSettings(USE_GPU=False, PARALLELISM=2, TEMPERATURE_INC=0.0, CHUNK_MAX_SECS=30))
eng.wait_all_loaded()
first = []
real = WhisperContext.full
def spy(self, pcm, *a, **k):
    if not first: first.append(time.perf_counter())
    return real(self, pcm, *a, **k)
WhisperContext.full = spy
done = {}
t0 = time.perf_counter()
def one(j):
    r = eng.transcribe_file(jobs[j], TranscribeRequest(language="en"))
    done[j] = time.perf_counter() - t0
    return r.chunks
with ThreadPoolExecutor(len(jobs)) as pool:
    chunks = sum(pool.map(one, range(len(jobs))))
wall = time.perf_counter() - t0
lat = sorted(done.values())
order = [j for j, _ in sorted(done.items(), key=lambda kv: kv[1])]
print(json.dumps({"code": " ".join(sys.argv[1:]), "jobs": len(jobs), "chunks": chunks, "wall_secs": round(wall, 2),
                  "first_whisper_call_secs": round(first[0] - t0, 3), "job_done_median_secs": round(lat[len(lat)//2], 2),
                  "job_done_first_secs": round(lat[0], 2), "done_order": order}))
eng.close()
