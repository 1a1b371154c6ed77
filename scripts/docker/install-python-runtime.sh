#!/usr/bin/env bash
# What the images need from the distribution, installed only where missing, so
# the same script serves every base: Debian's own python3 (the mmdebstrap
# bases of CI, which already hold everything: no apt run, no network), the
# official python:3.12-slim images (Python in /usr/local: apt must not add
# Debian's python3 beside it) and the Ubuntu CUDA images (apt installs all).
#   usage: install-python-runtime.sh [dev]
#     (none)  python3 with venv, CA certificates, libgomp1 (whisper.cpp's OpenMP threads)
#     dev     also a C/C++ compiler, make, CMake and the Python headers (building pywhispercpp)
# PyAV wheels bundle ffmpeg's libraries, so no ffmpeg packages are needed.
set -euo pipefail
pkgs=()
if ! command -v python3 >/dev/null; then
  pkgs+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  pkgs+=(python3-venv)
fi
[ -e /etc/ssl/certs/ca-certificates.crt ] || pkgs+=(ca-certificates)
ldconfig -p 2>/dev/null | grep -q 'libgomp\.so\.1 ' || pkgs+=(libgomp1)
if [ "${1:-}" = "dev" ]; then
  { command -v g++ >/dev/null && command -v make >/dev/null; } || pkgs+=(g++ make)
  command -v cmake >/dev/null || pkgs+=(cmake)
  if ! command -v python3 >/dev/null || ! python3 -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
    pkgs+=(python3-dev)
  fi
fi
if [ ${#pkgs[@]} -eq 0 ]; then
  echo "runtime packages: all present"
  exit 0
fi
echo "runtime packages: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
rm -rf /var/lib/apt/lists/*
