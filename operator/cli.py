"""``whisperop operator cleanup``: the chart's pre-delete hook (cleanup.py says why); ``whisperop operator
kwok-workers``: workers for kwok pods in a cluster brought up by hand (kwok_workers.py)."""

from __future__ import annotations

import argparse


def cmd_cleanup(args: argparse.Namespace) -> int:
    from whisperop.cluster import kube
    from whisperop.core.settings import KubeSettings

    from .cleanup import Plan, run

    settings = KubeSettings()
    namespace = kube.pod_namespace(settings, args.namespace)
    if not namespace:
        raise SystemExit("error: no namespace (--namespace or POD_NAMESPACE)")
    plan = Plan(namespace=namespace, job_selector=args.job_selector,
                model_selector=args.model_selector, timeout=args.timeout, pods=args.delete_pod or [])
    run(kube.api_client(settings), plan)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    op = subparsers.add_parser("operator", help="operator maintenance (the chart's uninstall hook)")
    sub = op.add_subparsers(dest="operator_command", required=True)
    c = sub.add_parser(
        "cleanup", help="delete the namespace's TranscriptionJobs and WhisperModels, release stuck finalizers",
        description="Deletes the matching TranscriptionJobs, then WhisperModels; waits --timeout seconds for the "
        "operator to finalize them (S3 clean-up), then removes whisperop's own finalizers (whisperop.io/cleanup, "
        "kopf.zalando.org/KopfFinalizerMarker) from what is left so the namespace can be deleted. Idempotent.")
    c.add_argument("--namespace", default=None, help="env POD_NAMESPACE, else the pod's own namespace")
    c.add_argument("--job-selector", default=None, help="label selector of the jobs (default: all of the namespace)")
    c.add_argument("--model-selector", default=None, help="label selector of the models (default: all)")
    c.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the operator before releasing finalizers (default 120)")
    c.add_argument("--delete-pod", action="append", metavar="NAME", help="also delete this pod (repeatable)")
    c.set_defaults(func=cmd_cleanup)
    k = sub.add_parser(
        "kwok-workers", help="run a local `whisperop worker` for each Running kwok inference pod (development only)",
        description="For a cluster with kwok nodes (python -m whisperop.testenv up): starts one local "
        "`whisperop worker` per Running inference pod of the namespace, with the pod's identity, and stops it when "
        "the pod goes; the workers inherit KUBECONFIG and WHISPEROP_S3_*. Runs until interrupted.")
    k.add_argument("--namespace", required=True)
    k.add_argument("--model", default=None, help="only this WhisperModel's pods (default: all)")
    k.add_argument("--log-dir", default="kwok-workers", help="worker logs and model cache (default ./kwok-workers)")
    k.set_defaults(func=_kwok_workers)


def _kwok_workers(args: argparse.Namespace) -> int:
    from .kwok_workers import cmd_kwok_workers

    return cmd_kwok_workers(args)
