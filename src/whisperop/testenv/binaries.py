"""Where the built binaries live, and whether they are all there.

Why: the build is slow (tens of minutes cold) and happens once per set of
pinned versions, so the binaries live in a cache outside the repo keyed by
``versions.versions_key()``; callers must find the same folder the build
script filled, and say precisely what is missing when it is not there.
"""

from __future__ import annotations

import os
from pathlib import Path

from .versions import BINARIES, versions_key

# What each part of the environment needs, so S3-only tests run without kube-*.
KUBERNETES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
S3 = ("minio",)
# The real node (whisperop.testenv.node) on top of KUBERNETES.
NODE = ("kube-proxy", "kubelet", "coredns", "pause")


def cache_root() -> Path:
    """Root of all whisperop caches (``$WHISPEROP_CACHE`` or ~/.cache/whisperop)."""
    env = os.environ.get("WHISPEROP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "whisperop"


def testenv_dir() -> Path:
    """Folder of this version set: ``bin/`` plus the kwok stage config."""
    return cache_root() / "testenv" / versions_key()


def bin_dir() -> Path:
    """Folder holding etcd, kube-*, kwok, minio, kubectl and helm."""
    env = os.environ.get("WHISPEROP_TESTENV_BIN")
    return Path(env) if env else testenv_dir() / "bin"


def kwok_stages_file() -> Path:
    """kwok's Stage config, extracted by the build from the same kwok module version."""
    return bin_dir().parent / "kwok-stages.yaml"


def binary(name: str) -> Path:
    """Path of one binary (whether or not it exists)."""
    return bin_dir() / name


def missing(names: tuple[str, ...] = BINARIES) -> list[str]:
    """Those of ``names`` that are absent or not executable (plus kwok's stage file)."""
    out = [n for n in names if not os.access(binary(n), os.X_OK)]
    if "kwok" in names and not kwok_stages_file().is_file():
        out.append(kwok_stages_file().name)
    return out
