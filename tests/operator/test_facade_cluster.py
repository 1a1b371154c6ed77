"""The REST facade in cluster mode (issue 6) on the real control plane and MinIO.

Every test runs the real pieces: the operator (kopf, subprocess), ``whisperop
worker`` processes standing in for the kubelet of the kwok inference pods
(:class:`PodWorkers` starts one per Running pod and stops it when the pod
goes), and the facade either as ``whisperop serve --cluster`` processes or
in-process (uvicorn on a real port) where a test must reach into its watch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from whisperop.core import crds

from .conftest import Cluster, wait_for

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import audio as audio_mod  # noqa: E402
from tests.support.browser import browser, open_page  # noqa: E402,F401  (fixtures of the page test)

pytestmark = pytest.mark.cluster

WORKER_ENV = {"CHUNK_MAX_SECS": "20", "TEMPERATURE_INC": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PodWorkers:
    """Plays kubelet for the kwok inference pods: a local worker per Running pod."""

    def __init__(self, cluster: Cluster, model: str = "default", extra: dict[str, str] | None = None) -> None:
        self.cluster, self.model, self.extra = cluster, model, {**WORKER_ENV, **(extra or {})}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(0.3):
            try:
                pods = {p.metadata.name: p for p in self.cluster.pods(self.model)}
            except Exception:
                continue
            for name, p in pods.items():
                if p.status.phase == "Running" and not p.metadata.deletion_timestamp:
                    w = self.cluster.workers.get(name)
                    if w is None:
                        self.cluster.start_worker(name, self.model, self.extra)
            for name, proc in list(self.cluster.workers.items()):
                p = pods.get(name)
                if (p is None or p.metadata.deletion_timestamp) and proc.poll() is None:
                    proc.terminate()

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(5)


class Facade:
    """``whisperop serve --cluster`` as a subprocess."""

    def __init__(self, cluster: Cluster, name: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**cluster.env, "HOST": "127.0.0.1", "PORT": str(self.port), "WHISPEROP_NAMESPACE": cluster.ns,
                "WHISPEROP_MODEL_NAME": "default", "QUEUE_WHILE_LOADING": "true", **env}
        full.pop("WHISPER_MODEL", None)
        self.log = cluster.tmp / f"facade-{name}.log"
        cluster.logs.append(self.log)
        self.proc = subprocess.Popen([sys.executable, "-m", "whisperop", "serve", "--cluster"], env=full,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=str(cluster.tmp),
                                     start_new_session=True)
        wait_for(self._healthy, 60, f"facade {name} healthy")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"facade exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class InProcessFacade:
    """The cluster facade in this process (uvicorn on a real port), so a test can reach its watches."""

    def __init__(self, cluster: Cluster, **settings: Any) -> None:
        import uvicorn

        from whisperop.api.app import create_app
        from whisperop.core.settings import ServerSettings
        from whisperop.cluster.job_queue import K8sJobStore
        from whisperop.cluster.model_runtime import ClusterModelRuntime
        from whisperop.stores.s3_blobs import S3BlobStore

        s3 = cluster.s3_env
        self.blobs = S3BlobStore(s3.client(), s3.bucket, prefix=f"uploads/{cluster.ns}/")
        self.jobs = K8sJobStore(cluster.api, cluster.ns, self.blobs, watch_timeout_seconds=30)
        self.runtime = ClusterModelRuntime(cluster.api, cluster.ns, watch_timeout_seconds=30)
        self.runtime.observe_jobs(self.jobs.informer)
        self.jobs.start()
        settings.setdefault("outbound_allow", "127.0.0.1")  # the tests' receivers: allowed explicitly
        st = ServerSettings(model_name="default", queue_while_loading=True, **settings)
        app = create_app(st, self.runtime, self.jobs, self.blobs, send_webhooks=False)  # type: ignore[arg-type]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None,
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "in-process facade started")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.jobs.close()


def sse_events(url: str, out: list[tuple[str, Any]], timeout: float = 240) -> None:
    """Read an SSE stream into ``out`` until it ends (a job's ``done``)."""
    with httpx.stream("GET", url, timeout=httpx.Timeout(timeout, connect=10)) as r:
        assert r.status_code == 200, r.read()
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                out.append((event, json.loads(line[6:])))
                event = None


def submit(url: str, path: Path, **fields: str) -> str:
    with open(path, "rb") as f:
        r = httpx.post(url + "/jobs", files={"audio": (path.name, f, "audio/wav")}, data=fields, timeout=60)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


@pytest.fixture(scope="module")
def medium_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return audio_mod.bursts_wav(tmp_path_factory.mktemp("audio") / "medium.wav", 90.0, seed=1)


@pytest.fixture
def running_cluster(cluster: Cluster, tiny_model: Path) -> Iterator[Cluster]:
    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), minReplicas=0, maxReplicas=1, idleTimeoutSeconds=60)
    workers = PodWorkers(cluster)
    try:
        yield cluster
    finally:
        workers.close()


def _assert_progress_then_done(events: list[tuple[str, Any]], job_id: str) -> dict[str, Any]:
    names = [e for e, _ in events]
    assert names and names[-1] == "done", names
    assert "progress" in names, names
    pct = [d["percent"] for e, d in events if e == "progress"]
    assert pct == sorted(pct) and all(0 < p <= 100 for p in pct), pct
    job = events[-1][1]["job"]
    assert job["id"] == job_id and job["status"] == "done", job
    return dict(job)


def test_two_facades_submit_on_one_stream_on_the_other(running_cluster: Cluster, medium_wav: Path) -> None:
    c = running_cluster
    a, b = Facade(c, "a"), Facade(c, "b")
    try:
        job_id = submit(a.url, medium_wav, language="en")
        uuid.UUID(job_id)
        obj = c.jobs.get(job_id)  # a TranscriptionJob named by the job id
        assert obj["spec"]["audio"].startswith(f"s3://{c.s3_env.bucket}/uploads/{c.ns}/audio/{job_id}/")
        assert obj["spec"]["language"] == "en"
        assert obj["metadata"]["annotations"][crds.ANN_AUDIO_OWNED] == "true"
        bucket, key = crds.split_s3_uri(obj["spec"]["audio"])
        assert c.s3_env.client().head_object(Bucket=bucket, Key=key)["ContentLength"] == medium_wav.stat().st_size
        # the second replica knows the job at once (quorum read), and streams it to the end
        got = httpx.get(f"{b.url}/jobs/{job_id}", timeout=10).json()
        assert got["id"] == job_id and got["status"] in ("queued", "running") and got["filename"] == "medium.wav"
        events: list[tuple[str, Any]] = []
        sse_events(f"{b.url}/jobs/{job_id}/stream", events)
        job = _assert_progress_then_done(events, job_id)
        assert job["progress"] == 100 and job["language"] == "en" and job["duration_secs"] == pytest.approx(90, abs=1)
        # GET on both replicas: the same document, segments read from the result JSON in S3
        ga = httpx.get(f"{a.url}/jobs/{job_id}", timeout=10).json()
        gb = httpx.get(f"{b.url}/jobs/{job_id}", timeout=10).json()
        assert ga == gb and ga["status"] == "done" and ga["completed_at"]
        result = json.loads(c.s3_env.client().get_object(
            Bucket=c.s3_env.bucket, Key=f"results/{c.ns}/{job_id}/transcript.json")["Body"].read())
        assert len(ga["segments"]) == len(result["segments"])
        assert ga["segments"] == job["segments"]
        # a finished job: one done at once; cancel answers 409
        again: list[tuple[str, Any]] = []
        sse_events(f"{a.url}/jobs/{job_id}/stream", again, timeout=20)
        assert [e for e, _ in again] == ["done"]
        assert httpx.delete(f"{a.url}/jobs/{job_id}", timeout=10).status_code == 409
        # /health and /model/status mirror the cluster
        h = httpx.get(a.url + "/health", timeout=10).json()
        assert h["model"] == "default" and h["queue_depth"] == 0 and h["model_state"] == "ready", h
        ms = httpx.get(b.url + "/model/status", timeout=10).json()
        assert ms["state"] == "ready" and ms["loaded_at"], ms
        assert httpx.get(a.url + "/jobs/not-a-job", timeout=10).status_code == 404
    finally:
        a.close()
        b.close()


def test_kubectl_job_visible_and_cancel_sets_spec_cancel(running_cluster: Cluster, jfk_s3: str) -> None:
    c = running_cluster
    f = Facade(c, "k")
    try:
        obj = c.create_job(jfk_s3, name="from-kubectl")
        got = wait_for(lambda: httpx.get(f"{f.url}/jobs/from-kubectl", timeout=10).json(), 20, "kubectl job via REST")
        assert got["id"] == "from-kubectl" and got["filename"] == "jfk.wav"
        done = c.wait_phase("from-kubectl", ("Done", "Failed"), timeout=180)
        assert done["status"]["phase"] == "Done"
        r = httpx.get(f"{f.url}/jobs/from-kubectl", timeout=10).json()
        assert r["status"] == "done" and obj["metadata"]["name"] == "from-kubectl"
        # a queued job cancelled through REST: spec.cancel set, answer cancelled, never runs
        c.kill_operator()
        jid = submit(f.url, audio_mod.JFK_WAV)
        r2 = httpx.delete(f"{f.url}/jobs/{jid}", timeout=20)
        assert r2.status_code == 200 and r2.json()["status"] == "cancelled", r2.text
        assert c.jobs.get(jid)["spec"]["cancel"] is True
    finally:
        f.close()


def test_watch_reconnects_and_relists_still_deliver_done(running_cluster: Cluster, medium_wav: Path) -> None:
    c = running_cluster
    f = InProcessFacade(c)
    try:
        job_id = submit(f.url, medium_wav)
        events: list[tuple[str, Any]] = []
        reader = threading.Thread(target=sse_events, args=(f"{f.url}/jobs/{job_id}/stream", events), daemon=True)
        reader.start()
        wait_for(lambda: (c.jobs.get(job_id).get("status") or {}).get("phase") == "Running", 120, "job running")

        stats = f.jobs.informer.stats

        def drop(gone: bool) -> bool:
            """Drop the watch (as if the server said 410 Gone when ``gone``) until it has connected
            anew; a drop that lands between two connections is repeated, so each one counts."""
            before = stats["connects"]
            return wait_for(lambda: (f.jobs.informer.reconnect(gone=gone), stats["connects"] > before)[1],
                            30, "watch reconnected", interval=0.3)

        # four drops while the job runs (or just finished: a relist must deliver that too),
        # counted by the watch's own reconnects rather than left to how long the job takes
        for i in range(4):
            drop(gone=bool(i % 2))
        reader.join(240)
        assert not reader.is_alive(), "stream did not end"
        assert events and events[-1][0] == "done", (events, stats)
        _assert_progress_then_done(events, job_id)
        assert stats["connects"] >= 5 and stats["gone"] >= 2, stats
    finally:
        f.close()


def test_submit_returns_once_the_job_is_in_the_watch_cache(running_cluster: Cluster) -> None:
    """Read-your-writes: /health's queue_depth and /metrics count from the watch cache, so a
    202 must not come back before this facade's watch has the job (CI once saw queue_depth 1
    for 1 running + 2 just-submitted jobs). The watch is held back for 1 s: submit waits for it."""
    f = InProcessFacade(running_cluster)
    try:
        # stop a watch that is connected (a stop between two connections could not interrupt it)
        wait_for(lambda: f.jobs.informer._resp is not None, 10, "watch connected")
        old_thread = f.jobs.informer._thread
        f.jobs.informer.stop()
        assert old_thread is not None and not old_thread.is_alive(), "the held-back watch kept running"
        threading.Timer(1.0, f.jobs.informer.start).start()
        t0 = time.monotonic()
        job_id = submit(f.url, audio_mod.JFK_WAV)
        took = time.monotonic() - t0
        assert f.jobs.informer.cached(job_id) is not None, "202 before the job reached the watch cache"
        assert took >= 0.9, f"submit did not wait for the held-back watch ({took:.2f} s)"
    finally:
        f.close()


def test_health_reports_the_gpu_the_inference_pods_report(running_cluster: Cluster) -> None:
    """The facade pod has no GPU: /health's gpu_name/vram_total_mb come from the WhisperModel's
    status.gpu, which the operator copies from the ready workers' load-state annotation. The
    workers here run on CPU (kwok pods), so the annotation is patched as a GPU worker writes it
    (``worker.ready_state``; unit-tested against NVML's figures in tests/operator/test_model_status.py)."""
    from kubernetes import client

    c = running_cluster
    f = InProcessFacade(c)
    try:
        h = httpx.get(f.url + "/health", timeout=10).json()
        assert (h["model_state"], h["gpu_name"], h["vram_total_mb"]) == ("unloaded", None, None), h
        job_id = submit(f.url, audio_mod.JFK_WAV)
        wait_for(lambda: (c.jobs.get(job_id).get("status") or {}).get("phase") == "Done", 180, "job done")
        # /health reads the facade's WhisperModel watch: wait for *it* to show ready, not the API server
        h = wait_for(lambda: (lambda d: d if d["model_state"] == "ready" else None)(
            httpx.get(f.url + "/health", timeout=10).json()), 30, "facade sees the model ready")
        assert h["gpu_name"] is None, h  # a CPU worker reports no GPU
        core = client.CoreV1Api(c.api)
        pod = c.running_pods()[0]
        state = json.loads(core.read_namespaced_pod(pod, c.ns).metadata.annotations[crds.ANN_LOAD_STATE])
        assert state["state"] == "ready" and "gpu" not in state, state
        gpu = {"name": "NVIDIA H100 80GB HBM3", "vramTotalMB": 81559, "vramUsedMB": 1187}
        core.patch_namespaced_pod(pod, c.ns, {"metadata": {"annotations": {
            crds.ANN_LOAD_STATE: json.dumps({**state, "gpu": gpu})}}})
        h = wait_for(lambda: (lambda d: d if d["gpu_name"] else None)(httpx.get(f.url + "/health", timeout=10).json()),
                     30, "GPU in /health")
        assert (h["gpu_name"], h["vram_total_mb"]) == ("NVIDIA H100 80GB HBM3", 81559), h
        assert c.model_status()["gpu"] == gpu
        st = httpx.get(f.url + "/model/status", timeout=10).json()
        assert (st["state"], st["vram_total_mb"], st["vram_used_mb"]) == ("ready", 81559, 1187), st
    finally:
        f.close()


def test_client_abort_mid_upload_leaves_no_job_and_no_object(cluster: Cluster) -> None:
    c = cluster
    f = InProcessFacade(c)
    keys: list[str] = []
    writer = f.blobs.writer

    def recording_writer(key: str) -> Any:
        keys.append(key)
        return writer(key)

    f.blobs.writer = recording_writer  # type: ignore[method-assign]
    try:
        boundary = "xyzBOUNDARY"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"big.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode()
        total = 200 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", f.port)) as s:
            s.sendall((f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1:{f.port}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                       f"Content-Length: {total}\r\n\r\n").encode() + head)
            chunk = os.urandom(1 << 20)
            for _ in range(24):  # 24 MB: several multipart parts already in S3
                s.sendall(chunk)
            wait_for(lambda: keys and f.blobs.list_multipart_uploads(keys[0]), 30, "a multipart upload in progress")
        wait_for(lambda: not f.blobs.list_multipart_uploads(keys[0]), 30, "multipart upload aborted")
        time.sleep(1)
        listed = c.s3_env.client().list_objects_v2(Bucket=c.s3_env.bucket, Prefix=f"uploads/{c.ns}/")
        assert listed.get("KeyCount", 0) == 0, listed.get("Contents")
        assert c.jobs.list()["items"] == []
    finally:
        f.close()


def run_contract_suite(base_url: str, junit: Path, extra_args: list[str] | None = None,
                       timeout: float = 1500, env_extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """``pytest tests/contract`` against ``base_url`` (WHISPEROP_BASE_URL); outcome per test.
    ``env_extra``: what the suite may know of the server (WHISPEROP_CONTRACT_IDLE_TIMEOUT_SECS, …)."""
    import xml.etree.ElementTree as ET

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(env_extra or {})
    env["WHISPEROP_BASE_URL"] = base_url
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "contract"),
           f"--junitxml={junit}", *(extra_args or [])]
    p = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)
    outcomes: dict[str, str] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            kinds = {child.tag for child in case}
            outcomes[name] = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
    return p.returncode, outcomes, p.stdout[-6000:]


def _contract_on_cluster(c: Cluster, model: Path, tmp_path: Path, args: list[str]) -> dict[str, list[str]]:
    c.start_operator()
    c.create_model(modelURI=str(model), minReplicas=0, maxReplicas=1, idleTimeoutSeconds=0, gpuPollIntervalSeconds=2)
    workers = PodWorkers(c)
    f = Facade(c, "contract", QUEUE_WHILE_LOADING="false", GPU_POLL_INTERVAL_SECS="2")
    try:
        # idle 0 here: the suite's idle-timeout tests skip (they run against a WhisperModel of their
        # own with a non-zero idle timeout in test_idle_cluster.py)
        rc, outcomes, tail = run_contract_suite(f.url, tmp_path / "contract.xml", args)
    finally:
        f.close()
        workers.close()
    summary = {k: sorted(n for n, o in outcomes.items() if o == k) for k in ("passed", "failed", "skipped")}
    report = json.dumps(summary, indent=1)
    print(report)
    out = os.environ.get("WHISPEROP_CONTRACT_REPORT")
    if out:
        Path(out).write_text(report)
    assert summary["passed"], tail
    assert rc == 0 and not summary["failed"], f"{report}\n{tail}"
    return summary


def test_contract_suite_against_cluster_facade(cluster: Cluster, tiny_model: Path, tmp_path: Path) -> None:
    """The HTTP contract suite, unchanged, against ``whisperop serve --cluster`` (operator + local workers,
    tiny model). Tests that need a server with special settings skip themselves in WHISPEROP_BASE_URL mode."""
    summary = _contract_on_cluster(cluster, tiny_model, tmp_path, ["-m", "not slow"])
    assert len(summary["passed"]) >= 50, summary


@pytest.mark.slow
def test_contract_jfk_base_model_on_cluster(cluster: Cluster, base_model: Path, tmp_path: Path) -> None:
    """The contract's real-model case (jfk.wav → the reference transcript) through the cluster facade."""
    summary = _contract_on_cluster(cluster, base_model, tmp_path, ["-m", "slow"])
    assert "tests.contract.test_e2e_base_model::test_jfk_transcribes_to_the_reference" in summary["passed"], summary


def test_1gb_upload_into_s3_with_flat_facade_memory(cluster: Cluster) -> None:
    """1 GiB through ``serve --cluster`` into S3 (multipart): facade RSS grows < 100 MB; one job, one object."""
    pytest.importorskip("psutil")
    from tests.support.client import multipart_stream
    from tests.support.rss import peak_rss

    c = cluster
    f = Facade(c, "big")
    try:
        size = 1 << 30
        ctype, body = multipart_stream(size, {"task": "transcribe"})
        with peak_rss(f.proc.pid, interval=0.05) as rss:
            r = httpx.post(f.url + "/jobs", content=body, headers={"Content-Type": ctype}, timeout=900)
        assert r.status_code == 202, r.text
        growth_mb = rss.growth_mb
        assert growth_mb < 100, f"facade RSS grew by {growth_mb:.0f} MB during a 1 GiB upload"
        job_id = r.json()["job_id"]
        obj = c.jobs.get(job_id)
        bucket, key = crds.split_s3_uri(obj["spec"]["audio"])
        head = c.s3_env.client().head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == size
        assert [o["metadata"]["name"] for o in c.jobs.list()["items"]] == [job_id]
    finally:
        f.close()


def test_real_410_gone_relists_and_delivers_the_missed_terminal_change(cluster: Cluster, s3_env: Any) -> None:
    """The watch resumes from a resourceVersion the API server no longer has (410 Gone): the store
    relists, diffs against its cache and still delivers the transition it missed, exactly once."""
    from whisperop.core.ports import JobChange
    from whisperop.cluster.job_queue import K8sJobStore
    from whisperop.stores.s3_blobs import S3BlobStore

    c = cluster
    store = K8sJobStore(c.api, c.ns, S3BlobStore(s3_env.client(), s3_env.bucket), watch_timeout_seconds=30)
    changes: list[JobChange] = []
    store.watch(changes.append)
    store.start()
    try:
        c.create_job("s3://bucket/audio.wav", name="j1")
        wait_for(lambda: any(ch.kind == "created" and ch.job.id == "j1" for ch in changes), 20, "created change")
        # take the watch away, finish the job behind its back, and resume from a version long gone
        store.informer.stop()
        c.jobs.patch_status("j1", {"phase": "Running", "chunk": 1, "chunksTotal": 2})
        c.jobs.patch_status("j1", {"phase": "Done", "completionTime": "2026-01-01T00:00:00Z", "progress": 100})
        store.informer.rv = "1"
        store.informer._stop.clear()
        store.informer._thread = threading.Thread(target=store.informer._run, daemon=True)
        store.informer._thread.start()
        wait_for(lambda: store.informer.stats["gone"] >= 1, 20, "410 Gone seen and relisted")
        fin = wait_for(lambda: [ch for ch in changes if ch.kind == "finished"], 20, "finished change after relist")
        assert len(fin) == 1 and fin[0].job.id == "j1" and fin[0].job.status.value == "done"
        prog = [(ch.chunk, ch.chunks_total) for ch in changes if ch.kind == "progress"]
        assert prog == [(1, 2), (2, 2)], prog
        assert store.informer.stats["relists"] >= 2
        # and the watch goes on after the relist
        c.create_job("s3://bucket/audio.wav", name="j2")
        wait_for(lambda: any(ch.kind == "created" and ch.job.id == "j2" for ch in changes), 20, "created change of j2")
    finally:
        store.close()


def test_load_unload_record_demand_the_operator_reads_and_never_touch_spec(cluster: Cluster, tiny_model: Path) -> None:
    from whisperop.core.models import ModelState
    from whisperop.operator.scaling import parse_demand
    from whisperop.cluster.model_runtime import ClusterModelRuntime

    c = cluster
    rt = ClusterModelRuntime(c.api, c.ns, watch_timeout_seconds=30)
    rt.start()
    try:
        assert rt.state == ModelState.unloaded and rt.status().state == ModelState.unloaded  # no WhisperModel yet
        rt.request_load()  # nothing to record on: no error
        created = c.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=60)
        wait_for(lambda: rt.obj is not None, 20, "WhisperModel in the watch cache")
        assert rt.request_load() is True
        m = c.models.get("default")
        d = parse_demand(m["metadata"].get("annotations"))
        assert d is not None and d.action == "load", m["metadata"]
        assert m["spec"] == created["spec"] and m["metadata"]["generation"] == created["metadata"]["generation"]
        rt.request_unload()
        m = c.models.get("default")
        d2 = parse_demand(m["metadata"].get("annotations"))
        assert d2 is not None and d2.action == "unload" and d2.at >= d.at
        assert m["spec"] == created["spec"] and m["metadata"]["generation"] == created["metadata"]["generation"]
        # status mirrors what the operator writes
        events: list[Any] = []
        rt.subscribe(events.append)
        c.models.patch_status("default", {"state": "waiting_for_gpu", "vramNeededMB": 900, "vramFreeMB": 100, "retryInSecs": 30})
        wait_for(lambda: rt.state == ModelState.waiting_for_gpu, 20, "waiting_for_gpu mirrored")
        s = rt.status().model_dump(exclude_none=True)
        assert s == {"state": ModelState.waiting_for_gpu, "vram_needed_mb": 900, "vram_free_mb": 100, "retry_in_secs": 30}, s
        c.models.patch_status("default", {"state": "ready", "loadedAt": "2026-05-10T14:00:00.000Z"})
        wait_for(lambda: rt.state == ModelState.ready, 20, "ready mirrored")
        assert rt.request_load() is False
        assert [e.type for e in events] == ["model_waiting_for_gpu", "model_ready"], events
        assert events[1].loaded_at.year == 2026
        # decode streams (issue 14): kept by the CRD's status schema, mirrored, an event when they grow
        c.models.patch_status("default", {"streams": 2, "streamsWanted": 8})
        wait_for(lambda: rt.status().streams == 2, 20, "streams mirrored")
        assert (rt.status().streams, rt.status().streams_wanted) == (2, 8)
        c.models.patch_status("default", {"streams": 8})
        wait_for(lambda: len(events) == 3, 20, "model_streams")
        assert events[2].model_dump() == {"type": "model_streams", "streams": 8, "streams_wanted": 8}, events
    finally:
        rt.stop()


def test_503_model_not_ready_as_in_local_mode_and_bearer_auth(cluster: Cluster, tiny_model: Path) -> None:
    """No operator: the WhisperModel stays where the test puts it. 503 + Retry-After per state, the
    rejection records a load demand and registers the webhook in the cluster registry, nothing is kept;
    with WHISPEROP_AUTH_TOKENS_FILE every endpoint but /health wants the token."""
    from whisperop.cluster import webhooks as cluster_webhooks
    from whisperop.operator.scaling import parse_demand

    c = cluster
    tokens = c.tmp / "tokens"
    tokens.write_text("s3cret\n")
    # Retry-After in waiting_for_gpu is the WhisperModel's poll interval, not the facade's env (issue 15)
    c.create_model(modelURI=str(tiny_model), gpuPollIntervalSeconds=7)
    f = Facade(c, "503", QUEUE_WHILE_LOADING="false", GPU_POLL_INTERVAL_SECS="99", WHISPEROP_AUTH_TOKENS_FILE=str(tokens))
    auth = {"Authorization": "Bearer s3cret"}
    try:
        assert httpx.get(f.url + "/health", timeout=10).status_code == 200
        assert httpx.get(f.url + "/model/status", timeout=10).status_code == 401
        assert httpx.post(f.url + "/jobs", files={"audio": ("a.wav", b"RIFF")}, timeout=10).status_code == 401

        def post() -> httpx.Response:
            with open(audio_mod.JFK_WAV, "rb") as fh:
                return httpx.post(f.url + "/jobs", files={"audio": ("jfk.wav", fh, "audio/wav")},
                                  data={"webhook_url": "http://127.0.0.1:9/hook"}, headers=auth, timeout=30)

        r = post()
        assert r.status_code == 503 and r.headers["Retry-After"] == "30", r.text
        assert r.json() == {"error": "model_not_ready", "state": "unloaded", "retry_after_secs": 30}
        d = parse_demand(c.models.get("default")["metadata"].get("annotations"))
        assert d is not None and d.action == "load"
        assert cluster_webhooks.registered(c.api, c.ns) == ["http://127.0.0.1:9/hook"]
        c.models.patch_status("default", {"state": "loading"})
        wait_for(lambda: httpx.get(f.url + "/model/status", headers=auth, timeout=5).json()["state"] == "loading", 20, "loading")
        r = post()
        assert r.status_code == 503 and r.headers["Retry-After"] == "10" and r.json()["state"] == "loading"
        c.models.patch_status("default", {"state": "waiting_for_gpu", "vramNeededMB": 900, "vramFreeMB": 100, "retryInSecs": 7})
        wait_for(lambda: httpx.get(f.url + "/model/status", headers=auth, timeout=5).json()["state"] == "waiting_for_gpu", 20,
                 "waiting_for_gpu")
        r = post()
        assert r.status_code == 503 and r.headers["Retry-After"] == "7" and r.json()["state"] == "waiting_for_gpu"
        assert c.jobs.list()["items"] == []
        listed = c.s3_env.client().list_objects_v2(Bucket=c.s3_env.bucket, Prefix=f"uploads/{c.ns}/")
        assert listed.get("KeyCount", 0) == 0
        h = httpx.get(f.url + "/health", timeout=10).json()
        assert h["model_state"] == "waiting_for_gpu" and h["queue_depth"] == 0
    finally:
        f.close()


def test_web_page_and_docs_on_the_cluster_facade(running_cluster: Cluster, open_page: Any, tmp_path: Path) -> None:
    """The same page, unchanged, on ``serve --cluster``: a job through the operator and a worker; the docs offline."""
    from playwright.sync_api import expect

    facade = Facade(running_cluster, "page")
    try:
        s = open_page(facade.url)
        page = s.goto("/")
        badge = page.locator("#model-state")
        expect(badge).not_to_have_attribute("data-state", "unknown")
        assert badge.get_attribute("data-state") in ("unloaded", "loading", "waiting_for_gpu", "ready")
        page.locator("#audio").set_input_files(str(audio_mod.tone_wav(tmp_path / "tone.wav", 1.5)))
        page.get_by_role("button", name="Transcribe").click()
        job = page.locator(".job").first
        expect(job).to_have_attribute("data-status", "done", timeout=240_000)
        expect(job.locator(".job-pct")).to_have_text("100 %")
        job_id = job.get_attribute("data-job-id")
        assert running_cluster.phase(str(job_id)) == "Done"  # the TranscriptionJob itself

        page.goto(facade.url + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("whisper-operator")
        assert s.foreign == [] and s.errors == []
    finally:
        facade.close()
