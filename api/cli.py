"""``whisperop serve``: the facade, a worker thread, SQLite and local blobs in one process.

Zero configuration: settings come from the contract's environment variables
(``HOST``, ``PORT``, ``DATA_DIR``, ``WHISPER_MODEL_PATH`` or ``WHISPER_MODEL``,
``IDLE_TIMEOUT_SECS``, ``GPU_POLL_INTERVAL_SECS``, ``QUEUE_WHILE_LOADING``,
``CUDA_DEVICE`` and the engine's own), and the default model is fetched and
converted into the model cache on first start, with a progress bar. The
model itself starts unloaded, as in the original; the first job or
``POST /model/load`` loads it.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from whisperop.api.config import ServeSettings

log = logging.getLogger("whisperop.serve")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve",
        help="run the REST API with an in-process worker (SQLite + local files)",
        description="Settings come from environment variables (HOST, PORT, DATA_DIR, WHISPER_MODEL_PATH, WHISPER_MODEL, "
        "IDLE_TIMEOUT_SECS, GPU_POLL_INTERVAL_SECS, QUEUE_WHILE_LOADING, CUDA_DEVICE, ...); flags override them.",
    )
    p.add_argument("--host", default=None, help="env HOST (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="env PORT (default 8080)")
    p.add_argument("--data-dir", default=None, help="env DATA_DIR (default ./data)")
    p.add_argument("--model", default=None, help="catalog name or GGML path (env WHISPER_MODEL_PATH / WHISPER_MODEL)")
    p.add_argument("--engine", choices=["auto", "whispercpp", "ctranslate2"], default=None,
                   help="env ENGINE: the decoding backend (auto = the faster one measured on this device class; "
                        "without --model/WHISPER_MODEL it picks the model too: base-q8_0 or base-ct2)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="env WHISPEROP_INSECURE=true: allow a non-loopback HOST without bearer tokens "
                        "(WHISPEROP_AUTH_TOKENS_FILE); anyone who can reach the port can use the server")
    p.add_argument("--cluster", action="store_true", default=None,
                   help="cluster mode (env WHISPEROP_MODE=cluster): jobs are TranscriptionJobs, audio goes to S3, "
                        "the model is a WhisperModel; no in-process worker (see docs/serve.md)")
    p.set_defaults(func=cmd_serve)


def default_model_for(engine: str) -> str:
    """The catalog model ``whisperop serve`` fetches when none is named: the one the engine loads
    (a GGML file for whisper.cpp, the CTranslate2 directory for ctranslate2)."""
    from whisperop.modelstore.cache import DEFAULT_CT2_MODEL, DEFAULT_MODEL

    return DEFAULT_CT2_MODEL if engine == "ctranslate2" else DEFAULT_MODEL


def resolve_server_model(model_path: Path | None, model_name: str, cache_dir: Path) -> Path:
    """WHISPER_MODEL_PATH when given, else the named model from the cache (fetched when missing)."""
    from whisperop.core.errors import ModelNotFoundError
    from whisperop.modelstore.cache import resolve_model

    if model_path is not None:
        if not Path(model_path).is_file() and not (Path(model_path) / "model.bin").is_file():
            raise ModelNotFoundError(f"WHISPER_MODEL_PATH does not point to a file (or a CTranslate2 model directory): {model_path}")
        return Path(model_path)
    from whisperop.cli import _Bars

    return resolve_model(model_name, cache_dir, fetch_missing=True, progress=_Bars())


def _namespace(cfg: ServeSettings) -> str:
    """``WHISPEROP_NAMESPACE``, else ``POD_NAMESPACE``, else the pod's service account's, else ``default``."""
    from whisperop.cluster import kube

    return kube.pod_namespace(cfg.kube, cfg.namespace) or "default"


def _listen_overrides(args: argparse.Namespace) -> dict[str, object]:
    """--host/--port over the environment's HOST/PORT (both serve modes)."""
    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    return overrides


def exposure_refused(host: str, tokens_file: str | None, insecure: bool, cluster: bool = False) -> str | None:
    """Why the server must not start on ``host`` (None when it may), logging loudly when allowed anyway.

    Local mode refuses a non-loopback bind without tokens unless ``--insecure``; the
    cluster facade (whose pod binds all interfaces behind a Service and a
    NetworkPolicy) only warns."""
    from whisperop.api.browser import is_loopback_bind

    if tokens_file or is_loopback_bind(host):
        return None
    if insecure or cluster:
        log.critical("serving on a non-loopback address WITHOUT authentication: anyone who can reach "
                     f"{host} can submit jobs, read transcripts and unload the model "
                     "(set WHISPEROP_AUTH_TOKENS_FILE; docs/security.md)", extra={"host": host})
        return None
    return (f"refusing to listen on {host} without bearer tokens: set WHISPEROP_AUTH_TOKENS_FILE "
            "(docs/security.md), bind 127.0.0.1, or pass --insecure (WHISPEROP_INSECURE=true) to allow it anyway")


def prepare_work_dir(path: Path) -> Path:
    """The decode work dir (``DATA_DIR/tmp`` unless ``WHISPEROP_TMP_DIR``), emptied of the
    temp files a crash left behind (a job running at kill -9 never cleans its own)."""
    path = Path(path).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    removed = 0
    for leftover in path.glob("whisperop-*"):
        try:
            if leftover.is_dir():
                import shutil

                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            removed += 1
        except OSError:
            log.warning("could not remove a leftover temp file", extra={"path": str(leftover)})
    if removed:
        log.info("removed leftover decode temp files", extra={"count": removed, "dir": str(path)})
    return path


def database_problem(path: Path, exc: Exception) -> str:
    """What to tell the operator about a job database SQLite cannot open (instead of a traceback)."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"the job database {path} is locked by another process ({text}); stop the other "
                "whisperop serve (or tool) using this DATA_DIR, or choose another DATA_DIR")
    return (f"the job database {path} cannot be used: {text}. It is not a SQLite database or it is damaged; "
            "move it away to start with an empty one (its jobs are lost), or restore a backup")


def _run_http(app: Any, host: str, port: int, on_stop_signal: Callable[[], None] | None = None) -> None:
    """uvicorn, with ``on_stop_signal`` called at SIGTERM/SIGINT itself.

    uvicorn runs the app's shutdown only after draining connections (up to 3 s,
    SSE streams hold them that long): the worker would decode on meanwhile and,
    on a fast machine, finish a job the stop was meant to interrupt."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if on_stop_signal is not None:
                on_stop_signal()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=3, lifespan="on")
    Server(config).run()


def cmd_serve_cluster(args: argparse.Namespace, cfg: ServeSettings) -> int:
    """The stateless facade: TranscriptionJobs + S3 + one WhisperModel (docs/serve.md, cluster mode)."""
    from whisperop.api.app import create_app
    from whisperop.cluster import kube
    from whisperop.cluster.job_queue import K8sJobStore
    from whisperop.cluster.model_runtime import ClusterModelRuntime
    from whisperop.stores.s3_blobs import S3BlobStore

    namespace = _namespace(cfg)
    model = cfg.cluster.model
    overrides = _listen_overrides(args)
    if "model_name" not in cfg.server.model_fields_set:  # WHISPER_MODEL unset: the WhisperModel's name
        overrides["model_name"] = model
    settings = cfg.with_server(**overrides).server
    api = kube.api_client(cfg.kube)
    s3 = cfg.s3
    blobs = S3BlobStore(s3.client, s3.bucket, prefix=cfg.cluster.upload_prefix or f"uploads/{namespace}/")
    watch_timeout = cfg.cluster.watch_timeout_secs
    jobstore = K8sJobStore(api, namespace, blobs, model=model, watch_timeout_seconds=watch_timeout,
                           ttl_secs_after_finished=settings.job_ttl_secs or None, registry=cfg.registry)
    runtime = ClusterModelRuntime(api, namespace, model, watch_timeout_seconds=watch_timeout)
    runtime.observe_jobs(jobstore.informer)
    jobstore.start()
    exposure_refused(settings.host, cfg.auth_tokens_file, True, cluster=True)
    app = create_app(settings, runtime, jobstore, blobs, send_webhooks=False, run_retention=False,  # type: ignore[arg-type]
                     auth_tokens_file=cfg.auth_tokens_file)
    app.state.cluster = {"jobs": jobstore, "runtime": runtime}
    log.info("starting whisperop serve --cluster", extra={"host": settings.host, "port": settings.port,
                                                          "namespace": namespace, "model": model, "bucket": s3.bucket})
    try:
        _run_http(app, settings.host, settings.port)
    finally:
        jobstore.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from whisperop.api.config import ServeSettings

    cfg = ServeSettings()
    if args.cluster or cfg.mode == "cluster":
        return cmd_serve_cluster(args, cfg)

    from whisperop.api.app import create_app
    from whisperop.inference.runtime import LocalModelRuntime
    from whisperop.stores.local_blobs import LocalBlobStore
    from whisperop.stores.sqlite_jobs import SqliteJobStore

    overrides = _listen_overrides(args)
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    if args.model:
        given = Path(args.model).expanduser()
        if given.is_file() or (given / "model.bin").is_file():  # a GGML file or a CTranslate2 directory
            overrides["model_path"] = given
        else:
            overrides["model_name"] = args.model
            overrides["model_path"] = None
    if args.insecure:
        overrides["insecure"] = True
    settings = cfg.with_server(**overrides).server
    refused = exposure_refused(settings.host, cfg.auth_tokens_file, settings.insecure)
    if refused:
        log.error(refused)
        print(f"whisperop serve: {refused}", file=sys.stderr)
        return 2
    engine_settings = cfg.engine
    if args.engine:
        engine_settings = engine_settings.model_copy(update={"engine": args.engine})
    if not args.model and "model_name" not in cfg.server.model_fields_set and not settings.model_path:
        # no model named: ENGINE (auto: this machine's device class) picks the one to fetch
        settings = settings.model_copy(update={"model_name": default_model_for(engine_settings.resolved().engine)})
    faults = cfg.faults
    if faults.load_oom_count or faults.load_delay_secs:
        log.warning("test fault hooks active", extra={"oom_count": faults.load_oom_count, "delay_secs": faults.load_delay_secs})

    model_path = resolve_server_model(settings.model_path, settings.model_name, engine_settings.model_cache_dir)
    engine_settings = engine_settings.resolved(model_path)  # auto: the model's engine
    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    engine_settings = engine_settings.model_copy(update={"tmp_dir": prepare_work_dir(engine_settings.tmp_dir or data_dir / "tmp")})
    try:
        jobstore = SqliteJobStore.in_data_dir(data_dir, settings.max_job_attempts, registry=cfg.registry)
    except sqlite3.DatabaseError as exc:
        why = database_problem(data_dir / "jobs.sqlite3", exc)
        log.error(why)
        print(f"whisperop serve: {why}", file=sys.stderr)
        return 3
    blobstore = LocalBlobStore.in_data_dir(data_dir)
    blobstore.clean_incoming()
    runtime = LocalModelRuntime(
        model_path,
        jobstore,
        blobstore,
        engine_settings,
        idle_timeout_secs=settings.idle_timeout_secs,
        gpu_poll_interval_secs=settings.gpu_poll_interval_secs,
        faults=faults,
    )
    app = create_app(settings, runtime, jobstore, blobstore, webhook_sender=cfg.webhooks.sender(settings.outbound_allow),
                     auth_tokens_file=cfg.auth_tokens_file)
    log.info("starting whisperop serve", extra={"host": settings.host, "port": settings.port, "data_dir": str(data_dir),
                                                "model": settings.model_name, "model_path": str(model_path)})
    _run_http(app, settings.host, settings.port, on_stop_signal=runtime.begin_stop)
    jobstore.close()
    return 0
