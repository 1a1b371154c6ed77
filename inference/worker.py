"""The cluster worker: the process in each inference pod (``whisperop worker``).

A thin shell around the code ``whisperop serve`` runs too: the model loop of
:mod:`whisperop.inference.lifecycle`, the job executor of
:mod:`whisperop.inference.executor`, and the TranscriptionJob work queue of
:mod:`whisperop.cluster.work_queue` (claim, heartbeats, guarded writes, S3
results, checkpoints). What is the pod's own:

1. identity from the downward API (``POD_NAME``, ``POD_NAMESPACE``); the model
   is ``WHISPEROP_MODEL_NAME`` (a WhisperModel in that namespace), found at
   ``WHISPEROP_MODEL_PATH`` when set (a local file, e.g. on the read-only PVC
   of ``spec.source.pvc``: loaded as is, never downloaded or converted), else
   ``spec.modelURI`` (an absolute path, or ``s3://`` downloaded once into
   ``WHISPEROP_MODEL_CACHE``);
2. the load state reported in ``whisperop.io/load-state`` on its own Pod
   (loading / waiting_for_gpu with vramNeededMB, vramFreeMB, retryInSecs /
   ready), and ``/readyz`` green once loaded; ``/healthz`` and ``/metrics``;
3. SIGTERM: stop claiming, let the running job finish for up to
   ``WHISPEROP_DRAIN_SECS``, otherwise interrupt it and hand it back (``Queued``).

Test hooks: the same environment variables as the local runtime
(:mod:`whisperop.inference.lifecycle`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from whisperop.cluster import kube
from whisperop.cluster.s3 import S3Settings
from whisperop.cluster.work_queue import ClusterWorkQueue, WorkQueueSettings
from whisperop.core import crds, modelsource
from whisperop.core.errors import EngineCrashed, GpuMemoryError, ModelNotFoundError
from whisperop.core.gpu import GpuInfo, local_gpu
from whisperop.core.settings import DeployableSettings, EngineSettings, FaultHooks, KubeSettings
from whisperop.core.urlguard import ALLOW_ENV
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


class WorkerConfig(DeployableSettings):
    """Everything ``whisperop worker`` reads from its environment, read once at start: its own
    knobs, and the groups it shares with other deployables (the engine's :class:`EngineSettings`,
    :class:`S3Settings`, the load loop's test hooks, the API server's :class:`KubeSettings`);
    ``whisperop worker`` flags override (docs/configuration.md lists every knob)."""

    # no populate_by_name: only the documented names are read (a pod's PORT or MODEL is not ours)
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", env_ignore_empty=True)

    pod: str = Field(alias="POD_NAME", description="downward API")
    namespace: str = Field(alias="POD_NAMESPACE", description="downward API")
    model: str = Field(crds.DEFAULT_MODEL, alias="WHISPEROP_MODEL_NAME", description="the WhisperModel to serve")
    model_uri: str | None = Field(None, alias="WHISPEROP_MODEL_URI", description="overrides spec.modelURI")
    port: int = Field(8081, ge=0, alias="WHISPEROP_WORKER_PORT", description="/healthz, /readyz, /metrics (0 = any)")
    bind: str = Field("0.0.0.0", alias="WHISPEROP_WORKER_BIND",
                      description="address of that server: the kubelet probes the pod IP, so all interfaces")
    heartbeat_secs: float = Field(10.0, gt=0, alias="WHISPEROP_HEARTBEAT_SECS")
    progress_secs: float = Field(0.5, ge=0, alias="WHISPEROP_PROGRESS_SECS", description="at most one progress write per")
    drain_secs: float = Field(100.0, ge=0, alias="WHISPEROP_DRAIN_SECS", description="SIGTERM: time the running job gets")
    resync_secs: float = Field(30.0, gt=0, alias="WHISPEROP_RESYNC_SECS", description="forget the claims tried")
    model_path: str | None = Field(None, alias=modelsource.MODEL_PATH_ENV,
                                   description="a local GGML file (PVC source), wins over any URI")
    outbound_allow: str = Field("", alias=ALLOW_ENV, description="which http(s) audio URLs may be fetched")
    engine: EngineSettings = Field(default_factory=EngineSettings, exclude=True)
    s3: S3Settings = Field(default_factory=S3Settings, exclude=True)
    faults: FaultHooks = Field(default_factory=FaultHooks, exclude=True)
    kube: KubeSettings = Field(default_factory=KubeSettings, exclude=True)

    @classmethod
    def from_env(cls, **overrides: Any) -> "WorkerConfig":
        """The environment, with the non-None ``overrides`` (the CLI's flags) on top."""
        try:
            return cls(**{cls.model_fields[k].alias or k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            if {e["loc"][0] for e in exc.errors()} & {"POD_NAME", "POD_NAMESPACE", "pod", "namespace"}:
                raise SystemExit("POD_NAME and POD_NAMESPACE must be set (downward API)") from None
            raise


# ── the worker ───────────────────────────────────────────────────────────────


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.settings = cfg.engine
        self._env_settings = self.settings  # the pod's environment; spec.engine is applied on top at each load
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
        self._slot_free = threading.Event()
        self._jobs_lock = threading.Lock()
        self._jobs_running = 0  # jobs in their own threads (JOB_CONCURRENCY > 1)
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

    def model_location(self, spec: crds.WhisperModelSpec) -> str:
        """Where the model is: the local file the operator resolved (PVC), the --model-uri
        override, or the WhisperModel's own source."""
        if self.cfg.model_path:
            return self.cfg.model_path
        if self.cfg.model_uri:
            return self.cfg.model_uri
        src = modelsource.resolve(spec)
        return src.uri or src.local_path or ""

    def resolve_model(self, uri: str) -> Path:
        """The local model: a path as is (never fetched), or an ``s3://`` source downloaded once into
        the model cache — one object (a GGML file) for whisper.cpp, every object under the prefix
        (a CTranslate2 directory) for ``ENGINE=ctranslate2``."""
        if not uri.startswith("s3://"):
            path = Path(uri)
            if not path.is_file() and not (path / "model.bin").is_file():  # a local file (or CTranslate2 dir) is never fetched
                raise ModelNotFoundError(f"model file {path} does not exist (PVC not populated, or wrong path?)")
            return path
        cache = Path(self.settings.model_cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        dest = cache / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{name}"
        engine = self.settings.engine
        if engine == "auto":  # the source decides: one object is a GGML file, a prefix a CTranslate2 directory
            engine = "whispercpp" if self.s3.is_object(uri) else "ctranslate2"
        if engine == "ctranslate2":
            if not (dest / "model.bin").is_file():
                part = dest.with_name(dest.name + ".part")
                shutil.rmtree(part, ignore_errors=True)
                try:
                    self.s3.download_prefix(uri, part)
                except FileNotFoundError as exc:
                    raise ModelNotFoundError(f"ENGINE=ctranslate2 needs a CTranslate2 model directory: {exc}") from exc
                part.rename(dest)
            return dest
        if not dest.is_file():
            part = dest.with_suffix(dest.suffix + ".part")
            self.s3.download(uri, part)
            part.rename(dest)
        return dest

    def engine_settings(self, spec: crds.WhisperModelSpec) -> EngineSettings:
        """The engine settings of this model: ``spec.engine`` wins over the pod's ``ENGINE`` (the operator
        renders it into ENGINE as well; a worker started by hand reads it here). ``auto`` stays auto
        until the model is found (:meth:`resolve_model`, then :meth:`EngineSettings.resolved`)."""
        settings = self._env_settings
        if spec.engine:
            settings = settings.model_copy(update={"engine": crds.EngineName(spec.engine).value})
        return settings

    def load(self) -> None:
        """Until loaded (or stopping): the shared load loop, reported on the Pod."""
        def locate() -> tuple[Path, float]:
            spec = self._model_spec()
            self.settings = self.engine_settings(spec)
            path = self.resolve_model(self.model_location(spec))
            self.settings = self.loader.settings = self.settings.resolved(path)
            self.model_path, self.poll_secs = path, float(spec.gpuPollIntervalSeconds)
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

    def engine_died_idle(self) -> None:
        """The engine's child died with no job running (issue 14): seen within a second (the
        claim loop's wait; :attr:`IsolatedEngine.alive` turns false at the death), not at the
        next job. Not ready meanwhile; out of
        GPU memory → ``waiting_for_gpu`` for a poll interval first, then the load loop again."""
        engine = self.engine
        assert isinstance(engine, IsolatedEngine)
        err = engine.death_error()
        log.error("engine process died while idle; loading it again", extra={"model": self.cfg.model, "error": str(err)})
        self.ready.clear()
        engine.close()
        self.engine = None
        if isinstance(err, GpuMemoryError) and self.model_path is not None:
            if not self.loader.wait_for_gpu(err, self.model_path, self.poll_secs, self):
                return
        self.load()

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
    def run_forever(self) -> None:
        self.queue.start()
        while not self.stopping.is_set():
            assert self.engine is not None
            if isinstance(self.engine, IsolatedEngine) and not self.engine.alive:
                self.engine_died_idle()
                continue
            slots = job_concurrency(self.engine, self.settings.job_concurrency)
            if slots > 1:
                self._claim_concurrent(self.engine, slots)
                continue
            lease = self.queue.claim_next()
            if lease is None:
                self.queue.wait(1.0)  # an engine death is handled at the latest a second later
                continue
            try:
                self.executor.run(lease, self.engine)
            except EngineCrashed:
                # the engine's child process died under the job (handed back by the executor):
                # a new engine, through waiting_for_gpu while the GPU's memory is taken
                self.engine.close()
                self.engine = None
                self.ready.clear()
                self.load()
        while self._jobs_running:  # SIGTERM: the jobs in their own threads drain (shutdown interrupts them)
            time.sleep(0.2)

    def _claim_concurrent(self, engine: Engine, slots: int) -> None:
        """``JOB_CONCURRENCY`` > 1 (an in-process engine): claim while a slot is free, each job in a
        thread of its own; the CTranslate2 engine batches their windows together."""
        with self._jobs_lock:
            full = self._jobs_running >= slots
        if full:
            self._slot_free.wait(1.0)
            self._slot_free.clear()
            return
        lease = self.queue.claim_next()
        if lease is None:
            self.queue.wait(1.0)
            return
        with self._jobs_lock:
            self._jobs_running += 1

        def run() -> None:
            try:
                self.executor.run(lease, engine)
            finally:
                with self._jobs_lock:
                    self._jobs_running -= 1
                self._slot_free.set()

        threading.Thread(target=run, name="job", daemon=True).start()

    # lifecycle
    def shutdown(self) -> None:
        """SIGTERM: stop claiming; let the running job finish within the drain time, else hand it back."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        running = self.executor.current
        log.info("stopping", extra={"running": running.job.id if running else None})

        def drain() -> None:
            deadline = time.monotonic() + self.cfg.drain_secs
            while self.executor.current is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.executor.current is not None:
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
