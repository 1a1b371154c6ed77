"""Command line: ``python -m whisperop.testenv build|up|down|env|status|paths``.

Why: the same environment the tests use is handy by hand (kubectl against it,
a manual helm install, running the suite repeatedly without restarting it).
``up`` starts detached components and records them in a run directory;
``env`` prints ``export`` lines that put the tests in external mode against
it; ``down`` stops them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import binaries
from .environment import Environment, MissingBinaries
from .node import NodeUnavailable
from .versions import versions_key


def _run_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    return Path(os.environ.get("WHISPEROP_TESTENV_RUN") or binaries.cache_root() / "testenv" / "run")


def _repo_root() -> Path | None:
    """The checkout this package comes from, if it is one (for `build`)."""
    for base in (Path(__file__).resolve(), Path.cwd()):
        for p in (base, *base.parents):
            if (p / "scripts" / "build-testenv.sh").is_file():
                return p
    return None


def cmd_build(args: argparse.Namespace) -> int:
    root = _repo_root()
    if root is None:
        print("build: scripts/build-testenv.sh not found (run from the repo)", file=sys.stderr)
        return 2
    return subprocess.call(["bash", str(root / "scripts" / "build-testenv.sh"), *args.rest])


def cmd_up(args: argparse.Namespace) -> int:
    run = _run_dir(args.dir)
    if (run / "state.json").exists():
        env = Environment.adopt(run)
        if any(c.alive() for c in env.components):
            print(f"up: already running in {run} (use `down` first)", file=sys.stderr)
            return 1
        env.stop(remove=True)
    env = Environment(run, gpus=args.gpus, detach=True, node=args.node)
    t0 = time.monotonic()
    try:
        if not args.no_k8s:
            env.start_kubernetes()
        if not args.no_s3:
            env.start_s3()
    except (MissingBinaries, NodeUnavailable) as e:
        print(f"up: {e}", file=sys.stderr)
        env.stop(remove=True)
        return 2
    except Exception as e:
        print(f"up: failed: {e}\n{env.log_tails(30)}", file=sys.stderr)
        env.stop(remove=False)
        print(f"up: logs kept in {env.log_dir}", file=sys.stderr)
        return 1
    print(f"# whisperop testenv up in {time.monotonic() - t0:.1f}s; run dir {run}; logs {env.log_dir}", file=sys.stderr)
    _print_env(env.env())
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    run = _run_dir(args.dir)
    if not (run / "state.json").exists():
        print(f"down: nothing running in {run}", file=sys.stderr)
        return 0
    Environment.adopt(run).stop(remove=not args.keep)
    print(f"down: stopped {run}", file=sys.stderr)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    run = _run_dir(args.dir)
    if not (run / "state.json").exists():
        print(f"env: nothing running in {run}; start it with `up`", file=sys.stderr)
        return 1
    _print_env(Environment.adopt(run).env())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(f"versions: {versions_key()}")
    print(f"bin dir:  {binaries.bin_dir()}")
    miss = binaries.missing()
    print("binaries: " + ("all present" if not miss else "MISSING " + ", ".join(miss)))
    run = _run_dir(args.dir)
    if (run / "state.json").exists():
        for c in Environment.adopt(run).components:
            print(f"  {c.name:24s} pid {c.pid:<8} {'running' if c.alive() else 'stopped'}")
    return 0 if not miss else 1


def _print_env(env: dict[str, str]) -> None:
    print("export WHISPEROP_TESTENV=external")
    for k, v in env.items():
        print(f"export {k}={shlex.quote(v)}")
    print(f"export PATH={shlex.quote(str(binaries.bin_dir()))}:\"$PATH\"")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m whisperop.testenv", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or reuse the binaries (scripts/build-testenv.sh)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=cmd_build)
    for name, fn, text in (
        ("up", cmd_up, "start a detached environment, print export lines"),
        ("down", cmd_down, "stop the detached environment"),
        ("env", cmd_env, "print export lines for the running environment"),
        ("status", cmd_status, "show versions, binaries and running components"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--dir", help="run directory (default $WHISPEROP_TESTENV_RUN or ~/.cache/whisperop/testenv/run)")
        sp.set_defaults(fn=fn)
        if name == "up":
            sp.add_argument("--gpus", type=int, default=int(os.environ.get("WHISPEROP_TESTENV_GPUS", "1")))
            sp.add_argument("--no-k8s", action="store_true", help="S3 server only")
            sp.add_argument("--no-s3", action="store_true", help="Kubernetes only")
            sp.add_argument("--node", action="store_true",
                            help="a real node on this machine (kubelet + containerd; root) instead of kwok")
        if name == "down":
            sp.add_argument("--keep", action="store_true", help="keep the run dir (logs)")
    args = p.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
