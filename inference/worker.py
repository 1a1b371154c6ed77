"""The cluster worker: the process in each inference pod (``whisperop worker``).

Identity from the downward API (``POD_NAME``, ``POD_NAMESPACE``); the model is
``WHISPEROP_MODEL_NAME`` (a WhisperModel in that namespace). Life of a worker:

1. load the model — ``WHISPEROP_MODEL_PATH`` when set (a local file, e.g. on the
   read-only PVC of ``spec.source.pvc``: loaded as is, never downloaded or
   converted), else ``spec.modelURI`` (an absolute path, or ``s3://`` downloaded
   once into ``WHISPEROP_MODEL_CACHE``) — warm it up (the engine does), report
   ``whisperop.io/load-state`` on its own Pod and turn ``/readyz`` green.
   A load that fails for lack of GPU memory is retried every
   ``gpuPollIntervalSeconds`` and reported as ``waiting_for_gpu`` with the
   figures (vramNeededMB, vramFreeMB, retryInSecs) in that annotation;
2. keep a watch-fed cache of its model's TranscriptionJobs (field selector
   ``spec.model``; relist on 410 Gone) and claim the first claimable one in
   queue order (priority, then age) with a status write guarded by the
   resourceVersion it saw — on 409 the next candidate is tried, so two
   workers never both win;
3. run it: download the audio (S3 or http), transcribe with the engine,
   heartbeat every ``WHISPEROP_HEARTBEAT_SECS``, progress at most every
   ``WHISPEROP_PROGRESS_SECS`` (0.5 s: ≤ 2 writes/s), upload the outputs to S3
   first (``results/<ns>/<job>/transcript.<fmt>``), then record the result.
   Every write after the claim is guarded too: if the job changed, the worker
   re-reads it and goes on only if it still owns it (phase Running, worker =
   this pod, same startTime); otherwise it drops its work (the operator
   requeued it, or someone else holds it), so a job never completes twice;
4. ``spec.cancel`` aborts the running job (the engine polls the flag) →
   ``Cancelled``; SIGTERM stops claiming, lets the running job finish for up
   to ``WHISPEROP_DRAIN_SECS`` and otherwise hands it back (``Queued``).

Test hooks (environment; the same names as the local runtime):
``WHISPEROP_FAULT_LOAD_OOM_COUNT=N`` makes the first N loads fail as if GPU
memory were full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from whisperop.cluster import kube
from whisperop.cluster.checkpoint import S3Checkpoint, checkpoint_prefix
from whisperop.cluster.informer import Informer
from whisperop.cluster.s3 import S3Settings
from whisperop.core import crds, modelsource
from whisperop.core.errors import GpuMemoryError, JobCancelled, ModelNotFoundError, WhisperOpError
from whisperop.core.gpu import GpuInfo, local_gpu
from whisperop.core.models import Task, TranscriptionResult
from whisperop.core.ports import DecodeHints
from whisperop.core.settings import EngineSettings
from whisperop.core.urlguard import ALLOW_ENV, check_url, guarded_client

log = logging.getLogger("whisperop.worker")

JOBS = Counter("whisperop_worker_jobs_total", "Jobs finished by this worker", ["outcome"])
CLAIMS = Counter("whisperop_worker_claims_total", "Claim attempts", ["result"])
JOB_SECS = Histogram("whisperop_worker_job_seconds", "Wall time per job", buckets=(1, 5, 15, 60, 300, 1200, 3600, 14400))
WRITES = Counter("whisperop_worker_status_writes_total", "Job status writes by this worker", ["kind"])


def ready_state(loaded_at: str, load_secs: float, gpu: GpuInfo | None) -> dict[str, Any]:
    """The load-state annotation of a worker whose model is loaded. The GPU (name, VRAM total and
    in use after the load) travels with it: the operator copies it into the WhisperModel's
    ``status.gpu``, which is where the facade's ``/health`` finds it — the facade pod has no GPU."""
    state: dict[str, Any] = {"state": "ready", "loadedAt": loaded_at, "loadSecs": round(load_secs, 3)}
    if gpu is not None:
        state["gpu"] = gpu.report()
    return state


@dataclass
class WorkerConfig:
    pod: str
    namespace: str
    model: str
    model_uri: str | None
    port: int
    heartbeat_secs: float
    progress_secs: float
    drain_secs: float
    resync_secs: float
    model_path: str | None = None  # WHISPEROP_MODEL_PATH: a local GGML file (PVC source), wins over any URI

    @classmethod
    def from_env(cls) -> "WorkerConfig":
        e = os.environ
        pod = e.get("POD_NAME")
        ns = e.get("POD_NAMESPACE")
        if not pod or not ns:
            raise SystemExit("POD_NAME and POD_NAMESPACE must be set (downward API)")
        return cls(
            pod=pod, namespace=ns, model=e.get("WHISPEROP_MODEL_NAME", crds.DEFAULT_MODEL),
            model_uri=e.get("WHISPEROP_MODEL_URI") or None, port=int(e.get("WHISPEROP_WORKER_PORT", "8081")),
            heartbeat_secs=float(e.get("WHISPEROP_HEARTBEAT_SECS", "10")),
            progress_secs=float(e.get("WHISPEROP_PROGRESS_SECS", "0.5")),
            drain_secs=float(e.get("WHISPEROP_DRAIN_SECS", "100")),
            resync_secs=float(e.get("WHISPEROP_RESYNC_SECS", "30")),
            model_path=e.get(modelsource.MODEL_PATH_ENV) or None,
        )


def decode_hints(obj: dict[str, Any]) -> DecodeHints:
    """The job's ``whisperop.io/decode-hints`` annotation (prompt, temperature; set by the facade's
    OpenAI-compatible API); a malformed one is ignored, as if absent."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get("whisperop.io/decode-hints")
    try:
        return DecodeHints.from_dict(json.loads(raw)) if raw else DecodeHints()
    except (ValueError, TypeError):
        log.warning("ignoring a malformed decode-hints annotation", extra={"job": obj["metadata"].get("name")})
        return DecodeHints()


class Lost(Exception):
    """The job is no longer this worker's (requeued, deleted, or taken)."""


# ── the job cache (one watch) ────────────────────────────────────────────────


class JobCache(Informer):
    """This model's jobs, kept current by one list+watch; wakes the claim loop on change."""

    def __init__(self, res: kube.Resources, model: str) -> None:
        super().__init__(res, field_selector=f"spec.model={model}")

    def candidates(self) -> list[dict[str, Any]]:
        with self.cond:
            return sorted((o for o in self.items.values() if kube.is_claimable(o)), key=kube.queue_key)


# ── one running job ──────────────────────────────────────────────────────────


class RunningJob:
    """Guarded writes for a claimed job; re-checks ownership on every 409."""

    def __init__(self, res: kube.Resources, obj: dict[str, Any], pod: str) -> None:
        self.res = res
        self.obj = obj
        self.name = obj["metadata"]["name"]
        self.pod = pod
        self.start_time = obj["status"]["startTime"]
        self.rv = obj["metadata"]["resourceVersion"]
        self.lock = threading.Lock()
        self.cancel_requested = bool(obj["spec"].get("cancel"))
        self.lost = False
        self.handback = False
        self.last_write = time.monotonic()
        self.pending: dict[str, Any] = {}

    def _owned(self, obj: dict[str, Any]) -> bool:
        st = obj.get("status") or {}
        return st.get("phase") == "Running" and st.get("worker") == self.pod and st.get("startTime") == self.start_time

    def write(self, status: dict[str, Any], kind: str) -> None:
        with self.lock:
            if self.lost:
                raise Lost(self.name)
            body = {**self.pending, **status}
            for _ in range(5):
                try:
                    obj = self.res.patch_status(self.name, body, rv=self.rv)
                    self.rv = obj["metadata"]["resourceVersion"]
                    self.obj = obj
                    self.pending = {}
                    self.last_write = time.monotonic()
                    self.cancel_requested |= bool(obj["spec"].get("cancel"))
                    WRITES.labels(kind).inc()
                    return
                except kube.Conflict:
                    pass
                except kube.NotFound:
                    self.lost = True
                    raise Lost(self.name) from None
                try:
                    fresh = self.res.get(self.name)
                except kube.NotFound:
                    self.lost = True
                    raise Lost(self.name) from None
                if not self._owned(fresh):
                    self.lost = True
                    raise Lost(self.name)
                self.rv = fresh["metadata"]["resourceVersion"]
                self.cancel_requested |= bool(fresh["spec"].get("cancel"))
            raise Lost(f"{self.name}: too many conflicts")

    def should_stop(self) -> bool:
        return self.cancel_requested or self.lost or self.handback


# ── the worker ───────────────────────────────────────────────────────────────


class Worker:
    def __init__(self, cfg: WorkerConfig, engine_settings: EngineSettings | None = None) -> None:
        self.cfg = cfg
        self.settings = engine_settings or EngineSettings()
        self.api = kube.api_client()
        self.jobs = kube.jobs(self.api, cfg.namespace)
        self.models = kube.models(self.api, cfg.namespace)
        self.s3 = S3Settings.from_env()
        self.cache = JobCache(self.jobs, cfg.model)
        self.engine: Any = None
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.current: RunningJob | None = None
        self._tried: set[tuple[str, str]] = set()
        self.server: ThreadingHTTPServer | None = None
        self.oom_faults = int(os.environ.get("WHISPEROP_FAULT_LOAD_OOM_COUNT", "0") or 0)

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

        self.server = ThreadingHTTPServer(("0.0.0.0", self.cfg.port), Handler)
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

    def _model_spec(self) -> dict[str, Any]:
        return self.models.get(self.cfg.model)["spec"]

    def model_location(self, spec: dict[str, Any]) -> str:
        """Where the model is: the local file the operator resolved (PVC), the --model-uri
        override, or the WhisperModel's own source."""
        if self.cfg.model_path:
            return self.cfg.model_path
        if self.cfg.model_uri:
            return self.cfg.model_uri
        src = modelsource.resolve(spec)
        return src.uri or src.local_path or ""

    def resolve_model(self, uri: str) -> Path:
        if not uri.startswith("s3://"):
            path = Path(uri)
            if not path.is_file() and not (path / "model.bin").is_file():  # a local file (or CTranslate2 dir) is never fetched
                raise ModelNotFoundError(f"model file {path} does not exist (PVC not populated, or wrong path?)")
            return path
        cache = Path(self.settings.model_cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        dest = cache / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{uri.rsplit('/', 1)[-1]}"
        if not dest.is_file():
            part = dest.with_suffix(dest.suffix + ".part")
            self.s3.download(uri, part)
            part.rename(dest)
        return dest

    def load(self) -> None:
        from whisperop.inference.engine import create_engine

        while not self.stopping.is_set():
            spec = self._model_spec()
            uri = self.model_location(spec)
            poll = int(spec.get("gpuPollIntervalSeconds", 30))
            self._annotate_pod({"state": "loading"})
            try:
                path = self.resolve_model(uri)
                if self.oom_faults > 0:
                    self.oom_faults -= 1
                    size = path.stat().st_size // (1024 * 1024) if path.exists() else 1
                    raise GpuMemoryError("simulated out of GPU memory (WHISPEROP_FAULT_LOAD_OOM_COUNT test hook)",
                                         vram_needed_mb=max(1, size), vram_free_mb=0)
                t0 = time.perf_counter()
                self.engine = create_engine(path, self.settings)
                loaded = kube.ts()
                self._annotate_pod(ready_state(loaded, time.perf_counter() - t0, local_gpu(self.settings.cuda_device)))
                self.ready.set()
                log.info("model ready", extra={"model": self.cfg.model, "uri": uri})
                return
            except GpuMemoryError as exc:
                self._annotate_pod({"state": "waiting_for_gpu", "vramNeededMB": exc.vram_needed_mb,
                                    "vramFreeMB": exc.vram_free_mb, "retryInSecs": poll, "message": str(exc)})
                log.warning("not enough GPU memory; retrying", extra={"retry_in_secs": poll})
                self.stopping.wait(poll)

    # claim
    def claim_next(self) -> dict[str, Any] | None:
        for obj in self.cache.candidates():
            key = (obj["metadata"]["name"], obj["metadata"]["resourceVersion"])
            if key in self._tried:
                continue
            self._tried.add(key)
            claimed = kube.claim(self.jobs, obj, self.cfg.pod)
            if claimed is not None:
                CLAIMS.labels("won").inc()
                return claimed
            CLAIMS.labels("conflict").inc()
        return None

    def run_forever(self) -> None:
        self.cache.start()
        self.cache.synced.wait(30)
        last_resync = time.monotonic()
        while not self.stopping.is_set():
            job = self.claim_next()
            if job is None:
                self.cache.wait(1.0)
                if time.monotonic() - last_resync > self.cfg.resync_secs:
                    self._tried.clear()
                    last_resync = time.monotonic()
                continue
            self.process(job)

    # one job
    def _heartbeat(self, rj: RunningJob, done: threading.Event) -> None:
        while not done.wait(min(self.cfg.heartbeat_secs, 1.0)):
            cached = self.cache.get(rj.name)
            if cached is not None and cached["spec"].get("cancel"):
                rj.cancel_requested = True
            if time.monotonic() - rj.last_write >= self.cfg.heartbeat_secs:
                try:
                    rj.write({"heartbeatTime": kube.ts()}, "heartbeat")
                except Lost:
                    return
                except Exception:
                    log.warning("heartbeat failed", exc_info=True)

    def _download(self, audio: str, tmp: Path) -> Path:
        name = audio.rsplit("/", 1)[-1].split("?")[0] or "audio"
        dest = tmp / name
        if audio.startswith("s3://"):
            return self.s3.download(audio, dest)
        # http(s): through the outbound URL guard (WHISPEROP_OUTBOUND_ALLOW); each redirect hop is
        # checked again at connect time, and a refused address fails the job with the guard's message
        allow = os.environ.get(ALLOW_ENV, "")
        with guarded_client(allow, follow_redirects=True, max_redirects=5, timeout=httpx.Timeout(60.0)) as client, \
                client.stream("GET", check_url(audio, allow=allow, what="audio URL")) as resp, open(dest, "wb") as f:
            resp.raise_for_status()
            for chunk in resp.iter_bytes(1 << 20):
                f.write(chunk)
        return dest

    def _upload(self, obj: dict[str, Any], result: TranscriptionResult) -> dict[str, Any]:
        from whisperop.inference.writers import render

        meta = obj["metadata"]
        prefix = crds.results_prefix(meta["namespace"], meta["name"])
        store = self.s3.store()
        formats = ["json"] + [f for f in (obj["spec"].get("outputFormats") or []) if f != "json"]
        out: dict[str, Any] = {"segments": len(result.segments)}
        for fmt in dict.fromkeys(formats):
            key = f"{prefix}transcript.{fmt}"
            store.put(key, [render(result, fmt).encode("utf-8")])
            out[fmt] = self.s3.uri(key)
        return out

    def _finish(self, rj: RunningJob, phase: str, reason: str, message: str, extra: dict[str, Any]) -> None:
        st = rj.obj.get("status") or {}
        n = kube.now()
        conds = crds.set_condition(st.get("conditions") or [], "Running", "False", reason, message, n,
                                   rj.obj["metadata"].get("generation"))
        body = {"phase": phase, "heartbeatTime": kube.ts(n), "conditions": conds, **extra}
        if phase in crds.TERMINAL_PHASES:
            body["completionTime"] = kube.ts(n)
        rj.write(body, phase.lower())
        JOBS.labels(phase.lower()).inc()
        kube.post_event(self.api, rj.obj, "Warning" if phase == "Failed" else "Normal", reason, message, "whisperop-worker")

    def process(self, obj: dict[str, Any]) -> None:
        from whisperop.inference.engine import Progress, TranscribeRequest

        rj = RunningJob(self.jobs, obj, self.cfg.pod)
        self.current = rj
        name = rj.name
        log.info("job claimed", extra={"job": name, "worker": self.cfg.pod})
        kube.post_event(self.api, obj, "Normal", "Running", f"running on {self.cfg.pod}", "whisperop-worker")
        done = threading.Event()
        hb = threading.Thread(target=self._heartbeat, args=(rj, done), daemon=True, name="heartbeat")
        hb.start()
        t0 = time.perf_counter()
        spec = obj["spec"]
        checkpoint = S3Checkpoint(self.s3.client, self.s3.bucket, checkpoint_prefix(obj))
        try:
            with tempfile.TemporaryDirectory(prefix="whisperop-job-", dir=self.settings.tmp_dir) as tmp:
                path = self._download(spec["audio"], Path(tmp))

                def on_decoded(duration: float, chunks: int) -> None:
                    rj.write({"durationSecs": round(duration, 3), "chunksTotal": chunks, "chunk": 0, "progress": 0,
                              "heartbeatTime": kube.ts()}, "decoded")

                def on_progress(p: Progress) -> None:
                    upd = {"chunk": p.chunk, "chunksTotal": p.chunks_total, "progress": min(99, p.percent)}
                    if time.monotonic() - rj.last_write >= self.cfg.progress_secs:
                        rj.write({**upd, "heartbeatTime": kube.ts()}, "progress")
                    else:
                        with rj.lock:
                            rj.pending.update(upd)

                hints = decode_hints(obj)
                factor = spec.get("chunkTimeLimitFactor")
                req = TranscribeRequest(language=spec.get("language"), task=Task(spec.get("task", "transcribe")),
                                        prompt=hints.prompt, temperature=hints.temperature,
                                        time_limit_secs=spec.get("timeLimitSeconds"),
                                        chunk_time_limit_factor=float(factor) if factor else None)
                result = self.engine.transcribe_file(path, req, on_progress=on_progress, should_cancel=rj.should_stop,
                                                     on_decoded=on_decoded, checkpoint=checkpoint)
            if rj.should_stop():
                raise JobCancelled()
            uris = self._upload(obj, result)  # outputs first, then the status that points at them
            self._finish(rj, "Done", "Completed", f"{len(result.segments)} segments in {result.chunks} chunks", {
                "progress": 100, "chunk": result.chunks, "chunksTotal": result.chunks, "result": uris,
                "language": result.language, "durationSecs": round(result.duration_secs, 3), "error": None,
            })
            log.info("job done", extra={"job": name, "segments": len(result.segments)})
        except (JobCancelled, Lost) as exc:
            self._stopped(rj, exc)
        except WhisperOpError as exc:
            self._fail(rj, str(exc))
        except Exception as exc:  # S3/http errors, anything unexpected: the job fails with the reason
            log.exception("job failed", extra={"job": name})
            self._fail(rj, f"{type(exc).__name__}: {exc}")
        finally:
            done.set()
            self.current = None
            JOB_SECS.observe(time.perf_counter() - t0)
            if not rj.handback and not rj.lost:
                self._drop_checkpoint(checkpoint, name)

    def _drop_checkpoint(self, checkpoint: "S3Checkpoint", name: str) -> None:
        """The job is terminal (or someone else's now): its checkpoint has served. A handed-back
        or lost job keeps it — the next worker resumes from it."""
        try:
            checkpoint.clear()
        except Exception:
            log.warning("could not delete the job's checkpoint", extra={"job": name}, exc_info=True)

    def _fail(self, rj: RunningJob, message: str) -> None:
        try:
            self._finish(rj, "Failed", "TranscriptionFailed", message, {"error": message})
        except Lost:
            log.info("job lost before recording its failure", extra={"job": rj.name})

    def _stopped(self, rj: RunningJob, exc: Exception) -> None:
        if isinstance(exc, Lost) or rj.lost:
            JOBS.labels("lost").inc()
            log.warning("job no longer ours; result dropped", extra={"job": rj.name})
            return
        try:
            if rj.cancel_requested:
                self._finish(rj, "Cancelled", "CancelledWhileRunning", f"cancelled while running on {self.cfg.pod}", {})
            elif rj.handback:
                self._finish(rj, "Queued", "HandedBack", f"{self.cfg.pod} is shutting down; job handed back",
                             {"worker": None, "heartbeatTime": None, "startTime": None, "progress": 0, "chunk": 0})
        except Lost:
            JOBS.labels("lost").inc()

    # lifecycle
    def shutdown(self) -> None:
        """SIGTERM: stop claiming; let the running job finish within the drain time, else hand it back."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        log.info("stopping", extra={"running": self.current.name if self.current else None})

        def drain() -> None:
            deadline = time.monotonic() + self.cfg.drain_secs
            while self.current is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            rj = self.current
            if rj is not None:
                rj.handback = True

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
    worker.cache.stop.set()
    if worker.engine is not None:
        worker.engine.close()
    return 0
