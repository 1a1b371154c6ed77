#!/usr/bin/env bash
# Build pywhispercpp (the whisper.cpp bindings the engine uses) from its source
# distribution with whisper.cpp's CUDA backend, into a wheel. This is the one
# script Dockerfile.inference runs; it also runs by hand on a GPU build host.
#
#   scripts/build-pywhispercpp-cuda.sh [OUT_DIR]        (default OUT_DIR: ./dist)
#
# Environment (all optional):
#   PYWHISPERCPP_VERSION     sdist version to build                 (1.5.1)
#   CUDA_ARCHITECTURES       CMAKE_CUDA_ARCHITECTURES for nvcc       ("80;86;89;90": A100, A10/A40/3090, L4/L40, H100/H200)
#   GGML_CUDA                1 = CUDA backend; 0 = CPU-only build (only to check this script on a machine without nvcc)
#   PYWHISPERCPP_SDIST       path to the sdist (else pip downloads it, or finds it in PIP_FIND_LINKS)
#   PIP_FIND_LINKS           folder of sdists/wheels (pip reads it itself); with OFFLINE=1 pip uses nothing else
#   OFFLINE                  1 = pip --no-index (the build host has no network)
#   NO_BUILD_ISOLATION       1 = build with the setuptools/wheel/setuptools-scm/cmake/ninja already installed
#                            (default when OFFLINE=1: pywhispercpp's isolated build would also want `repairwheel`)
#   CMAKE_BUILD_PARALLEL_LEVEL   compile jobs                        (nproc)
#   PYTHON                   interpreter the wheel is built for      (python3)
#   GGML_NATIVE              ON = -march=native (this CPU only: AVX-512/VNNI where present); default OFF (x86-64-v3)
#   EXTRA_CMAKE_ARGS         more -D options for whisper.cpp/ggml, space separated
#
# What the wheel holds: one self-contained extension module, _pywhispercpp,
# with whisper.cpp and ggml (CPU + CUDA backends) linked in statically
# (BUILD_SHARED_LIBS=OFF): no libwhisper/libggml files dropped into
# site-packages and no RPATH into the build tree. The CUDA runtime is linked
# statically (ggml's default); cuBLAS is loaded from the system at run time
# (libcublas.so of the CUDA major version the wheel was built with: the CUDA
# runtime image's, or the nvidia-cublas wheel's).
#
# CPU code is built for x86-64-v3 (AVX2/FMA/F16C), not -march=native, so an
# image built on one host runs on another; GGML_NATIVE=ON for a local build.
#
# Check after install (exits non-zero when CUDA is missing):
#   python -c "import _pywhispercpp as p; s=p.whisper_print_system_info(); print(s); assert 'CUDA' in s"
set -euo pipefail

out_dir="${1:-dist}"
version="${PYWHISPERCPP_VERSION:-1.5.1}"
archs="${CUDA_ARCHITECTURES:-80;86;89;90}"
cuda="${GGML_CUDA:-1}"
py="${PYTHON:-python3}"
jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
offline="${OFFLINE:-0}"
no_iso="${NO_BUILD_ISOLATION:-$offline}"

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

pip_net=()
[ "$offline" = "1" ] && pip_net+=(--no-index)

# Debian/Ubuntu's python3 comes without pip (python3-pip is a separate package,
# and PEP 668 forbids installing into it): build from a throwaway venv of the
# same interpreter, which has pip through ensurepip. The wheel is the same.
if ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "==> $py has no pip: building from a venv of it"
  "$py" -m venv "$work/venv"
  py="$work/venv/bin/python"
fi

# ── the source distribution ──────────────────────────────────────────────
sdist="${PYWHISPERCPP_SDIST:-}"
if [ -z "$sdist" ] && [ -n "${PIP_FIND_LINKS:-}" ]; then
  for dir in $PIP_FIND_LINKS; do
    [ -f "$dir/pywhispercpp-$version.tar.gz" ] && sdist="$dir/pywhispercpp-$version.tar.gz" && break
  done
fi
if [ -z "$sdist" ]; then
  echo "==> downloading the pywhispercpp $version sdist"
  # --no-binary for this package only: ':all:' would also build cmake & co. from source
  "$py" -m pip download -q --disable-pip-version-check "${pip_net[@]}" --no-deps --no-binary pywhispercpp \
    -d "$work/sdist" "pywhispercpp==$version"
  sdist="$(ls "$work"/sdist/pywhispercpp-"$version".tar.gz)"
fi
echo "==> sdist: $sdist"

# ── build tools ──────────────────────────────────────────────────────────
if [ "$cuda" = "1" ]; then
  command -v nvcc >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"; }
  command -v nvcc >/dev/null || { echo "nvcc not found (GGML_CUDA=1 needs the CUDA toolkit; set PATH or CUDACXX)" >&2; exit 1; }
  export CUDACXX="${CUDACXX:-$(command -v nvcc)}"
  echo "==> nvcc: $("$CUDACXX" --version | tail -n 2 | head -n 1)"
fi
if [ "$no_iso" = "1" ]; then
  # pywhispercpp's setup.py imports ninja (for the generator) and takes its
  # version from setuptools-scm; install what is missing from the offline folder.
  missing=()
  "$py" -c 'import setuptools.command.bdist_wheel' 2>/dev/null || missing+=("setuptools>=70.1")
  "$py" -c 'import setuptools_scm' 2>/dev/null || missing+=(setuptools-scm)
  "$py" -c 'import wheel' 2>/dev/null || missing+=(wheel)
  command -v cmake >/dev/null || "$py" -c 'import cmake' 2>/dev/null || missing+=(cmake)
  command -v ninja >/dev/null || "$py" -c 'import ninja' 2>/dev/null || missing+=(ninja)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing build tools: ${missing[*]}"
    "$py" -m pip install -q --disable-pip-version-check "${pip_net[@]}" "${missing[@]}"
  fi
fi

# ── build ───────────────────────────────────────────────────────────────
# pywhispercpp's setup.py hands *every* environment variable to CMake as
# -DNAME=VALUE; that is how these options reach whisper.cpp/ggml. CMAKE_ARGS
# is split on spaces and passed too.
export GGML_CUDA="$cuda"
export BUILD_SHARED_LIBS=OFF
export CMAKE_POSITION_INDEPENDENT_CODE=ON
if [ "${GGML_NATIVE:-OFF}" = "ON" ]; then
  # -march=native: every instruction set of *this* CPU (AVX-512, VNNI, BF16 where present).
  # The wheel then runs only on CPUs with the same features: for a local install, never an image.
  export GGML_NATIVE=ON
else
  export GGML_NATIVE=OFF GGML_AVX=ON GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_BMI2=ON
fi
export WHISPER_BUILD_TESTS=OFF WHISPER_BUILD_EXAMPLES=OFF WHISPER_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL="$jobs"
if [ "$cuda" = "1" ]; then
  export CMAKE_CUDA_ARCHITECTURES="$archs"
  echo "==> building with CUDA for architectures $archs ($jobs jobs)"
else
  unset CMAKE_CUDA_ARCHITECTURES || true
  echo "==> building CPU-only ($jobs jobs)"
fi
export CMAKE_ARGS="${CMAKE_ARGS:-} ${EXTRA_CMAKE_ARGS:-}"

pip_build=(-m pip wheel -v --disable-pip-version-check --no-deps "${pip_net[@]}" -w "$work/wheel")
[ "$no_iso" = "1" ] && pip_build+=(--no-build-isolation)
start=$SECONDS
# On failure, CMake's own errors first: they sit above pip's traceback and
# setup.py's output, often more than a screen from the end of the log.
show_failure() {
  echo "==> pywhispercpp build failed; CMake and compiler errors:" >&2
  grep -n -A 15 -E "CMake Error|: error:|fatal error:|make.*Error [0-9]+|ninja: build stopped" "$1" | head -n 200 >&2 || echo "    (none found)" >&2
  echo "==> last 40 lines of the build log:" >&2
  tail -n 40 "$1" >&2
  echo "build failed" >&2
}
"$py" "${pip_build[@]}" "$sdist" > "$work/build.log" 2>&1 || { show_failure "$work/build.log"; exit 1; }
grep -E "CUDA Toolkit found|Using CUDA architectures|Using CMAKE_CUDA_ARCHITECTURES|Including CUDA backend|Including CPU backend" "$work/build.log" | sed 's/^/    /' || true
wheel="$(ls "$work"/wheel/pywhispercpp-*.whl)"

# The wheel must hold the extension and no stray shared libraries.
"$py" - "$wheel" "$cuda" <<'EOF'
import sys, zipfile
wheel, cuda = sys.argv[1], sys.argv[2] == "1"
names = zipfile.ZipFile(wheel).namelist()
ext = [n for n in names if n.startswith("_pywhispercpp") and n.endswith(".so")]
stray = [n for n in names if "/" not in n and n.startswith("lib") and ".so" in n]
assert ext, f"no _pywhispercpp extension in {wheel}"
assert not stray, f"unexpected shared libraries at the wheel's top level: {stray}"
blob = zipfile.ZipFile(wheel).read(ext[0])
if cuda:
    assert b"ggml_cuda_init" in blob or b"CUDA0" in blob, "the extension has no CUDA backend compiled in"
print(f"    {ext[0]}: {len(blob) / 2**20:.1f} MiB")
EOF
cp "$wheel" "$out_dir/"
echo "==> $(basename "$wheel") -> $out_dir ($((SECONDS - start)) s)"
