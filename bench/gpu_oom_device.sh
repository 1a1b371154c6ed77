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
#
# ENGINE=ctranslate2 (bench/gpu_oom.py --engine ctranslate2): no CUDA build; the pieces are .carry/c1..cN
#   bench/gpu_oom_device.sh pack-ct2 [DIR]  HERE: DIR/src-ct2/{rt,ct2,audio} → DIR/c1..cN (≤ 56 MiB each, default .carry-ready)
#                                           rt: cp312 manylinux wheels of ctranslate2 4.7.1, av 16.1.0, pywhispercpp 1.5.1
#                                           (CPU: engine.py imports whisper.cpp's module, CT2 never calls it), pydantic(+core),
#                                           pydantic-settings, typing-extensions, typing-inspection, annotated-types,
#                                           python-dotenv, tqdm, nvidia-ml-py, this project's wheel; ct2: whisper base's
#                                           CTranslate2 export (base-ct2, float16 weights); audio: jfk.wav
#   bench/gpu_oom_device.sh stage-ct2 N     .carry/cN → $STAGE (one call per piece, one after the other)
#   bench/gpu_oom_device.sh setup-ct2       join + check the pieces, install the wheels into $SITE, CUDA 13's cuBLAS
#                                           under CUDA 12's names (CTranslate2's wheel dlopens libcublas.so.12),
#                                           a float16 encode on the GPU
#   bench/gpu_oom_device.sh run-ct2 ARGS    bench/gpu_oom.py --engine ctranslate2 on the staged export, report to $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${STAGE:-/root/oomstage}"
# shellcheck source=bench/device_common.sh
. bench/device_common.sh
mkdir -p "$STAGE" "$OUT"
cmd="${1:?stage|setup|run|pack-ct2|stage-ct2|setup-ct2|run-ct2}"
shift || true

case "$cmd" in
pack-ct2)
  dest="${1:-.carry-ready}"
  for d in rt ct2 audio; do [ -d "$dest/src-ct2/$d" ] || { echo "missing $dest/src-ct2/$d" >&2; exit 1; }; done
  rm -rf "$dest"/c[0-9]* "$dest/ct2-payload.tar.gz"
  # gzip -1: the float16 weights shrink 7 %, enough for 4 pieces instead of 5 (one call less)
  tar cf - -C "$dest/src-ct2" rt ct2 audio | gzip -1 > "$dest/ct2-payload.tar.gz"
  (cd "$dest" && split -b "$PIECE_BYTES" -d -a 2 ct2-payload.tar.gz ct2piece. && sha256sum ct2-payload.tar.gz > ct2-payload.sha256)
  pieces_to_folders "$dest" ct2piece c
  cp "$dest/ct2-payload.sha256" "$dest/c1/"
  rm "$dest/ct2-payload.tar.gz"
  du -sh "$dest"/c[0-9]*
  ;;
stage-ct2)
  cp -r ".carry/c$1/." "$STAGE/"
  if [ "$1" = 1 ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
    python3 -c 'import sys, torch, numpy; print(sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__)'
    python3 -c 'import tokenizers; print("tokenizers", tokenizers.__version__)' || echo "no tokenizers here: ct2engine needs it" >&2
  fi
  ls -la "$STAGE"
  ;;
setup-ct2)
  if [ ! -d "$STAGE/ct2stage" ]; then
    (cd "$STAGE" && cat ct2piece.* > ct2-payload.tar.gz && sha256sum -c ct2-payload.sha256)
    mkdir -p "$STAGE/ct2stage"
    tar xzf "$STAGE/ct2-payload.tar.gz" -C "$STAGE/ct2stage"
    rm "$STAGE/ct2-payload.tar.gz" "$STAGE"/ct2piece.*
  fi
  install_wheels "$STAGE"/ct2stage/rt/*.whl
  cu12_env
  # cuDNN, if CTranslate2's convolutions look for it: the one PyTorch brings, last on the path (a fallback only)
  cudnn="$(python3 -c 'import os, nvidia.cudnn as c; print(os.path.join(list(c.__path__)[0], "lib"))' 2>/dev/null || true)"
  [ -n "$cudnn" ] && echo "export LD_LIBRARY_PATH=\"\$LD_LIBRARY_PATH:$cudnn\"" >> "$STAGE/env.sh"
  cat "$STAGE/env.sh"
  # shellcheck disable=SC1091
  . "$STAGE/env.sh"
  ct2_cuda_check "$STAGE/ct2stage/ct2"
  PYTHONPATH="$SITE" python3 -c 'import whisperop.inference.ct2engine, whisperop.inference.runtime' # the bench's imports resolve
  echo "whisperop imports OK"
  ;;
run-ct2)
  # shellcheck disable=SC1091
  . "$STAGE/env.sh"
  PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 python3 bench/gpu_oom.py --engine ctranslate2 --ct2 "$STAGE/ct2stage/ct2" \
    --jfk "$STAGE/ct2stage/audio/jfk.wav" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-oom-ct2.log"
  ;;

stage)
  n="$1"
  cp -r .carry/s"$n"/. "$STAGE/"
  if [ "$n" = 1 ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
    python3 -c 'import sys, torch, numpy; print(sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__)'
    start_cuda_build
  fi
  ls -la "$STAGE"
  ;;
setup)
  wait_cuda_build
  [ -f "$STAGE/ggml-base-q8_0.bin" ] || cat "$STAGE"/model.* > "$STAGE/ggml-base-q8_0.bin"
  install_wheels "$STAGE"/rt/*.whl "$STAGE"/wheel/pywhispercpp-*.whl
  whispercpp_cuda_check
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
