#!/usr/bin/env bash
# Install everything and run the whole test suite: unit, real-model (slow) and
# real-cluster tests. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
if [ -x scripts/build-testenv.sh ]; then
  scripts/build-testenv.sh   # kube-apiserver, etcd, kwok, MinIO, helm: built once, cached
fi
.venv/bin/whisperop model fetch base        # the real weights the slow tests use
.venv/bin/whisperop model fetch base-q8_0
exec .venv/bin/python -m pytest "$@"
