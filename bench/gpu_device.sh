#!/usr/bin/env bash
# How bench/gpu.py runs on a lent GPU machine that has no network (issue 18's
# table: docs/benchmarks-gpu.md). The inputs travel in pieces, one git-ignored
# folder .carry/sN per call (≤ 58 MiB each: a call carries 64 MiB at most);
# the pywhispercpp CUDA wheel is built there by scripts/build-pywhispercpp-cuda.sh
# (the Dockerfile's script) while the other pieces arrive.
#
#   bench/gpu_device.sh pack [DIR]    HERE (not on the GPU machine): make the pieces DIR/s1..sK (default .carry-ready)
#                                     from DIR/src/{build,rt,ct2,audio} (see "pack" below for what each holds)
#   bench/gpu_device.sh stage N       .carry/sN → $STAGE; N=1 also starts the CUDA build (s1 holds the sdist and build tools)
#   bench/gpu_device.sh setup         wait for the build, join the pieces, install the wheels, make CUDA 13's cuBLAS
#                                     visible under CUDA 12's names (CTranslate2's wheels dlopen libcublas.so.12),
#                                     check whisper.cpp's CUDA backend and a CTranslate2 float16 encode on the GPU
#   bench/gpu_device.sh bench ARGS    bench/gpu.py on the staged CT2 export and speech, reports to $OUT
#                                     (ARGS e.g. --configs issue18 --long-only --tag issue18)
#
# The machine goes back 30 s after a call ends, and what was staged with it:
# the calls must follow one another without a pause (docs/benchmarks-gpu.md,
# "How to reproduce", gives the run order and the device time it took).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${STAGE:-/root/wstage}"
SITE="$STAGE/site"
OUT="${OUT:-/tmp/out}"
PIECE_BYTES=${PIECE_BYTES:-$((56 * 1024 * 1024))}  # + the tracked tree (~6 MB) stays under the 64 MiB a call carries
cmd="${1:?pack|stage|setup|bench}"
shift || true

cu12_env() {
  # CTranslate2 4.x wheels are built for CUDA 12 and dlopen libcublas.so.12
  # (which needs libcublasLt.so.12); the machine has CUDA 13 only. The .so.13
  # files answer under the old names (issue 18: CTranslate2 4.7.1 ran so).
  local lib
  # shellcheck disable=SC2046  # the site-packages folders, one word each
  lib="$( { find /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             $(python3 -c 'import site; print(" ".join(site.getsitepackages()))') \
             -name 'libcublas.so.13*' 2>/dev/null || true; } | head -n 1)"
  [ -n "$lib" ] || { echo "no libcublas.so.13 found" >&2; return 1; }
  local dir
  dir="$(dirname "$lib")"
  mkdir -p "$STAGE/cu12"
  ln -sf "$dir/libcublas.so.13" "$STAGE/cu12/libcublas.so.12"
  ln -sf "$dir/libcublasLt.so.13" "$STAGE/cu12/libcublasLt.so.12"
  echo "export LD_LIBRARY_PATH=\"$STAGE/cu12:$dir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\"" > "$STAGE/env.sh"
  ls -la "$STAGE/cu12"
}

case "$cmd" in
pack)
  # DIR/src/build: pywhispercpp-1.5.1.tar.gz + its offline build tools (setuptools, wheel,
  #                setuptools-scm, vcs-versioning, packaging) — unsplit in s1, the build starts on it
  # DIR/src/rt:    cp312 manylinux wheels the machine lacks: ctranslate2, faster-whisper, av,
  #                jiwer, rapidfuzz, pydantic(+core), pydantic-settings, python-dotenv, annotated-types,
  #                typing-inspection (torch, transformers, tokenizers, numpy, onnxruntime are there)
  # DIR/src/ct2:   the CTranslate2 whisper base export (model.bin, config.json, tokenizer.json, vocabulary.json)
  # DIR/src/audio: bench/speech.py's speech-30min.{flac,txt,json,spans.json}
  dest="${1:-.carry-ready}"
  for d in build rt ct2 audio; do [ -d "$dest/src/$d" ] || { echo "missing $dest/src/$d" >&2; exit 1; }; done
  rm -rf "$dest"/s[0-9]* "$dest/payload.tar"
  mkdir -p "$dest/s1"
  cp -r "$dest/src/build" "$dest/s1/build"
  tar cf "$dest/payload.tar" -C "$dest/src" rt ct2 audio
  first=$((PIECE_BYTES - $(du -sb "$dest/s1" | cut -f1)))
  head -c "$first" "$dest/payload.tar" > "$dest/s1/piece.00"
  tail -c +"$((first + 1))" "$dest/payload.tar" | split -b "$PIECE_BYTES" -d -a 2 --numeric-suffixes=1 - "$dest/piece."
  for p in "$dest"/piece.*; do
    n=$((10#${p##*.} + 1))
    mkdir -p "$dest/s$n"
    mv "$p" "$dest/s$n/"
  done
  (cd "$dest" && sha256sum payload.tar > payload.sha256 && cp payload.sha256 s1/)
  rm "$dest/payload.tar"
  du -sh "$dest"/s[0-9]*
  ;;
stage)
  n="$1"
  mkdir -p "$STAGE" "$OUT"
  cp -r .carry/s"$n"/. "$STAGE/"
  if [ "$n" = 1 ]; then
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
  mkdir -p "$OUT"
  if [ ! -d "$STAGE/stage" ]; then
    mkdir -p "$STAGE/stage"
    (cd "$STAGE" && cat piece.* > payload.tar && sha256sum -c payload.sha256)
    tar xf "$STAGE/payload.tar" -C "$STAGE/stage"
    rm "$STAGE/payload.tar"
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$STAGE"/stage/rt/*.whl
  cu12_env || echo "no CUDA 13 cuBLAS found: the CTranslate2 rows will fail" >&2
  # shellcheck disable=SC1091
  [ -f "$STAGE/env.sh" ] && . "$STAGE/env.sh"
  PYTHONPATH="$SITE" python3 - "$STAGE/stage/ct2" <<'EOF' || echo "CTranslate2 CUDA check FAILED (the ct2/fw rows will fail; whisper.cpp rows still run)" >&2
import sys, time
import numpy as np
import ctranslate2
print("ctranslate2", ctranslate2.__version__, "CUDA devices", ctranslate2.get_cuda_device_count(),
      "compute types", sorted(ctranslate2.get_supported_compute_types("cuda")))
m = ctranslate2.models.Whisper(sys.argv[1], device="cuda", compute_type="float16")
t0 = time.perf_counter()
out = m.encode(ctranslate2.StorageView.from_array(np.zeros((2, 80, 3000), np.float32)))
print("CTranslate2 float16 encode on CUDA (cuBLAS):", out.shape, f"{time.perf_counter() - t0:.3f} s")
EOF
  for _ in $(seq 1 "${WAIT_SECS:-480}"); do [ -f "$STAGE/build.rc" ] && break; sleep 1; done
  tail -n 20 "$STAGE/build.log"
  [ "$(cat "$STAGE/build.rc" 2>/dev/null)" = 0 ] || { echo "build did not finish cleanly" >&2; exit 1; }
  cp "$STAGE"/wheel/pywhispercpp-*.whl "$OUT/" || true
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$STAGE"/wheel/pywhispercpp-*.whl
  PYTHONPATH="$SITE" python3 -c '
import _pywhispercpp as p
info = p.whisper_print_system_info()
print(info)
assert "CUDA" in info, "no CUDA backend in the built extension"
'
  ;;
bench)
  mkdir -p "$OUT"
  # shellcheck disable=SC1091
  [ -f "$STAGE/env.sh" ] && . "$STAGE/env.sh"
  PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 python3 bench/gpu.py --ct2 "$STAGE/stage/ct2" --speech "$STAGE/stage/audio/speech-30min.flac" \
    --work "$STAGE/work" --out "$OUT" "$@"
  ;;
*)
  echo "unknown command $cmd" >&2
  exit 2
  ;;
esac
