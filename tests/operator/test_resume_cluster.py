"""Issue 17's resume check at the issue's own size, in cluster mode: a 20-minute job whose
worker is killed -9 at exactly 50 % resumes on a new pod from its S3 checkpoint, decodes only
the chunks the dead worker had not finished, and its transcript equals an uninterrupted run's.

The tiny random-weight model keeps 20 minutes fast (its text is noise, but greedy noise is
deterministic). The middle chunk is held in whisper.cpp's abort callback on the worker that is
killed (WHISPEROP_FAULT_SLOW_CHUNK), so the kill lands at 50 % however fast the machine is."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster, wait_for
from .test_failures import _decoded, jfk_repeated_s3

pytestmark = pytest.mark.cluster

WORKER_ENV = {"TEMPERATURE_INC": "0", "CHUNK_TIME_LIMIT_MIN_SECS": "3600"}


@pytest.fixture(scope="module")
def twenty_minutes_s3(s3_env: Any, jfk_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """jfk.wav 110 times over: 20 min 10 s."""
    return jfk_repeated_s3(s3_env, jfk_wav, tmp_path_factory, 110)


def _segments(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    obj = cluster.s3_env.client().get_object(Bucket=cluster.s3_env.bucket, Key=f"results/{cluster.ns}/{name}/transcript.json")
    return json.loads(obj["Body"].read())["segments"]


def test_worker_killed_at_half_of_a_20_minute_job_resumes_to_the_same_transcript(
    cluster: Cluster, tiny_model: Path, twenty_minutes_s3: str
) -> None:
    from kubernetes import client

    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=600, resources={"gpus": 0})

    # the uninterrupted run
    cluster.create_job(twenty_minutes_s3, name="whole")
    pod_a = wait_for(lambda: (cluster.running_pods() or [None])[0], 40, "inference pod")
    worker = cluster.start_worker(pod_a, extra=WORKER_ENV)
    st = cluster.wait_phase("whole", ("Done", "Failed"), timeout=900)["status"]
    assert st["phase"] == "Done", st
    assert float(st["durationSecs"]) >= 20 * 60, st
    total = int(st["chunksTotal"])
    assert total >= 15, st  # ~60 s chunks (the worker default CHUNK_MAX_SECS)
    reference = _segments(cluster, "whole")
    worker.send_signal(signal.SIGKILL)  # idle: nothing to lose; the next worker of this pod holds the middle chunk
    worker.wait(10)

    half = total // 2
    worker = cluster.start_worker(pod_a, extra={**WORKER_ENV, "WHISPEROP_FAULT_SLOW_CHUNK": f"{half}:1"})
    cluster.create_job(twenty_minutes_s3, name="resume")
    wait_for(lambda: (s := cluster.jobs.get("resume").get("status") or {}).get("phase") == "Running"
             and int(s.get("chunk") or 0) == half, 600, f"{half} of {total} chunks checkpointed")
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    client.CoreV1Api(cluster.api).delete_namespaced_pod(pod_a, cluster.ns, grace_period_seconds=0)

    wait_for(lambda: (cluster.jobs.get("resume").get("status") or {}).get("phase") == "Queued", 60, "requeue")
    pod_b = wait_for(lambda: next((p for p in cluster.running_pods() if p != pod_a), None), 60, "replacement pod")
    cluster.start_worker(pod_b, extra=WORKER_ENV)
    st = cluster.wait_phase("resume", ("Done", "Failed"), timeout=900)["status"]
    assert st["phase"] == "Done" and st["worker"] == pod_b and int(st["chunksTotal"]) == total, st
    on_b = _decoded(cluster.tmp / f"worker-{pod_b}.log")
    assert sorted(on_b) == list(range(half, total)), f"the new worker decoded {on_b}; chunks 0..{half - 1} were checkpointed"
    assert _segments(cluster, "resume") == reference
