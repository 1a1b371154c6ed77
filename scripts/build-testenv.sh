#!/usr/bin/env bash
# Build (or reuse) the binaries of the test environment: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok, MinIO and helm.
#
# Why a script: CI and every developer machine must get the same real
# components without a container runtime or binary downloads; they are
# compiled from the Go module proxy into ~/.cache/whisperop/testenv/<versions>/bin
# and reused when present, so only the first run on a machine is slow.
# Idempotent: safe to run before every test run.
#
# Usage: scripts/build-testenv.sh [--force] [NAME ...]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
t0=$(date +%s)

# System tools the launcher and build need (Debian package names).
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v flock >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
command -v git >/dev/null || need+=(git)          # some Go modules resolve through VCS metadata
if [[ ${#need[@]} -gt 0 ]]; then
  echo "build-testenv: installing ${need[*]}"
  SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! command -v go >/dev/null; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH=/usr/local/go/bin:$PATH
  else
    echo "build-testenv: Go toolchain not found (expected /usr/local/go/bin/go)" >&2
    exit 1
  fi
fi

bash "$repo/tests/cluster/build.sh" "$@"
echo "build-testenv: done in $(( $(date +%s) - t0 ))s"
