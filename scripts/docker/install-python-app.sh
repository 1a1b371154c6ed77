#!/usr/bin/env bash
# Install whisper-operator into a self-contained virtualenv (the image's /opt/whisperop).
# Every Dockerfile RUN step is a script like this one so it can be run and
# tested outside a container engine.
#   usage: install-python-app.sh PREFIX EXTRAS [WHEEL_DIR]
#     PREFIX     where the virtualenv goes (e.g. /opt/whisperop)
#     EXTRAS     comma-separated extras (e.g. "api,cluster")
#     WHEEL_DIR  optional folder of prebuilt wheels preferred over the index
#                (the CUDA build of pywhispercpp lands there)
set -euo pipefail
prefix="$1"; extras="$2"; wheels="${3:-}"
src="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-python3}"
"$py" -m venv "$prefix"
"$prefix/bin/python" -m pip install --no-cache-dir -q --disable-pip-version-check -U pip
find_links=()
if [ -n "$wheels" ] && [ -d "$wheels" ]; then
  find_links=(--find-links "$wheels")
  # the local wheel (e.g. pywhispercpp built with CUDA) must win over the index's CPU build
  shopt -s nullglob
  local_wheels=("$wheels"/*.whl)
  [ ${#local_wheels[@]} -gt 0 ] && "$prefix/bin/python" -m pip install --no-cache-dir -q --no-deps "${local_wheels[@]}"
fi
"$prefix/bin/python" -m pip install --no-cache-dir -q --disable-pip-version-check "${find_links[@]}" "${src}[${extras}]"
"$prefix/bin/whisperop" --help >/dev/null
echo "installed whisper-operator[${extras}] into $prefix"
