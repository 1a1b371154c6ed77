"""Pinned versions of the test-environment binaries, and the cache key they imply.

Why one file: the build script (bash) and the launcher (Python) must agree on
which cache folder holds the binaries. The build script runs this file with
plain ``python3 versions.py --shell`` (no imports from the project, so it works
before the virtualenv exists); the launcher imports it. The Go modules under
``tests/cluster/*/go.mod`` pin the same versions; ``tests/cluster/build.sh``
checks that they agree.
"""

from __future__ import annotations

import sys

K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
# MinIO's community server is source-only and has no semver tags: this is the
# Go pseudo-version of commit 7aac2a2c5b7c (2026-02-12).
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
HELM_VERSION = "v3.22.0"
# Cluster DNS of the real node (a small build with only the plugins it needs).
COREDNS_VERSION = "v1.12.4"
# Bump when build flags change so stale binaries are not reused.
BUILD_REV = "1"

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "minio",
    "helm",
    # the real node (kubelet + containerd, see whisperop.testenv.node)
    "kubelet",
    "kube-proxy",
    "coredns",
    "pause",
)


def versions_key() -> str:
    """Folder name under ~/.cache/whisperop/testenv/ for this set of pins."""
    minio_date = MINIO_VERSION.split("-")[1][:8]
    return (
        f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"
        f"_minio-{minio_date}_helm-{HELM_VERSION}_coredns-{COREDNS_VERSION}_r{BUILD_REV}"
    )


def _shell() -> str:
    names = ("K8S_VERSION", "ETCD_VERSION", "KWOK_VERSION", "MINIO_VERSION", "HELM_VERSION", "COREDNS_VERSION", "BUILD_REV")
    lines = [f"{n}={globals()[n]}" for n in names]
    lines.append(f"VERSIONS_KEY={versions_key()}")
    lines.append(f"BINARIES='{' '.join(BINARIES)}'")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--shell"]:
        print(_shell())
    else:
        print(versions_key())
