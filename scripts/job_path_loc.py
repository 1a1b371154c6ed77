#!/usr/bin/env python3
"""Lines of code of the job path (issue 13), at a revision or per commit.

The job path is where a job is claimed, run and written back, in both modes,
plus the two job stores the facade reads: the files in ``JOB_PATH`` (before
issue 13 the same code lived in ``inference/runtime.py``,
``inference/worker.py`` and ``stores/k8s_jobs.py``, also listed). Two counts:
``wc -l`` lines, and code lines (no blank lines, comments or docstrings), so
that a docstring saying *why* is never what makes a number go up or down.

    python scripts/job_path_loc.py [REV]            # per file, at REV (default HEAD; WT = the working tree)
    python scripts/job_path_loc.py --commits A..B   # the code-line change each commit made (merges skipped)

``--commits`` attributes the total to commits, so a refactor and a feature
landing in the same files can be told apart.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

JOB_PATH = [
    "inference/executor.py", "inference/lifecycle.py", "inference/runtime.py", "inference/worker.py",
    "src/whisperop/cluster/work_queue.py", "src/whisperop/cluster/job_queue.py",
    "src/whisperop/stores/sqlite_jobs.py", "src/whisperop/stores/local_queue.py",
    "src/whisperop/stores/k8s_jobs.py",  # before issue 13: the cluster job store (now cluster/job_queue.py)
]


def counts(source: str) -> tuple[int, int]:
    """(lines, code lines) of one Python source."""
    lines = source.splitlines()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    code = sum(1 for i, line in enumerate(lines, 1)
               if line.strip() and not line.strip().startswith("#") and i not in docstrings)
    return len(lines), code


def source(rev: str, path: str) -> str | None:
    if rev == "WT":
        p = Path(path)
        return p.read_text() if p.is_file() else None
    r = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def at(rev: str) -> dict[str, tuple[int, int]]:
    out = {}
    for path in JOB_PATH:
        text = source(rev, path)
        if text is not None:
            out[path] = counts(text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", nargs="?", default="HEAD")
    ap.add_argument("--commits", metavar="A..B", help="per-commit code-line change over a range")
    a = ap.parse_args()
    if a.commits:
        log = subprocess.run(["git", "log", "--no-merges", "--reverse", "--format=%h %s", a.commits, "--", *JOB_PATH],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        for line in log:
            sha = line.split()[0]
            delta = sum(c for _, c in at(sha).values()) - sum(c for _, c in at(f"{sha}^").values())
            print(f"{delta:+5d}  {line[:110]}")
        return
    rows = at(a.rev)
    for path, (lines, code) in rows.items():
        print(f"{lines:6d} {code:6d}  {path}")
    print(f"{sum(x for x, _ in rows.values()):6d} {sum(c for _, c in rows.values()):6d}  total (lines, code lines)")


if __name__ == "__main__":
    main()
