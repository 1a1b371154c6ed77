"""The cluster worker: the process in each inference pod (``whisperop worker``).

A thin shell around the code ``whisperop serve`` runs too: the model loop of
:mod:`whisperop.inference.lifecycle`, the serving loop and job executor of
:mod:`whisperop.inference.executor`, and the TranscriptionJob work queue of
:mod:`whisperop.cluster.work_queue` (claim, heartbeats, guarded writes, S3
results, checkpoints). What is the pod's own:

1. identity from the downward API (``POD_NAME``, ``POD_NAMESPACE``) and its
   settings (:class:`whisperop.inference.config.WorkerConfig`); the model is
   ``WHISPEROP_MODEL_NAME`` (a WhisperModel in that namespace), found where
   :func:`whisperop.cluster.model_fetch.locate` says (the PVC's file, the URI
   override, or ``spec.modelURI``, downloaded once from S3);
2. the load state reported in ``whisperop.io/load-state`` on its own Pod
   (loading / waiting_for_gpu with vramNeededMB, vramFreeMB, retryInSecs /
   ready), and ``/readyz`` green once loaded; ``/healthz`` and ``/metrics``;
3. SIGTERM: stop claiming, let the running jobs finish for up to
   ``WHISPEROP_DRAIN_SECS``, otherwise interrupt them and hand them back (``Queued``).

Test hooks: the same environment variables as the local runtime
(:mod:`whisperop.inference.lifecycle`).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from whisperop.cluster import kube, model_fetch
from whisperop.cluster.work_queue import ClusterWorkQueue, WorkQueueSettings
from whisperop.core import crds
from whisperop.core.errors import GpuMemoryError
from whisperop.core.gpu import GpuInfo, local_gpu
from whisperop.inference.config import WorkerConfig
from whisperop.inference.isolated import Engine, IsolatedEngine, stream_counts
from whisperop.inference.executor import Executor, job_concurrency
from whisperop.inference.lifecycle import ModelLoader

log = logging.getLogger("whisperop.worker")


def ready_state(loaded_at: str, load_secs: float, gpu: GpuInfo | None,
                streams: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    """The load-state annotation of a worker whose model is loaded. The GPU (name, VRAM total and
    in use after the load) travels with it: the operator copies it into the WhisperModel's
    ``status.gpu``, which is where the facade's ``/health`` finds it — the facade pod has no GPU.
    ``streams``: decode streams loaded and wanted (fewer while GPU memory was short, issue 14);
    written again when streams are added."""
    state: dict[str, Any] = {"state": "ready", "loadedAt": loaded_at, "loadSecs": round(load_secs, 3)}
    if gpu is not None:
        state["gpu"] = gpu.report()
    if streams[0] is not None and streams[1] is not None:
        state["streams"], state["streamsWanted"] = streams
    return state


# ── the worker ───────────────────────────────────────────────────────────────


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.settings = cfg.engine  # the pod's environment; spec.engine is applied on top at each load
        self.api = kube.api_client(cfg.kube)
        self.models = kube.models(self.api, cfg.namespace)
        self.s3 = cfg.s3
        self.queue = ClusterWorkQueue(self.api, cfg.namespace, cfg.model, self.s3, WorkQueueSettings(
            pod=cfg.pod, heartbeat_secs=cfg.heartbeat_secs, progress_secs=cfg.progress_secs,
            resync_secs=cfg.resync_secs, tmp_dir=self.settings.tmp_dir, outbound_allow=cfg.outbound_allow))
        self.loader = ModelLoader(self.settings, cfg.faults)
        self.executor = Executor()
        self.engine: Engine | None = None
        self.model_path: Path | None = None
        self.poll_secs = float(crds.DEFAULT_GPU_POLL_INTERVAL_SECS)
        self.loaded_at = ""
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    # health endpoint
    def serve_http(self) -> int:
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/healthz":
                    code, body, ctype = 200, b"ok", "text/plain"
                elif self.path == "/readyz":
                    ok = worker.ready.is_set() and not worker.stopping.is_set()
                    code, body, ctype = (200 if ok else 503), (b"ready" if ok else b"not ready"), "text/plain"
                elif self.path == "/metrics":
                    code, body, ctype = 200, generate_latest(), CONTENT_TYPE_LATEST
                else:
                    code, body, ctype = 404, b"not found", "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.cfg.bind, self.cfg.port), Handler)
        threading.Thread(target=self.server.serve_forever, name="health", daemon=True).start()
        port = self.server.server_address[1]
        log.info("health endpoint up", extra={"port": port})
        return int(port)

    # model
    def _annotate_pod(self, state: dict[str, Any]) -> None:
        from kubernetes import client

        body = {"metadata": {"annotations": {crds.ANN_LOAD_STATE: json.dumps(state)}}}
        try:
            client.CoreV1Api(self.api).patch_namespaced_pod(self.cfg.pod, self.cfg.namespace, body)
        except Exception:
            log.warning("could not annotate own pod", exc_info=True)

    def _model_spec(self) -> crds.WhisperModelSpec:
        return crds.WhisperModel.model_validate(self.models.get(self.cfg.model)).spec

    def load(self) -> None:
        """Until loaded (or stopping): the shared load loop, reported on the Pod."""
        def locate() -> tuple[Path, float]:
            spec = self._model_spec()
            self.model_path, settings = model_fetch.locate(spec, self.cfg.engine, self.s3, self.cfg.model_path,
                                                           self.cfg.model_uri)
            self.settings = self.loader.settings = settings
            self.poll_secs = float(spec.gpuPollIntervalSeconds)
            return self.model_path, self.poll_secs

        self.engine = self.loader.load(locate, self)
        if self.engine is not None:
            self.loaded_at = kube.ts()
            if isinstance(self.engine, IsolatedEngine):
                self.engine.supervise(self.poll_secs, on_streams=lambda *_: self._annotate_ready())
            self._annotate_ready()
            self.ready.set()
            log.info("model ready", extra={"model": self.cfg.model})

    def _annotate_ready(self) -> None:
        self._annotate_pod(ready_state(self.loaded_at, self.loader.load_secs, local_gpu(self.settings.cuda_device),
                                       stream_counts(self.engine)))

    # the loader's observer (whisperop.inference.lifecycle.LoadObserver)

    def wanted(self) -> bool:
        return not self.stopping.is_set()

    def sleep(self, secs: float) -> bool:
        return not self.stopping.wait(secs)

    def loading(self) -> None:
        self._annotate_pod({"state": "loading"})

    def waiting_for_gpu(self, needed_mb: int, free_mb: int, retry_secs: float, exc: GpuMemoryError) -> None:
        self._annotate_pod({"state": "waiting_for_gpu", "vramNeededMB": needed_mb, "vramFreeMB": free_mb,
                            "retryInSecs": int(retry_secs), "message": str(exc)})

    # jobs
    def wait_for_work(self) -> None:
        self.queue.wait(1.0)  # the watch cache changed, or a second passed (an idle engine's death is seen then)

    def run_forever(self) -> None:
        """Serve until SIGTERM: the serving loop of ``whisperop serve`` too (:meth:`Executor.serve`).
        An engine whose process died is replaced (not ready meanwhile; out of GPU memory →
        ``waiting_for_gpu`` for a poll interval first, then the load loop again)."""
        self.queue.start()
        while self.engine is not None:
            died = self.executor.serve(self.queue, self.engine, job_concurrency(self.engine, self.settings.job_concurrency), self)
            if died is None:
                break
            self.ready.clear()
            self.executor.wait_idle()
            self.engine.close()
            self.engine = None
            assert self.model_path is not None
            if not self.loader.after_death(died, self.model_path, self.poll_secs, self):
                break
            self.load()
        self.executor.wait_idle()  # SIGTERM: the running jobs drain (shutdown interrupts them past the drain time)

    # lifecycle
    def shutdown(self) -> None:
        """SIGTERM: stop claiming; let the running jobs finish within the drain time, else hand them back."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        log.info("stopping", extra={"running": self.executor.running})

        def drain() -> None:
            if not self.executor.wait_idle(self.cfg.drain_secs):
                self.executor.interrupt()

        threading.Thread(target=drain, daemon=True, name="drain").start()


def run(cfg: WorkerConfig | None = None) -> int:
    cfg = cfg or WorkerConfig.from_env()
    worker = Worker(cfg)
    worker.serve_http()
    signal.signal(signal.SIGTERM, lambda *_: worker.shutdown())
    signal.signal(signal.SIGINT, lambda *_: worker.shutdown())

    def main_loop() -> None:
        try:
            worker.load()
            if not worker.stopping.is_set():
                worker.run_forever()
        except Exception:
            log.exception("worker failed")
            worker.stopping.set()
            worker.ready.clear()

    t = threading.Thread(target=main_loop, name="worker", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.5)
    worker.queue.stop()
    if worker.engine is not None:
        worker.engine.close()
    return 0
