# shellcheck shell=bash
# What bench/gpu_device.sh (bench/gpu.py, issue 18) and bench/gpu_oom_device.sh
# (bench/gpu_oom.py, issue 14) do alike on a lent GPU machine without network:
# sourced by both (from the repository root), so the CUDA build, the cuBLAS
# names and the wheel installs are written once. Sourcing only sets the
# variables below.
#
# The caller sets STAGE (where the pieces are staged and the build runs) first.

SITE="$STAGE/site"   # the --target folder the wheels go into
OUT="${OUT:-/tmp/out}"   # the device tool's $OUT: what the call brings back
PIECE_BYTES=${PIECE_BYTES:-$((56 * 1024 * 1024))}  # + the tracked tree (~6 MB) stays under the 64 MiB a call carries

# Move DEST/PREFIX.NN (split's numbered pieces, from 00) into DEST/FOLDER(NN+1)/:
# one folder a call, .carry/sN or .carry/cN on the machine.
pieces_to_folders() {
  local dest="$1" prefix="$2" folder="$3" p n
  for p in "$dest/$prefix".*; do
    n=$((10#${p##*.} + 1))
    mkdir -p "$dest/$folder$n"
    mv "$p" "$dest/$folder$n/"
  done
}

# Start scripts/build-pywhispercpp-cuda.sh (whisper.cpp's CUDA backend, ~270 s on an
# H100) in the background, offline, from the sdist and build tools staged in
# $STAGE/build; it outlives the call that started it and writes $STAGE/build.rc.
start_cuda_build() {
  cp scripts/build-pywhispercpp-cuda.sh "$STAGE/build.sh"   # the repo copy is replaced on every call
  rm -f "$STAGE/build.rc"
  setsid nohup env OFFLINE=1 NO_BUILD_ISOLATION=1 PIP_FIND_LINKS="$STAGE/build" CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90}" \
    bash -c "bash '$STAGE/build.sh' '$STAGE/wheel' > '$STAGE/build.log' 2>&1; echo \$? > '$STAGE/build.rc'" \
    < /dev/null > /dev/null 2>&1 &
  sleep 2
}

# Wait (WAIT_SECS, default 480) for start_cuda_build's wheel; fail unless it built.
wait_cuda_build() {
  for _ in $(seq 1 "${WAIT_SECS:-480}"); do [ -f "$STAGE/build.rc" ] && break; sleep 1; done
  tail -n 20 "$STAGE/build.log"
  [ "$(cat "$STAGE/build.rc" 2>/dev/null)" = 0 ] || { echo "build did not finish cleanly" >&2; exit 1; }
}

# Install the given wheels into $SITE with what the machine has (no index, no deps:
# the pieces carry every wheel the machine lacks).
install_wheels() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"
}

# Make CUDA 13's cuBLAS answer under CUDA 12's names and write $STAGE/env.sh
# (LD_LIBRARY_PATH) for the calls that follow.
cu12_env() {
  # CTranslate2 4.x wheels are built for CUDA 12 and dlopen libcublas.so.12
  # (which needs libcublasLt.so.12); the machine has CUDA 13 only. The .so.13
  # files answer under the old names (issue 18: CTranslate2 4.7.1 ran so).
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

# A float16 encode of the CTranslate2 export DIR on the GPU (cuBLAS through cu12_env's
# names; source $STAGE/env.sh first), with the wheels from $SITE.
ct2_cuda_check() {
  PYTHONPATH="$SITE" python3 - "$1" <<'EOF'
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
}

# whisper.cpp's CUDA backend in the installed (built) pywhispercpp.
whispercpp_cuda_check() {
  PYTHONPATH="$SITE" python3 -c '
import _pywhispercpp as p
info = p.whisper_print_system_info()
print(info)
assert "CUDA" in info, "no CUDA backend in the built extension"
'
}
