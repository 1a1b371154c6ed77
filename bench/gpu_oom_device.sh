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
SITE="$STAGE/site"
OUT="${OUT:-/tmp/out}"
mkdir -p "$STAGE" "$OUT"
PIECE_BYTES=${PIECE_BYTES:-$((56 * 1024 * 1024))}  # + the tracked tree (~6 MB) stays under the 64 MiB a call carries
cmd="${1:?stage|setup|run|pack-ct2|stage-ct2|setup-ct2|run-ct2}"
shift || true

cu12_env() {
  # CTranslate2 4.x wheels are built for CUDA 12 and dlopen libcublas.so.12 (which needs
  # libcublasLt.so.12); the machine has CUDA 13 only. The .so.13 files answer under the
  # old names (bench/gpu_device.sh, issue 18: CTranslate2 4.7.1 ran so).
  local lib dir
  # shellcheck disable=SC2046  # the site-packages folders, one word each
  lib="$( { find /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             $(python3 -c 'import site; print(" ".join(site.getsitepackages()))') \
             -name 'libcublas.so.13*' 2>/dev/null || true; } | head -n 1)"
  [ -n "$lib" ] || { echo "no libcublas.so.13 found" >&2; return 1; }
  dir="$(dirname "$lib")"
  mkdir -p "$STAGE/cu12"
  ln -sf "$dir/libcublas.so.13" "$STAGE/cu12/libcublas.so.12"
  ln -sf "$dir/libcublasLt.so.13" "$STAGE/cu12/libcublasLt.so.12"
  echo "export LD_LIBRARY_PATH=\"$STAGE/cu12:$dir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\"" > "$STAGE/env.sh"
  ls -la "$STAGE/cu12"
}

case "$cmd" in
pack-ct2)
  dest="${1:-.carry-ready}"
  for d in rt ct2 audio; do [ -d "$dest/src-ct2/$d" ] || { echo "missing $dest/src-ct2/$d" >&2; exit 1; }; done
  rm -rf "$dest"/c[0-9]* "$dest/ct2-payload.tar.gz"
  # gzip -1: the float16 weights shrink 7 %, enough for 4 pieces instead of 5 (one call less)
  tar cf - -C "$dest/src-ct2" rt ct2 audio | gzip -1 > "$dest/ct2-payload.tar.gz"
  (cd "$dest" && split -b "$PIECE_BYTES" -d -a 2 ct2-payload.tar.gz ct2piece. && sha256sum ct2-payload.tar.gz > ct2-payload.sha256)
  for p in "$dest"/ct2piece.*; do
    n=$((10#${p##*.} + 1))
    mkdir -p "$dest/c$n"
    mv "$p" "$dest/c$n/"
  done
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
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$STAGE"/ct2stage/rt/*.whl
  cu12_env
  # cuDNN, if CTranslate2's convolutions look for it: the one PyTorch brings, last on the path (a fallback only)
  cudnn="$(python3 -c 'import os, nvidia.cudnn as c; print(os.path.join(list(c.__path__)[0], "lib"))' 2>/dev/null || true)"
  [ -n "$cudnn" ] && echo "export LD_LIBRARY_PATH=\"\$LD_LIBRARY_PATH:$cudnn\"" >> "$STAGE/env.sh"
  cat "$STAGE/env.sh"
  # shellcheck disable=SC1091
  . "$STAGE/env.sh"
  PYTHONPATH="$SITE" python3 - "$STAGE/ct2stage/ct2" <<'EOF'
import sys, time
import numpy as np
import ctranslate2
print("ctranslate2", ctranslate2.__version__, "CUDA devices", ctranslate2.get_cuda_device_count())
m = ctranslate2.models.Whisper(sys.argv[1], device="cuda", compute_type="float16")
t0 = time.perf_counter()
out = m.encode(ctranslate2.StorageView.from_array(np.zeros((2, 80, 3000), np.float32)))
print("CTranslate2 float16 encode on CUDA (cuBLAS):", out.shape, f"{time.perf_counter() - t0:.3f} s")
import whisperop.inference.ct2engine, whisperop.inference.runtime  # the bench's imports resolve
print("whisperop imports OK")
EOF
  ;;
run-ct2)
  # shellcheck disable=SC1091
  . "$STAGE/env.sh"
  PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 python3 bench/gpu_oom.py --engine ctranslate2 --ct2 "$STAGE/ct2stage/ct2" \
    --jfk "$STAGE/ct2stage/audio/jfk.wav" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-oom-ct2.log"
  ;;

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
