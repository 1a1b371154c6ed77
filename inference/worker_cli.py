"""``whisperop worker``: the entrypoint of an inference pod (see worker.py)."""

from __future__ import annotations

import argparse


def cmd_worker(args: argparse.Namespace) -> int:
    from whisperop.inference.config import WorkerConfig
    from whisperop.inference.worker import run

    return run(WorkerConfig.from_env(model=args.model or None, model_uri=args.model_uri or None, port=args.port))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("worker", help="run the cluster inference worker (in an inference pod)",
                              description="Identity from POD_NAME/POD_NAMESPACE (downward API); S3 from WHISPEROP_S3_*.")
    p.add_argument("--model", default=None, help="WhisperModel name (env WHISPEROP_MODEL_NAME, default 'default')")
    p.add_argument("--model-uri", default=None, help="override spec.modelURI (path or s3:// URI)")
    p.add_argument("--port", type=int, default=None, help="health/metrics port (env WHISPEROP_WORKER_PORT, 8081; 0 = any)")
    p.set_defaults(func=cmd_worker)
