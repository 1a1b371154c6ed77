"""whisper-operator on a real node: images from the Dockerfiles, `helm install`, real pods.

The README's Helm section, run as written (plus the documented CPU values
file), against a cluster whose node is this machine (kubelet + containerd):
a job submitted through the facade's Service (kubectl port-forward) makes
the operator scale a real inference pod from zero, the worker downloads the
model from MinIO (a pod), the job reaches ``done`` with the reference
transcript of jfk.wav, the completion webhook arrives, SSE delivers progress
and ``done``; idle scales back to zero; a TranscriptionJob manifest applied
with kubectl runs the same way; ``helm test --logs`` passes; faults on real
pods lose nothing; ``helm upgrade`` keeps queued jobs; ``helm uninstall``
leaves nothing behind and does not hang.

Tests run in file order and share one release (module scope): each one
starts from the state the previous one left, as an operator's day does.
Timings of the scale-from-zero path are written to build/e2e-timings.json
(docs/benchmarks.md quotes them).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support import audio as audio_mod  # noqa: E402
from tests.support.kube_e2e import RELEASE, RELEASE_NS, Kube, install_release, wait_for  # noqa: E402
from tests.support.sse import SSEStream  # noqa: E402
from tests.support.webhooks import Delivery, WebhookReceiver  # noqa: E402
from whisperop.testenv.node import NODE_IP  # noqa: E402

NS = RELEASE_NS
FULL = f"{RELEASE}-whisper-operator"
FACADE_SVC = f"{FULL}-facade"
TIMINGS = REPO / "build" / "e2e-timings.json"
REFERENCE = "And so my fellow Americans ask not what your country can do for you, ask what you can do for your country."

timings: dict[str, Any] = {}
# image builds (cached by scripts/build-images.sh; cold: minutes) run in the first test's fixtures
pytestmark = pytest.mark.timeout(3600)


def _words(text: str) -> list[str]:
    return audio_mod.normalize_words(text)


@pytest.fixture(scope="module")
def release(kube: Kube, images: dict[str, str], minio: dict[str, str], base_model_q8: Path) -> Iterator[dict[str, Any]]:
    """The README's `helm install`, after the Secret and buckets it expects exist."""
    # the allow-list entry is for this test's webhook receiver (the node address is private: the
    # outbound guard refuses it by default, docs/security.md)
    s3, helm_secs = install_release(kube, minio, base_model_q8, f"outbound.allow={{{NODE_IP}}}")
    timings["helm_install_wait_s"] = round(helm_secs, 2)
    yield {"s3": s3, "minio": minio}


@pytest.fixture
def facade(kube: Kube, release: dict[str, Any]) -> Iterator[httpx.Client]:
    """A port-forward per test: a forward dies with the pod it picked (the facade test deletes them)."""
    with kube.port_forward(NS, f"svc/{FACADE_SVC}", 80) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            wait_for("the facade's /health through the port-forward", lambda: _ok(c, "/health"), 60)
            yield c


def _ok(c: httpx.Client, path: str) -> bool:
    try:
        return c.get(path).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(host=NODE_IP)  # pods reach this machine at the node address
    r.start()
    try:
        yield r
    finally:
        r.stop()


def _replicas(kube: Kube) -> int:
    dep = kube.get("-n", NS, "deployment", "whisper-default")
    return int((dep or {}).get("spec", {}).get("replicas") or 0)


def _worker_pods(kube: Kube) -> list[dict[str, Any]]:
    pods = kube.get("-n", NS, "pods", "-l", "app.kubernetes.io/component=inference") or {"items": []}
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def _running_worker(kube: Kube) -> dict[str, Any] | None:
    for p in _worker_pods(kube):
        if p["status"].get("phase") == "Running":
            return p
    return None


def _submit(c: httpx.Client, audio: Path, **fields: str) -> str:
    with open(audio, "rb") as f:
        r = c.post("/jobs", data=fields, files={"audio": (audio.name, f, "audio/wav")})
    assert r.status_code == 202, f"POST /jobs -> {r.status_code}: {r.text[:500]}"
    return str(r.json()["job_id"])


def _wait_job(c: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        j = c.get(f"/jobs/{job_id}").json()
        return j if j.get("status") in statuses else None

    return wait_for(f"job {job_id} in {statuses}", done, timeout, 0.5)


def test_first_job_scales_a_real_pod_from_zero(kube: Kube, facade: httpx.Client, receiver: WebhookReceiver) -> None:
    assert _replicas(kube) == 0, "the model starts unloaded (minReplicas 0)"
    t0 = time.monotonic()
    job_id = _submit(facade, REPO / "tests" / "data" / "jfk.wav", language="en",
                     webhook_url=receiver.url("/done"))
    stream = SSEStream(str(facade.base_url) + f"/jobs/{job_id}/stream").start()
    pod_running = wait_for("an inference pod Running", lambda: _running_worker(kube), 180, 0.2)
    timings["created_to_pod_running_s"] = round(time.monotonic() - t0, 2)
    _wait_job(facade, job_id, ("running", "done"), 240)
    timings["created_to_job_running_s"] = round(time.monotonic() - t0, 2)
    job = _wait_job(facade, job_id, ("done", "failed", "cancelled"), 300)
    timings["created_to_done_s"] = round(time.monotonic() - t0, 2)
    assert job["status"] == "done", job
    assert _words(" ".join(s["text"] for s in job["segments"])) == _words(REFERENCE)
    assert all(s.get("words") for s in job["segments"]), "word timings"

    done = stream.wait_for(lambda e: e.event == "done", 60)
    events = [e.event for e in stream.snapshot()]
    stream.close()
    assert "progress" in events and done.json()["job"]["status"] == "done", events

    delivery = receiver.wait_for("/done", _completions, timeout=120)[0]
    body = delivery.json()
    assert body.get("job_id", body.get("id")) == job_id or job_id in json.dumps(body)
    # the worker pod is real: its log is readable through the API server (kubelet client cert)
    logs = kube.kubectl("-n", NS, "logs", pod_running["metadata"]["name"]).stdout
    assert logs.strip(), "the worker wrote logs"
    first = json.loads(logs.strip().splitlines()[0])  # JSON logs (LOG_FORMAT=json in the image)
    assert isinstance(first, dict)
    _save_timings()


def test_idle_scales_back_to_zero(kube: Kube) -> None:
    idle = 15  # the default (300 s) is a production figure; a value change is also what helm upgrade is for
    kube.helm("upgrade", RELEASE, "charts/whisper-operator", "-n", NS, "--reuse-values",
              "--set", f"model.idleTimeoutSeconds={idle}", "--wait", "--timeout", "5m")
    wm = kube.get("-n", NS, "whispermodel", "default")
    assert wm["spec"]["idleTimeoutSeconds"] == idle
    wait_for("the worker Deployment at 0 replicas after the idle timeout", lambda: _replicas(kube) == 0,
             idle + 120, 1)
    wait_for("no inference pods left", lambda: not _worker_pods(kube), 120, 1)


def test_kubectl_apply_transcriptionjob_manifest(kube: Kube, release: dict[str, Any]) -> None:
    manifest = yaml.safe_load((REPO / "docs" / "examples" / "transcriptionjob.yaml").read_text())
    manifest["metadata"]["namespace"] = NS
    kube.apply(manifest)
    name = manifest["metadata"]["name"]

    def finished() -> dict[str, Any] | None:
        tj = kube.get("-n", NS, "transcriptionjob", name)
        return tj if tj and tj.get("status", {}).get("phase") in ("Done", "Failed", "Cancelled") else None

    tj = wait_for(f"TranscriptionJob {name} to finish", finished, 300, 1)
    assert tj["status"]["phase"] == "Done", tj["status"]
    result = tj["status"].get("result") or {}
    assert result, tj["status"]


def test_helm_test_logs(kube: Kube, release: dict[str, Any]) -> None:
    r = kube.helm("test", RELEASE, "-n", NS, "--logs", "--timeout", "10m", timeout=700)
    assert "Phase:          Succeeded" in r.stdout or "Succeeded" in r.stdout, r.stdout
    assert "submitted" in r.stdout, "the test pod's own log is printed by --logs"


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 80 s of espeak-ng speech: long enough to act on a running job."""
    sentences = (REPO / "tests" / "data" / "english_sentences.txt").read_text().splitlines()
    text = " ".join(s for s in sentences if s.strip())[:1400]
    return audio_mod.speech_wav(tmp_path_factory.mktemp("e2e") / "long.wav", text)


def _job_running(c: httpx.Client, job_id: str, timeout: float = 300) -> None:
    """Wait until the job runs and has made progress (a chunk in flight on a real pod)."""
    def started() -> bool:
        j = c.get(f"/jobs/{job_id}").json()
        assert j["status"] not in ("failed", "cancelled"), j
        return j["status"] == "running"

    wait_for(f"job {job_id} running", started, timeout, 0.2)


def _completions(d: Delivery) -> bool:
    """A job's completion POST (the same URL also gets the model's lifecycle events, per the contract)."""
    body = d.json()
    return isinstance(body, dict) and "type" not in body and body.get("status") in ("done", "failed")


def _deliveries_for(receiver: WebhookReceiver, path: str) -> set[str]:
    """Distinct completion deliveries on ``path`` (retries of one delivery share its id)."""
    return {d.headers.get("x-whisperop-delivery") or d.headers.get("webhook-id") or repr(d.body)
            for d in receiver.received(path, _completions)}


def test_worker_pod_deleted_mid_job_is_requeued_and_finishes_once(
    kube: Kube, facade: httpx.Client, receiver: WebhookReceiver, long_speech: Path, release: dict[str, Any]
) -> None:
    """Exactly once, counted three ways: completion webhook deliveries, TranscriptionJobs, and
    result writes (the results bucket is versioned: each PUT of an output is one version)."""
    job_id = _submit(facade, long_speech, language="en", webhook_url=receiver.url("/worker-loss"))
    _job_running(facade, job_id)
    pod = wait_for("the running worker pod", lambda: _running_worker(kube), 60)
    kube.kubectl("-n", NS, "delete", "pod", pod["metadata"]["name"], "--wait=false")
    job = _wait_job(facade, job_id, ("done", "failed", "cancelled"), 600)
    assert job["status"] == "done", job
    assert job["segments"], job
    receiver.wait_for("/worker-loss", _completions, timeout=120)
    time.sleep(5)  # a duplicate completion would arrive within the retry window
    assert len(_deliveries_for(receiver, "/worker-loss")) == 1, receiver.received("/worker-loss")
    tj = kube.get("-n", NS, "transcriptionjobs", "-o", "json")
    mine = [t for t in (tj or {"items": []})["items"] if job_id in json.dumps(t["metadata"])]
    assert len(mine) == 1 and mine[0]["status"]["phase"] == "Done", [t.get("status") for t in mine]
    prefix = f"results/{NS}/{mine[0]['metadata']['name']}/"
    listed = release["s3"].list_object_versions(Bucket="whisperop", Prefix=prefix)
    writes = Counter(v["Key"] for v in listed.get("Versions", []))
    assert writes and set(writes.values()) == {1}, f"result writes per output: {dict(writes)}"
    assert f"{prefix}transcript.json" in writes, dict(writes)


def test_operator_pod_deleted_mid_job_loses_nothing(
    kube: Kube, facade: httpx.Client, receiver: WebhookReceiver, long_speech: Path
) -> None:
    job_id = _submit(facade, long_speech, language="en", webhook_url=receiver.url("/operator-loss"))
    _job_running(facade, job_id)
    ops = kube.get("-n", NS, "pods", "-l", "app.kubernetes.io/component=operator")["items"]
    assert ops, "the operator pod"
    for op in ops:
        kube.kubectl("-n", NS, "delete", "pod", op["metadata"]["name"], "--wait=false")
    job = _wait_job(facade, job_id, ("done", "failed", "cancelled"), 600)
    assert job["status"] == "done", job
    receiver.wait_for("/operator-loss", _completions, timeout=180)
    time.sleep(5)
    assert len(_deliveries_for(receiver, "/operator-loss")) == 1, receiver.received("/operator-loss")


def test_facade_pod_deleted_during_sse_client_reconnects_and_gets_done(
    kube: Kube, release: dict[str, Any], long_speech: Path
) -> None:
    with kube.port_forward(NS, f"svc/{FACADE_SVC}", 80) as port:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as c:
            job_id = _submit(c, long_speech, language="en")
            stream = SSEStream(f"{base}/jobs/{job_id}/stream").start()
            stream.wait_open(30)
            # the pod serving this port-forward: kubectl picks one facade pod behind the Service
            facades = kube.get("-n", NS, "pods", "-l", "app.kubernetes.io/component=facade")["items"]
            for p in facades:
                kube.kubectl("-n", NS, "delete", "pod", p["metadata"]["name"], "--wait=false")
            wait_for("the SSE stream to break", lambda: stream.closed, 120, 0.5)
            stream.close()
    kube.kubectl("-n", NS, "rollout", "status", f"deployment/{FACADE_SVC}", "--timeout=180s", timeout=200)

    def only_new_facades() -> bool:
        # port-forward to a Service picks any selected pod: a terminating one would break it again
        pods = kube.get("-n", NS, "pods", "-l", "app.kubernetes.io/component=facade")["items"]
        return bool(pods) and all(not p["metadata"].get("deletionTimestamp") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            for p in pods)

    wait_for("only the new, Ready facade pods", only_new_facades, 120, 1)
    with kube.port_forward(NS, f"svc/{FACADE_SVC}", 80) as port:
        base = f"http://127.0.0.1:{port}"
        wait_for("the new facade", lambda: _ok(httpx.Client(base_url=base, timeout=10), "/health"), 60)
        again = SSEStream(f"{base}/jobs/{job_id}/stream").start()
        done = again.wait_for(lambda e: e.event == "done", 600)
        again.close()
    assert done.json()["job"]["status"] == "done"


def test_helm_upgrade_keeps_queued_jobs(kube: Kube, facade: httpx.Client, images: dict[str, str]) -> None:
    jfk = REPO / "tests" / "data" / "jfk.wav"
    jobs = [_submit(facade, jfk, language="en") for _ in range(3)]
    kube.helm("upgrade", RELEASE, "charts/whisper-operator", "-n", NS, "--reuse-values",
              "--set", "operator.logLevel=DEBUG", "--wait", "--timeout", "5m")
    kube.kubectl("-n", NS, "rollout", "status", f"deployment/{FULL}-operator", "--timeout=180s", timeout=200)
    with kube.port_forward(NS, f"svc/{FACADE_SVC}", 80) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            for job_id in jobs:
                job = _wait_job(c, job_id, ("done", "failed", "cancelled"), 600)
                assert job["status"] == "done", job


def test_helm_uninstall_leaves_nothing_and_does_not_hang(kube: Kube, facade: httpx.Client,
                                                         long_speech: Path) -> None:
    _submit(facade, long_speech, language="en")  # something in flight at uninstall time
    t0 = time.monotonic()
    kube.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "3m", timeout=240)
    timings["helm_uninstall_s"] = round(time.monotonic() - t0, 2)
    for kind in ("transcriptionjobs", "whispermodels", "deployments", "services", "jobs"):
        left = kube.get("-n", NS, kind)
        names = [i["metadata"]["name"] for i in (left or {"items": []})["items"]]
        assert not names, f"{kind} left after helm uninstall: {names}"
    # helm deletes Deployments with background propagation: their pods go right after
    wait_for("the release's pods to go", lambda: not (kube.get("-n", NS, "pods") or {"items": []})["items"], 120, 1)
    kube.kubectl("delete", "namespace", NS, "--timeout=120s", timeout=150)
    assert kube.get("namespace", NS) is None
    _save_timings()


def _save_timings() -> None:
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    old.update(timings)
    TIMINGS.write_text(json.dumps(old, indent=2) + "\n")

