"""Concurrency and failure behaviour on the real control plane, MinIO and kwok pods."""

from __future__ import annotations

import re
import signal
import time
import wave
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from whisperop.core import crds

from .conftest import Cluster, PhaseRecorder, Receiver, wait_for

pytestmark = pytest.mark.cluster


def jfk_repeated_s3(s3_env: Any, jfk_wav: Path, tmp_path_factory: pytest.TempPathFactory, times: int) -> str:
    """jfk.wav ``times`` times over, uploaded to the test bucket; its s3:// URI."""
    out = tmp_path_factory.mktemp("audio") / f"jfk-x{times}.wav"
    with wave.open(str(jfk_wav)) as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    with wave.open(str(out), "wb") as dst:
        dst.setparams(params)
        for _ in range(times):
            dst.writeframes(frames)
    key = f"inputs/shared/jfk-x{times}.wav"
    s3_env.client().upload_file(str(out), s3_env.bucket, key)
    return f"s3://{s3_env.bucket}/{key}"


@pytest.fixture(scope="session")
def long_s3(s3_env: Any, jfk_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """jfk.wav twenty times over (~220 s, 4 chunks): long enough to kill a worker mid-job."""
    return jfk_repeated_s3(s3_env, jfk_wav, tmp_path_factory, 20)


def _objects(cluster: Cluster, prefix: str) -> list[str]:
    resp = cluster.s3_env.client().list_objects_v2(Bucket=cluster.s3_env.bucket, Prefix=prefix)
    return [o["Key"] for o in resp.get("Contents", [])]


def test_two_workers_twenty_jobs_each_done_exactly_once(cluster: Cluster, recorder: PhaseRecorder, receiver: Receiver,
                                                        tiny_model: Path, jfk_s3: str) -> None:
    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), maxReplicas=2, idleTimeoutSeconds=120, resources={"gpus": 0})
    names = [f"j{i:02d}" for i in range(20)]
    for i, name in enumerate(names):
        cluster.create_job(jfk_s3, name=name, webhookUrl=f"{receiver.url}/job", priority=5 if i == 19 else 0)
    pods = wait_for(lambda: (p := cluster.running_pods()) and len(p) == 2 and p, 40, "two inference pods")
    for pod in pods:
        cluster.start_worker(pod)
    for name in names:
        cluster.wait_phase(name, ("Done", "Failed"), timeout=240)
    wait_for(lambda: len([b for b in receiver.bodies("/job") if "id" in b]) >= 20, 30, "20 webhooks")
    time.sleep(2)  # let any duplicate surface

    objs = {n: cluster.jobs.get(n) for n in names}
    assert all(o["status"]["phase"] == "Done" for o in objs.values()), {n: o["status"] for n, o in objs.items()}
    assert all(recorder.done_writes.get(n) == 1 for n in names), recorder.done_writes
    assert all(len(recorder.workers.get(n, [])) == 1 for n in names), recorder.workers
    deliveries = Counter(b["id"] for b in receiver.bodies("/job") if "id" in b)
    assert deliveries == Counter({n: 1 for n in names}), deliveries
    by_worker = Counter(o["status"]["worker"] for o in objs.values())
    assert set(by_worker) <= set(pods) and sum(by_worker.values()) == 20, by_worker
    # priority 5 was queued last but started before most of the priority-0 jobs
    starts = sorted(names, key=lambda n: objs[n]["status"]["startTime"])
    assert starts.index("j19") < 3, starts

    # finalizer: deleting a job removes the outputs the system wrote, never the user's input
    prefix = crds.results_prefix(cluster.ns, "j00")
    assert _objects(cluster, prefix)
    cluster.jobs.delete("j00")
    wait_for(lambda: not _objects(cluster, prefix), 20, "results of j00 deleted")
    wait_for(lambda: "j00" not in [o["metadata"]["name"] for o in cluster.jobs.list()["items"]], 20, "j00 gone")
    assert _objects(cluster, "inputs/shared/jfk.wav")


def test_lifecycle_without_workers(cluster: Cluster) -> None:
    """Unknown model → Failed with a condition; cancel of a queued job; TTL deletes finished jobs."""
    cluster.start_operator()
    cluster.create_model(modelURI="/models/none.bin", idleTimeoutSeconds=60)
    bad = cluster.create_job("s3://bucket/a.wav", name="nomodel", model="missing", ttlSecondsAfterFinished=3)
    st = cluster.wait_phase("nomodel", "Failed", timeout=20)["status"]
    cond = next(c for c in st["conditions"] if c["type"] == "Accepted")
    assert cond["status"] == "False" and cond["reason"] == "ModelNotFound" and "missing" in cond["message"]
    assert bad["metadata"]["name"] == "nomodel"

    cluster.create_job("s3://bucket/a.wav", name="tocancel")
    cluster.wait_phase("tocancel", "Queued", timeout=20)
    wait_for(lambda: cluster.model_status().get("queueDepth") == 1, 10, "queueDepth 1")
    cluster.jobs.patch("tocancel", {"spec": {"cancel": True}})
    st = cluster.wait_phase("tocancel", "Cancelled", timeout=20)["status"]
    assert st["completionTime"]
    wait_for(lambda: cluster.model_status().get("queueDepth") == 0, 10, "queueDepth 0")
    # the failed job had ttlSecondsAfterFinished: 3
    wait_for(lambda: "nomodel" not in [o["metadata"]["name"] for o in cluster.jobs.list()["items"]], 30,
             "TTL deletion of nomodel")
    assert "tocancel" in [o["metadata"]["name"] for o in cluster.jobs.list()["items"]]


def test_killed_worker_job_is_requeued_and_completed_by_another(cluster: Cluster, recorder: PhaseRecorder,
                                                               tiny_model: Path, long_s3: str) -> None:
    from kubernetes import client

    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=120, resources={"gpus": 0})
    cluster.create_job(long_s3, name="long")
    pod_a = wait_for(lambda: (cluster.running_pods() or [None])[0], 40, "inference pod")
    worker_a = cluster.start_worker(pod_a)
    wait_for(lambda: cluster.phase("long") == "Running", 60, "job running on A")
    wait_for(lambda: (cluster.jobs.get("long")["status"].get("chunksTotal") or 0) > 0, 60, "audio decoded on A")
    assert cluster.jobs.get("long")["status"]["worker"] == pod_a
    worker_a.send_signal(signal.SIGKILL)
    worker_a.wait(10)
    client.CoreV1Api(cluster.api).delete_namespaced_pod(pod_a, cluster.ns, grace_period_seconds=0)

    st = wait_for(lambda: (s := cluster.jobs.get("long")["status"]).get("phase") == "Queued" and s, 30, "requeue")
    assert st["attempts"] == 1 and not st.get("worker")
    pod_b = wait_for(lambda: next((p for p in cluster.running_pods() if p != pod_a), None), 40, "replacement pod")
    cluster.start_worker(pod_b)
    st = cluster.wait_phase("long", ("Done", "Failed"), timeout=300)["status"]
    assert st["phase"] == "Done" and st["worker"] == pod_b and st["attempts"] == 1
    assert recorder.settled("long", "Done") == ["Queued", "Running", "Queued", "Running", "Done"], recorder.phases
    assert recorder.done_writes["long"] == 1
    assert [e for e in cluster.events("Requeued") if e.involved_object.name == "long"]


def _decoded(log: Path) -> list[int]:
    """Chunk indexes of the engine's "chunk decoded" lines (one per finished whisper.cpp call)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if "chunk decoded" in line:
            m = re.search(r'"chunk": (\d+)|chunk=(\d+)', line)
            assert m, line
            out.append(int(m.group(1) or m.group(2)))
    return out


def test_killed_worker_job_resumes_from_its_s3_checkpoint(cluster: Cluster, recorder: PhaseRecorder,
                                                          tiny_model: Path, long_s3: str) -> None:
    """Issue 17, cluster mode: the worker that takes over a requeued job decodes only the chunks
    the dead one had not checkpointed; the checkpoint objects go when the job is Done."""
    from kubernetes import client

    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=120, resources={"gpus": 0})
    cluster.create_job(long_s3, name="resume")
    pod_a = wait_for(lambda: (cluster.running_pods() or [None])[0], 40, "inference pod")
    worker_a = cluster.start_worker(pod_a, extra={"CHUNK_MAX_SECS": "20", "TEMPERATURE_INC": "0"})
    st = wait_for(lambda: (s := cluster.jobs.get("resume")["status"]).get("phase") == "Running"
                  and 2 <= int(s.get("chunk") or 0) and s, 120, "two chunks done on A")
    worker_a.send_signal(signal.SIGKILL)
    worker_a.wait(10)
    done_on_a = int(st["chunk"])
    total = int(st["chunksTotal"])
    assert done_on_a < total
    uid = cluster.jobs.get("resume")["metadata"]["uid"]
    assert len([k for k in _objects(cluster, f"results/{cluster.ns}/resume/checkpoint/{uid}/") if "/chunk-" in k]) >= done_on_a
    client.CoreV1Api(cluster.api).delete_namespaced_pod(pod_a, cluster.ns, grace_period_seconds=0)

    wait_for(lambda: cluster.jobs.get("resume")["status"].get("phase") == "Queued", 30, "requeue")
    pod_b = wait_for(lambda: next((p for p in cluster.running_pods() if p != pod_a), None), 40, "replacement pod")
    cluster.start_worker(pod_b, extra={"CHUNK_MAX_SECS": "60", "TEMPERATURE_INC": "0"})  # the saved plan wins
    st = cluster.wait_phase("resume", ("Done", "Failed"), timeout=300)["status"]
    assert st["phase"] == "Done" and st["worker"] == pod_b and st["chunksTotal"] == total
    on_b = _decoded(cluster.tmp / f"worker-{pod_b}.log")
    assert on_b and min(on_b) >= done_on_a, f"B decoded {on_b}; A had checkpointed chunks 0..{done_on_a - 1}"
    assert sorted(set(on_b)) == list(range(min(on_b), total))
    assert not [k for k in _objects(cluster, f"results/{cluster.ns}/resume/") if "/checkpoint/" in k]


def test_killed_operator_converges_without_duplicates(cluster: Cluster, recorder: PhaseRecorder, tiny_model: Path,
                                                      jfk_s3: str) -> None:
    from kubernetes import client

    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), maxReplicas=2, idleTimeoutSeconds=120, resources={"gpus": 0})
    names = [f"k{i}" for i in range(8)]
    for name in names:
        cluster.create_job(jfk_s3, name=name)
    wait_for(lambda: any(recorder.phases.get(n) for n in names), 20, "operator started accepting")
    cluster.kill_operator(signal.SIGKILL)  # mid-reconcile: some jobs accepted, maybe not all
    cluster.start_operator()
    pods = wait_for(lambda: (p := cluster.running_pods()) and len(p) == 2 and p, 40, "two inference pods")
    for pod in pods:
        cluster.start_worker(pod)
    time.sleep(1)
    cluster.kill_operator(signal.SIGKILL)  # again, while jobs run
    cluster.start_operator()
    for name in names:
        assert cluster.wait_phase(name, ("Done", "Failed"), timeout=240)["status"]["phase"] == "Done"
    time.sleep(2)
    assert all(recorder.done_writes.get(n) == 1 for n in names), recorder.done_writes
    assert all(len(recorder.workers.get(n, [])) == 1 for n in names), recorder.workers
    for name in names:
        fins = cluster.jobs.get(name)["metadata"].get("finalizers") or []
        assert fins.count(crds.FINALIZER) == 1, fins
    deps = client.AppsV1Api(cluster.api).list_namespaced_deployment(cluster.ns).items
    assert [d.metadata.name for d in deps] == ["whisper-default"]
    assert cluster.deployment_replicas() == 2


def test_operator_killed_mid_webhook_delivers_again_with_the_same_delivery_id(cluster: Cluster, receiver: Receiver,
                                                                             tiny_model: Path, jfk_s3: str) -> None:
    """Completion webhooks are at-least-once: the operator is SIGKILLed while the receiver holds
    its POST (received, not yet answered), so ``status.webhook`` was never written. The restarted
    operator delivers again — the same body and the same ``X-Whisperop-Delivery`` (``job-<uid>-<status>``),
    which is how a receiver drops the duplicate — and records the delivery."""
    receiver.hold = lambda post: post["path"] == "/job" and "id" in post["body"]  # the job's own webhook only
    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), maxReplicas=1, idleTimeoutSeconds=120, resources={"gpus": 0})
    job = cluster.create_job(jfk_s3, name="hooked", webhookUrl=f"{receiver.url}/job")
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 40, "inference pod")
    cluster.start_worker(pod)
    assert receiver.held.wait(180), "the completion webhook never reached the receiver"
    cluster.kill_operator(signal.SIGKILL)
    receiver.release.set()
    assert cluster.jobs.get("hooked")["status"]["phase"] == "Done"
    assert not cluster.jobs.get("hooked")["status"].get("webhook"), "recorded although the POST was never answered"

    cluster.start_operator()
    rec = wait_for(lambda: cluster.jobs.get("hooked")["status"].get("webhook"), 60, "delivery recorded after restart")
    assert rec["state"] == "delivered" and rec["responseCode"] == 200 and rec["attempts"] == 1, rec
    posts = [p for p in receiver.posts if p["path"] == "/job" and "id" in p["body"]]
    assert len(posts) == 2, [p["delivery"] for p in posts]
    assert posts[0]["delivery"] == posts[1]["delivery"] == f"job-{job['metadata']['uid']}-done"
    assert posts[0]["body"] == posts[1]["body"] and posts[0]["body"]["status"] == "done"
    time.sleep(2)  # the restarted operator's later reconciles see the record: no third POST
    assert len([p for p in receiver.posts if p["path"] == "/job" and "id" in p["body"]]) == 2


def test_gpu_scarcity_one_pod_unschedulable_queue_still_drains(cluster: Cluster, recorder: PhaseRecorder,
                                                               tiny_model: Path, jfk_s3: str) -> None:
    if cluster.k8s_env.gpu_count != 1:
        pytest.skip(f"needs exactly one fake GPU (the environment has {cluster.k8s_env.gpu_count})")
    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), maxReplicas=2, idleTimeoutSeconds=120, gpuPollIntervalSeconds=2,
                         resources={"gpus": 1})
    names = [f"g{i}" for i in range(4)]
    for name in names:
        cluster.create_job(jfk_s3, name=name)
    wait_for(lambda: cluster.deployment_replicas() == 2, 30, "Deployment at 2")
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 40, "the pod on the GPU node")
    st = wait_for(lambda: (s := cluster.model_status()).get("unschedulableReplicas") == 1 and s, 30,
                  "one replica Unschedulable in the model status")
    cond = next(c for c in st["conditions"] if c["type"] == "GpuAvailable")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable" and "nvidia.com/gpu" in cond["message"]
    assert st["state"] == "loading"
    wait_for(lambda: cluster.events("GpuUnavailable"), 10, "GpuUnavailable Event")

    # the worker's loads fail for lack of GPU memory (test hook): waiting_for_gpu with figures, for as
    # long as the test looks (a single failure would leave a 2 s window the reconcile could miss)
    cluster.start_worker(pod, extra={"WHISPEROP_FAULT_LOAD_OOM_COUNT": "1000"})
    st = wait_for(lambda: (s := cluster.model_status()).get("state") == "waiting_for_gpu" and s, 30, "waiting_for_gpu")
    assert st["vramNeededMB"] >= 1 and st["vramFreeMB"] == 0 and st["retryInSecs"] == 2
    wait_for(lambda: cluster.events("ModelWaitingForGpu"), 10, "ModelWaitingForGpu Event")
    # GPU memory frees up: the container restarts and its load succeeds
    cluster.workers[pod].terminate()
    cluster.workers[pod].wait(30)
    cluster.start_worker(pod)
    wait_for(lambda: cluster.model_status().get("state") == "ready", 30, "ready after the retry")
    for name in names:
        assert cluster.wait_phase(name, ("Done", "Failed"), timeout=120)["status"]["phase"] == "Done"
    assert {cluster.jobs.get(n)["status"]["worker"] for n in names} == {pod}
    assert cluster.model_status()["unschedulableReplicas"] == 1
