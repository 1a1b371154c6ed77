"""Cancel of a running job, and SIGTERM (scale-down) that hands back or finishes a job."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster, PhaseRecorder, follow, wait_for
from .test_failures import long_s3  # noqa: F401  (fixture)

pytestmark = pytest.mark.cluster


def _start(cluster: Cluster, tiny_model: Path, audio: str, name: str, extra: dict[str, str] | None = None) -> str:
    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=120, resources={"gpus": 0})
    cluster.create_job(audio, name=name)
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 40, "inference pod")
    cluster.start_worker(pod, extra=extra)
    wait_for(lambda: (cluster.jobs.get(name)["status"].get("chunksTotal") or 0) > 0, 60, f"{name} decoded and running")
    return pod


def test_cancel_running_job_aborts_it_and_the_worker_goes_on(cluster: Cluster, recorder: PhaseRecorder,
                                                            tiny_model: Path, long_s3: str, jfk_s3: str) -> None:  # noqa: F811
    _start(cluster, tiny_model, long_s3, "long")
    cluster.jobs.patch("long", {"spec": {"cancel": True}})
    st = cluster.wait_phase("long", ("Cancelled", "Done", "Failed"), timeout=60)["status"]
    assert st["phase"] == "Cancelled" and not st.get("result"), st
    assert recorder.settled("long", "Cancelled") == ["Queued", "Running", "Cancelled"]
    cluster.create_job(jfk_s3, name="next")
    assert cluster.wait_phase("next", ("Done", "Failed"), timeout=120)["status"]["phase"] == "Done"


def test_sigterm_hands_the_running_job_back(cluster: Cluster, recorder: PhaseRecorder, tiny_model: Path,
                                            long_s3: str) -> None:  # noqa: F811
    pod = _start(cluster, tiny_model, long_s3, "long", extra={"WHISPEROP_DRAIN_SECS": "0.5"})
    cluster.workers[pod].send_signal(signal.SIGTERM)
    assert cluster.workers[pod].wait(30) == 0
    st = cluster.wait_phase("long", "Queued", timeout=30)["status"]
    assert st["attempts"] == 0 and not st.get("worker"), st  # a hand-back is not a lost attempt
    cluster.start_worker(pod)
    st = cluster.wait_phase("long", ("Done", "Failed"), timeout=300)["status"]
    assert st["phase"] == "Done" and st["attempts"] == 0
    assert recorder.settled("long", "Done") == ["Queued", "Running", "Queued", "Running", "Done"]
    assert recorder.done_writes["long"] == 1


def test_per_job_chunk_limit_bounds_a_runaway_chunk_on_the_worker(cluster: Cluster, tiny_model: Path,
                                                                 jfk_s3: str) -> None:  # noqa: F811
    """Issue 17 on the worker: spec.chunkTimeLimitFactor reaches the engine; chunk 0 (held by the
    WHISPEROP_FAULT_SLOW_CHUNK hook until a limit stops it) is retried, fails, and is listed in
    transcript.json, and the job is Done. Default limits (20 + 5 x 30 s, twice) would outlast the wait.
    (That the next queued job then runs is tests/contract/test_limits.py; here the hook would hold
    every job's chunk 0.)"""
    import json

    from whisperop.core.crds import split_s3_uri

    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=120, resources={"gpus": 0})
    cluster.create_job(jfk_s3, name="bounded", chunkTimeLimitFactor="0.01")
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 40, "inference pod")
    cluster.start_worker(pod, extra={"WHISPEROP_FAULT_SLOW_CHUNK": "0:2", "CHUNK_TIME_LIMIT_MIN_SECS": "20",
                                     "TEMPERATURE_INC": "0"})
    st = cluster.wait_phase("bounded", ("Done", "Failed"), timeout=200)["status"]
    assert st["phase"] == "Done", st
    bucket, key = split_s3_uri(st["result"]["json"])
    doc = json.loads(cluster.s3_env.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    [bad] = doc["degraded_chunks"]
    assert bad["index"] == 0 and bad["failed"] is True and "attempt 2" in bad["reason"], bad
    assert doc["segments"] == []


def test_an_idle_engine_dying_out_of_memory_on_the_worker_waits_for_the_gpu_and_loads_again(
        cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    """Issue 14: the worker's engine child (``ENGINE_ISOLATION=process``) prints whisper.cpp's
    out-of-memory lines and exits while no job runs (``WHISPEROP_FAULT_CHILD_DIE=idle:oom:1``).
    Without a job to find it, the worker reports ``waiting_for_gpu`` (figures) on its pod, then
    loads again; the model's status carries the decode streams; a job then runs."""
    import json
    import threading

    from kubernetes import client

    from whisperop.core import crds

    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=300, resources={"gpus": 0}, gpuPollIntervalSeconds=3)
    cluster.models.patch("default", crds.demand_annotation("load"))
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 60, "inference pod")
    seen: list[dict] = []
    stop = threading.Event()

    def record(p: Any) -> None:  # every change of the worker's load state (a watch sees every write)
        ann = (p.metadata.annotations or {}).get(crds.ANN_LOAD_STATE)
        doc = json.loads(ann) if ann else None
        if doc is not None and (not seen or seen[-1] != doc):
            seen.append(doc)

    def watch_annotation() -> None:
        follow(stop, client.CoreV1Api(cluster.api).list_namespaced_pod, cluster.ns, field_selector=f"metadata.name={pod}",
               on_object=record, timeout_seconds=2, retry_secs=0.2)

    t = threading.Thread(target=watch_annotation, daemon=True)
    t.start()
    try:
        cluster.start_worker(pod, extra={"ENGINE_ISOLATION": "process", "WHISPEROP_FAULT_CHILD_DIE": "idle:oom:1"})
        wait_for(lambda: [d["state"] for d in seen].count("ready") >= 2, 120, "ready, then ready again")
    finally:
        stop.set()
        t.join(10)
    states = [d["state"] for d in seen]
    assert states == ["loading", "ready", "waiting_for_gpu", "loading", "ready"], seen
    waiting = seen[2]
    assert waiting["retryInSecs"] == 3 and waiting["vramNeededMB"] >= 1 and "out of GPU memory" in waiting["message"], waiting
    assert (seen[-1]["streams"], seen[-1]["streamsWanted"]) == (1, 1), seen[-1]
    wait_for(lambda: cluster.model_status().get("streams") == 1, 30, "streams in the WhisperModel status")
    assert cluster.model_status()["streamsWanted"] == 1
    cluster.create_job(jfk_s3, name="after")
    assert cluster.wait_phase("after", ("Done", "Failed"), timeout=180)["status"]["phase"] == "Done"
