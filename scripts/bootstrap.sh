#!/usr/bin/env bash
# Install what whisper-operator needs on a fresh Debian/Ubuntu machine:
# system packages (ffmpeg and espeak-ng/sox for test speech; with the test or
# dev extras also Debian's chromium, which the web page's tests drive through
# Playwright — Playwright's own browser download is never used) and a virtualenv
# in .venv with the project and the given extras. Idempotent and quick when
# everything is already there.
#   usage: scripts/bootstrap.sh [extras]      e.g. scripts/bootstrap.sh api,test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-api}"

need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
case ",$extras," in
  *,test,*|*,dev,*) [ -x /usr/bin/chromium ] || command -v chromium >/dev/null || need+=(chromium) ;;
esac
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "==> installing system packages: ${need[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

py="${PYTHON:-python3}"
"$py" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
echo "==> installing whisper-operator[$extras]"
# strict editable mode maps api/, operator/ and inference/ into the whisperop
# namespace without putting the repository root on sys.path
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" --config-settings editable_mode=strict
