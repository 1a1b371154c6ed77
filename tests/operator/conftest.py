"""Harness for the operator/worker tests on the real control plane and MinIO.

* CRDs are applied with kubectl (the committed YAML, as a user would);
* the operator runs as ``python -m kopf run -m whisperop.operator.main
  --namespace <ns> --standalone`` with the test kubeconfig and short periods;
* inference pods are kwok pods: a worker is ``whisperop worker`` started as a
  local process with a pod's identity (POD_NAME/POD_NAMESPACE), the container's
  entrypoint run directly;
* webhooks go to a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from whisperop.core import crds
from whisperop.testenv.process import poll

PLUGIN = "whisperop.testenv.pytest_plugin"
REPO = Path(__file__).resolve().parents[2]

FAST_ENV = {
    "WHISPEROP_RECONCILE_SECS": "1",
    "WHISPEROP_HEARTBEAT_TIMEOUT_SECS": "6",
    "WHISPEROP_HEARTBEAT_SECS": "1",
    "WHISPEROP_METRICS_PORT": "0",
    "WHISPEROP_WEBHOOK_ATTEMPTS": "3",
    # the tests' webhook receivers listen on loopback, which the outbound URL guard refuses unless listed
    "WHISPEROP_OUTBOUND_ALLOW": "127.0.0.1",
    "WHISPER_THREADS": "1",
    # Pacing, not behaviour: several tests must watch a job while it runs
    # (reconnects mid-job, unload waits for the running job). With flash
    # attention (the engine default) the tiny model finishes their 90 s file
    # in ~1 s, faster than a watch can be dropped three times.
    "FLASH_ATTN": "0",
    "LOG_LEVEL": "INFO",
}


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)


wait_for = poll  # tests import it from here


def follow(stop: threading.Event, list_fn: Callable[..., Any], *args: Any, on_object: Callable[[Any], None],
           timeout_seconds: int = 5, retry_secs: float = 0.5, **kwargs: Any) -> None:
    """List, then watch ``list_fn(*args, **kwargs)`` until ``stop``: every version of every object
    reaches ``on_object`` in order. A reconnect resumes from the last resourceVersion, so no write
    is missed (polling can miss a state shorter than its period); only an error relists."""
    from kubernetes import watch

    rv = None
    while not stop.is_set():
        try:
            resume = {"resource_version": rv} if rv else {}
            for ev in watch.Watch().stream(list_fn, *args, timeout_seconds=timeout_seconds, **kwargs, **resume):
                if ev["type"] == "ERROR":
                    rv = None
                    break
                obj = ev["object"]
                rv = obj["metadata"]["resourceVersion"] if isinstance(obj, dict) else obj.metadata.resource_version
                on_object(obj)
                if stop.is_set():
                    break
        except Exception:
            rv = None
            time.sleep(retry_secs)


def kubectl(k8s_env: Any) -> str:
    from whisperop.testenv import binaries

    built = binaries.binary("kubectl")
    return str(built) if built.exists() else (shutil.which("kubectl") or "kubectl")


@pytest.fixture(scope="session")
def crds_applied(k8s_env: Any) -> None:
    env = dict(os.environ, KUBECONFIG=str(k8s_env.kubeconfig))
    r = subprocess.run([kubectl(k8s_env), "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([kubectl(k8s_env), "wait", "--for=condition=Established", "--timeout=30s",
                        f"crd/{crds.JOB_PLURAL}.{crds.GROUP}", f"crd/{crds.MODEL_PLURAL}.{crds.GROUP}"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr


class Receiver:
    """A real HTTP server that records every POST (webhook deliveries)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        # a test may hold POSTs it picks (recorded, not yet answered) until it sets ``release``
        self.hold: Callable[[dict[str, Any]], bool] | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"null")
                entry = {"path": self.path, "body": body, "delivery": self.headers.get("X-Whisperop-Delivery")}
                with rec.lock:
                    rec.posts.append(entry)
                if rec.hold is not None and rec.hold(entry):
                    rec.held.set()
                    rec.release.wait(60)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str | None = None) -> list[Any]:
        with self.lock:
            return [p["body"] for p in self.posts if path is None or p["path"] == path]

    def close(self) -> None:
        self.server.shutdown()


class Cluster:
    """One test namespace with the operator, workers, S3 and helpers."""

    def __init__(self, k8s_env: Any, s3_env: Any, ns: str, tmp: Path) -> None:
        from whisperop.cluster import kube

        self.k8s_env, self.s3_env, self.ns, self.tmp = k8s_env, s3_env, ns, tmp
        self.api = k8s_env.client
        self.jobs = kube.jobs(self.api, ns)
        self.models = kube.models(self.api, ns)
        self.env = dict(os.environ, KUBECONFIG=str(k8s_env.kubeconfig), **s3_env.env(), **FAST_ENV)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.operator: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Path] = []

    # processes
    def _spawn(self, argv: list[str], log_name: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        path = self.tmp / f"{log_name}.log"
        self.logs.append(path)
        f = open(path, "ab")
        return subprocess.Popen(argv, env={**self.env, **(extra or {})}, stdout=f, stderr=subprocess.STDOUT,
                                cwd=str(self.tmp), start_new_session=True)

    def start_operator(self, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.operator = self._spawn([sys.executable, "-m", "kopf", "run", "-m", "whisperop.operator.main",
                                     "--namespace", self.ns, "--standalone"], "operator", extra)
        return self.operator

    def kill_operator(self, sig: int = signal.SIGKILL) -> None:
        if self.operator and self.operator.poll() is None:
            self.operator.send_signal(sig)
            self.operator.wait(20)

    def start_worker(self, pod: str, model: str = "default", extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        p = self._spawn([sys.executable, "-m", "whisperop", "worker", "--port", "0"], f"worker-{pod}",
                        {"POD_NAME": pod, "POD_NAMESPACE": self.ns, "WHISPEROP_MODEL_NAME": model,
                         "USE_GPU": "false", "WHISPEROP_MODEL_CACHE": str(self.tmp / "cache"), **(extra or {})})
        self.workers[pod] = p
        return p

    def stop_all(self) -> None:
        procs = list(self.workers.values()) + ([self.operator] if self.operator else [])
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def log_tail(self, n: int = 60) -> str:
        out = []
        for path in self.logs:
            try:
                lines = path.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                continue
            out.append(f"── {path.name} ──\n" + "\n".join(lines))
        return "\n".join(out)

    # resources
    def create_model(self, name: str = "default", **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": crds.API_VERSION, "kind": crds.MODEL_KIND, "metadata": {"name": name},
                "spec": {"resources": {"gpus": 1}, **spec}}
        return self.models.create(body)

    def create_job(self, audio: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": crds.API_VERSION, "kind": crds.JOB_KIND,
                "metadata": {"name": name or f"job-{uuid.uuid4().hex[:8]}"}, "spec": {"audio": audio, **spec}}
        return self.jobs.create(body)

    def upload(self, path: Path, key: str | None = None) -> str:
        key = key or f"inputs/{self.ns}/{path.name}"
        self.s3_env.client().upload_file(str(path), self.s3_env.bucket, key)
        return f"s3://{self.s3_env.bucket}/{key}"

    def phase(self, name: str) -> str | None:
        return (self.jobs.get(name).get("status") or {}).get("phase")

    def wait_phase(self, name: str, phases: str | tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
        want = (phases,) if isinstance(phases, str) else phases

        def check() -> dict[str, Any] | None:
            obj = self.jobs.get(name)
            return obj if (obj.get("status") or {}).get("phase") in want else None

        return wait_for(check, timeout, f"job {name} in {want}")

    def model_status(self, name: str = "default") -> dict[str, Any]:
        return self.models.get(name).get("status") or {}

    def pods(self, model: str = "default") -> list[Any]:
        from kubernetes import client

        return client.CoreV1Api(self.api).list_namespaced_pod(
            self.ns, label_selector=f"{crds.LABEL_MODEL}={model},{crds.LABEL_COMPONENT}=inference").items

    def running_pods(self, model: str = "default") -> list[str]:
        return sorted(p.metadata.name for p in self.pods(model)
                      if p.status.phase == "Running" and not p.metadata.deletion_timestamp)

    def deployment_replicas(self, model: str = "default") -> int | None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            return client.AppsV1Api(self.api).read_namespaced_deployment(f"whisper-{model}", self.ns).spec.replicas
        except ApiException:
            return None

    def events(self, reason: str | None = None) -> list[Any]:
        from kubernetes import client

        evs = client.CoreV1Api(self.api).list_namespaced_event(self.ns).items
        return [e for e in evs if reason is None or e.reason == reason]


@pytest.fixture
def cluster(k8s_env: Any, s3_env: Any, k8s_namespace: str, crds_applied: None, tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(k8s_env, s3_env, k8s_namespace, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            sys.stderr.write("\n" + c.log_tail() + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.when == "call" and rep.failed:
        c = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
        if isinstance(c, Cluster):
            rep.sections.append(("operator/worker logs", c.log_tail()))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class PhaseRecorder:
    """Watches the namespace's jobs and records every phase change and result write."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.phases: dict[str, list[str]] = {}
        self.done_writes: dict[str, int] = {}
        self.workers: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from kubernetes import client

        co = client.CustomObjectsApi(self.cluster.api)
        follow(self.stop, co.list_namespaced_custom_object, crds.GROUP, crds.VERSION, self.cluster.ns, crds.JOB_PLURAL,
               on_object=self._record)

    def _record(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        st = obj.get("status") or {}
        with self.lock:
            seq = self.phases.setdefault(name, [])
            phase = st.get("phase")
            if phase and (not seq or seq[-1] != phase):
                seq.append(phase)
                if phase == "Done":
                    self.done_writes[name] = self.done_writes.get(name, 0) + 1
                if phase == "Running":
                    self.workers.setdefault(name, []).append(st.get("worker"))

    def settled(self, name: str, phase: str, timeout: float = 20) -> list[str]:
        """The phases recorded for ``name`` once the watch has seen ``phase`` last.

        The recorder's watch is a second connection: when ``wait_phase`` (a GET)
        sees a phase, this watch may not have delivered the event yet (CI stop 23
        read ``['Queued', 'Running']`` a moment before ``'Cancelled'`` arrived).
        """
        def caught_up() -> list[str] | None:
            with self.lock:
                seq = list(self.phases.get(name, []))
            return seq if seq and seq[-1] == phase else None
        return wait_for(caught_up, timeout, f"recorder saw {name} {phase}")

    def close(self) -> None:
        self.stop.set()


@pytest.fixture
def recorder(cluster: Cluster) -> Iterator[PhaseRecorder]:
    r = PhaseRecorder(cluster)
    yield r
    r.close()


@pytest.fixture(scope="session")
def jfk_s3(s3_env: Any, jfk_wav: Path) -> str:
    key = "inputs/shared/jfk.wav"
    s3_env.client().upload_file(str(jfk_wav), s3_env.bucket, key)
    return f"s3://{s3_env.bucket}/{key}"
