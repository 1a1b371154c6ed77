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
# shellcheck source=bench/device_common.sh
. bench/device_common.sh
cmd="${1:?pack|stage|setup|bench}"
shift || true

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
  pieces_to_folders "$dest" piece s
  (cd "$dest" && sha256sum payload.tar > payload.sha256 && cp payload.sha256 s1/)
  rm "$dest/payload.tar"
  du -sh "$dest"/s[0-9]*
  ;;
stage)
  n="$1"
  mkdir -p "$STAGE" "$OUT"
  cp -r .carry/s"$n"/. "$STAGE/"
  if [ "$n" = 1 ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nvcc --version | tail -n 2
    cmake --version | head -n 1
    python3 -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, torch.version.cuda, "transformers", transformers.__version__)'
    start_cuda_build
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
  install_wheels "$STAGE"/stage/rt/*.whl
  cu12_env || echo "no CUDA 13 cuBLAS found: the CTranslate2 rows will fail" >&2
  # shellcheck disable=SC1091
  [ -f "$STAGE/env.sh" ] && . "$STAGE/env.sh"
  ct2_cuda_check "$STAGE/stage/ct2" || echo "CTranslate2 CUDA check FAILED (the ct2/fw rows will fail; whisper.cpp rows still run)" >&2
  wait_cuda_build
  cp "$STAGE"/wheel/pywhispercpp-*.whl "$OUT/" || true
  install_wheels "$STAGE"/wheel/pywhispercpp-*.whl
  whispercpp_cuda_check
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
