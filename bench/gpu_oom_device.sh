#!/usr/bin/env bash
# How bench/gpu_oom.py ran on a lent H100 that has no network (docs/gpu-oom.md).
# Inputs travel in git-ignored folders .carry/s1..s3 (≤ 64 MiB a call); the CUDA
# wheel is built there by scripts/build-pywhispercpp-cuda.sh while the rest arrives.
#
#   bench/gpu_oom_device.sh stage N   .carry/sN → $STAGE; N=1 also starts the build (sdist + build tools in it)
#   bench/gpu_oom_device.sh setup     wait for the build, join the model, install the wheels, check CUDA
#   bench/gpu_oom_device.sh run ARGS  bench/gpu_oom.py on the staged model, report to $OUT
#                                     (run --skip load-,job: the measure step and the grow case only, ~2 min)
#
# Pieces made here: s1 = sdist + build tools (build/; setuptools-scm >= 10 also needs its vcs-versioning wheel) + small runtime wheels (rt/) + model.aa;
# s2 = model.ab; s3 = av and this project's wheel (rt/) + jfk.wav  (model: split -b 44M ggml-base-q8_0.bin model.)
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${STAGE:-/root/oomstage}"
SITE="$STAGE/site"
OUT="${OUT:-/tmp/out}"
mkdir -p "$STAGE" "$OUT"
cmd="${1:?stage|setup|run}"
shift || true
case "$cmd" in
stage)
  n="$1"
  cp -r .carry/s$n/. "$STAGE/"
  if [ "$n" = 1 ]; then
    cp scripts/build-pywhispercpp-cuda.sh "$STAGE/build.sh"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
    python3 -c 'import sys, torch, numpy; print(sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__)'
    rm -f "$STAGE/build.rc"
    setsid nohup env OFFLINE=1 NO_BUILD_ISOLATION=1 PIP_FIND_LINKS="$STAGE/build" CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90}" \
      bash -c "bash '$STAGE/build.sh' '$STAGE/wheel' > '$STAGE/build.log' 2>&1; echo \$? > '$STAGE/build.rc'" \
      < /dev/null > /dev/null 2>&1 &
    sleep 2
  fi
  ls -la "$STAGE"
  ;;
setup)
  for _ in $(seq 1 "${WAIT_SECS:-480}"); do [ -f "$STAGE/build.rc" ] && break; sleep 1; done
  tail -n 20 "$STAGE/build.log"
  [ "$(cat "$STAGE/build.rc" 2>/dev/null)" = 0 ] || { echo "build did not finish cleanly" >&2; exit 1; }
  [ -f "$STAGE/ggml-base-q8_0.bin" ] || cat "$STAGE"/model.* > "$STAGE/ggml-base-q8_0.bin"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STAGE"/rt/*.whl "$STAGE"/wheel/pywhispercpp-*.whl
  PYTHONPATH="$SITE" python3 -c 'import _pywhispercpp as p; i = p.whisper_print_system_info(); print(i); assert "CUDA" in i'
  ;;
run)
  PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 python3 bench/gpu_oom.py --model "$STAGE/ggml-base-q8_0.bin" --jfk "$STAGE/jfk.wav" \
    --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-oom.log"
  ;;
*)
  echo "unknown command $cmd" >&2
  exit 2
  ;;
esac
