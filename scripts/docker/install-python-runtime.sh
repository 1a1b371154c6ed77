#!/usr/bin/env bash
# Python for the CUDA images (Ubuntu base): interpreter and venv support only.
# PyAV wheels bundle ffmpeg's libraries, so no ffmpeg packages are needed.
#   usage: install-python-runtime.sh [dev]     ("dev" adds headers for building wheels)
set -euo pipefail
pkgs=(python3 python3-venv ca-certificates)
[ "${1:-}" = "dev" ] && pkgs+=(python3-dev python3-pip git)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
rm -rf /var/lib/apt/lists/*
