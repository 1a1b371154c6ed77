#!/usr/bin/env bash
# How bench/gpu.py runs on a lent GPU machine that has no network: the inputs
# travel in pieces (one git-ignored folder .carry/sN per call, ≤ 64 MiB), the
# CUDA wheel is built there by scripts/build-pywhispercpp-cuda.sh (the
# Dockerfile's script) while the other pieces arrive.
#
#   bench/gpu_device.sh stage N     piece N → $STAGE; piece 0 also brings the sdist and starts the build
#   bench/gpu_device.sh setup       wait for the build, join the pieces, install the wheels, check the GPU
#   bench/gpu_device.sh bench ARGS  bench/gpu.py on the staged model and speech, reports to $OUT
#
# The pieces are made here with:
#   tar cf - stage | (head -c 48MiB > .carry/s1/piece.0; split -b 58M ...)  (see docs/benchmarks-gpu.md)
# where stage/ holds rt/ (runtime wheels for the device's Python), ct2/ (the
# CTranslate2 whisper base export) and audio/ (bench/speech.py output).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${STAGE:-/root/wstage}"
SITE="$STAGE/site"
OUT="${OUT:-/tmp/out}"
mkdir -p "$STAGE" "$OUT"
cmd="${1:?stage|setup|bench}"
shift || true

case "$cmd" in
stage)
  n="$1"
  cp .carry/s$((n + 1))/piece.$n "$STAGE/"
  if [ "$n" = 0 ]; then
    mkdir -p "$STAGE/build"
    cp .carry/s1/*.whl .carry/s1/*.tar.gz "$STAGE/build/"
    cp scripts/build-pywhispercpp-cuda.sh "$STAGE/build.sh"   # the repo copy is replaced on every call
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nvcc --version | tail -n 2
    cmake --version | head -n 1
    python3 -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, torch.version.cuda, "transformers", transformers.__version__)'
    rm -f "$STAGE/build.rc"
    setsid nohup env OFFLINE=1 NO_BUILD_ISOLATION=1 PIP_FIND_LINKS="$STAGE/build" CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90}" \
      bash -c "bash '$STAGE/build.sh' '$STAGE/wheel' > '$STAGE/build.log' 2>&1; echo \$? > '$STAGE/build.rc'" \
      < /dev/null > /dev/null 2>&1 &
    sleep 2
  fi
  ls -la "$STAGE"
  tail -n 3 "$STAGE/build.log" 2>/dev/null || true
  ;;
setup)
  for _ in $(seq 1 "${WAIT_SECS:-480}"); do [ -f "$STAGE/build.rc" ] && break; sleep 1; done
  cat "$STAGE/build.log"
  [ "$(cat "$STAGE/build.rc" 2>/dev/null)" = 0 ] || { echo "build did not finish cleanly" >&2; exit 1; }
  cp "$STAGE"/wheel/pywhispercpp-*.whl "$OUT/" || true
  if [ ! -d "$STAGE/stage" ]; then
    cat "$STAGE"/piece.0 "$STAGE"/piece.1 "$STAGE"/piece.2 "$STAGE"/piece.3 "$STAGE"/piece.4 | tar xf - -C "$STAGE"
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STAGE"/stage/rt/*.whl "$STAGE"/wheel/pywhispercpp-*.whl
  PYTHONPATH="$SITE" python3 -c '
import _pywhispercpp as p
info = p.whisper_print_system_info()
print(info)
assert "CUDA" in info, "no CUDA backend in the built extension"
'
  ;;
bench)
  PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 python3 bench/gpu.py --ct2 "$STAGE/stage/ct2" --speech "$STAGE/stage/audio/speech-30min.flac" \
    --work "$STAGE/work" --out "$OUT" "$@"
  ;;
*)
  echo "unknown command $cmd" >&2
  exit 2
  ;;
esac
