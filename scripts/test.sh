#!/usr/bin/env bash
# Install everything and run the whole test suite: unit, real-model (slow),
# real-cluster (kwok) and real-node end-to-end tests. Extra arguments go to
# pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
scripts/install-node-packages.sh   # containerd, runc, CNI plugins, docker.io, mmdebstrap (Debian)
if [ -x scripts/build-testenv.sh ]; then
  scripts/build-testenv.sh   # kube-apiserver, etcd, kwok, MinIO, helm, kubelet, kube-proxy, CoreDNS: built once, cached
fi
# the container engine for tests/docker/test_images.py (and the real node): one
# containerd + dockerd, started by hand where there is no systemd (docs/images.md)
if [ -x scripts/container-engine.sh ] && [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null; then
  scripts/container-engine.sh start
fi
.venv/bin/whisperop model fetch base        # the real weights the slow tests use
.venv/bin/whisperop model fetch base-q8_0
# both images from the Dockerfiles, built up front so their (cached) build shows in the log;
# tests/e2e imports them into its node. WHISPEROP_BUILD_IMAGES=0 skips this (fast tests only).
if [ "${WHISPEROP_BUILD_IMAGES:-1}" = 1 ] && [ -S /var/run/docker.sock ]; then
  IMPORT_CONTAINERD=0 scripts/build-images.sh
fi
exec .venv/bin/python -m pytest "$@"
