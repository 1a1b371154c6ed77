#!/usr/bin/env bash
# Install everything and run the whole test suite: unit, real-model (slow) and
# real-cluster tests. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
if [ -x scripts/build-testenv.sh ]; then
  scripts/build-testenv.sh   # kube-apiserver, etcd, kwok, MinIO, helm: built once, cached
fi
# the container engine for tests/docker/test_images.py (and the real node): one
# containerd + dockerd, started by hand where there is no systemd (docs/images.md)
if [ -x scripts/container-engine.sh ] && [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null; then
  scripts/container-engine.sh start
fi
.venv/bin/whisperop model fetch base        # the real weights the slow tests use
.venv/bin/whisperop model fetch base-q8_0
exec .venv/bin/python -m pytest "$@"
