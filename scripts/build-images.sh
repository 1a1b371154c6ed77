#!/usr/bin/env bash
# Build the operator image and the CPU inference image from the committed
# Dockerfiles on a machine with no registry but Debian's and PyPI, and import
# them into containerd's k8s.io namespace for the real test node's kubelet.
#
#   scripts/build-images.sh            (needs a running engine: scripts/container-engine.sh start)
#
# Steps, each skipped when its inputs did not change:
#   1. base images: Debian bookworm root filesystems made with mmdebstrap
#      (tarballs cached in ~/.cache/whisperop/images/base-<key>/, key = hash of
#      the package list and mirror) and `docker import`ed as
#      whisperop-base:<role>-<key>. "runtime" = python3 + venv + CA certificates
#      + libgomp1; "build" adds the compiler, CMake and the Python headers, so
#      the Dockerfiles' install-python-runtime.sh finds everything and runs no apt;
#   2. `docker build` (legacy builder: no frontend or base image pulled) of
#      Dockerfile.operator and Dockerfile.inference (GGML_CUDA=0) from a staged
#      build context; the image carries the label io.whisperop.inputs = hash of
#      that context, the Dockerfile and the build args, and a build is skipped
#      when the tagged image already has it;
#   3. `docker save | ctr -n k8s.io images import -` (skipped when containerd
#      already holds the tag at the same image id).
#
# Images (tags the chart's defaults name, so values need no image override but
# the CPU inference tag):
#   ghcr.io/whisper-operator/whisperop-operator:<appVersion>
#   ghcr.io/whisper-operator/whisperop-inference:<appVersion>-cpu
#
# Environment (all optional):
#   WHISPEROP_EXTRA_CA     PEM file of extra CAs the build containers must trust (a
#                          TLS-intercepting proxy). Default: the host's own bundle
#                          /etc/ssl/certs/ca-certificates.crt when it exists (containers
#                          then trust what the host trusts); "none" = no extra CA.
#   WHISPEROP_IMAGE_CACHE  cache folder                          (~/.cache/whisperop/images)
#   DEBIAN_MIRROR          mirror for mmdebstrap                 (http://deb.debian.org/debian)
#   OPERATOR_IMAGE, INFERENCE_IMAGE   full image names (defaults above)
#   IMPORT_CONTAINERD      0 = do not import into containerd     (1)
#   CONTAINERD_SOCK        containerd's socket                   (/run/containerd/containerd.sock)
#   ONLY                   operator | inference: build just one image
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${WHISPEROP_IMAGE_CACHE:-$HOME/.cache/whisperop/images}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
suite=bookworm
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$repo/charts/whisper-operator/Chart.yaml")"
operator_image="${OPERATOR_IMAGE:-ghcr.io/whisper-operator/whisperop-operator:$app_version}"
inference_image="${INFERENCE_IMAGE:-ghcr.io/whisper-operator/whisperop-inference:$app_version-cpu}"
ctr_sock="${CONTAINERD_SOCK:-/run/containerd/containerd.sock}"
import="${IMPORT_CONTAINERD:-1}"
only="${ONLY:-}"
extra_ca="${WHISPEROP_EXTRA_CA:-}"
if [ -z "$extra_ca" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  extra_ca=/etc/ssl/certs/ca-certificates.crt
fi
[ "$extra_ca" = "none" ] && extra_ca=""
# The legacy builder: works offline and with Debian's docker.io (no buildx plugin).
export DOCKER_BUILDKIT=0

RUNTIME_PKGS=(python3 python3-venv ca-certificates libgomp1)
BUILD_PKGS=("${RUNTIME_PKGS[@]}" python3-dev g++ make cmake)
RECIPE=1  # bump when the way the bases are made changes

log() { echo "==> $*" >&2; }
die() { echo "build-images: $*" >&2; exit 1; }
now() { date +%s; }

command -v docker >/dev/null || die "docker not found (apt-get install docker.io; scripts/container-engine.sh start)"
docker version >/dev/null 2>&1 || die "docker daemon not reachable: scripts/container-engine.sh start"
[ -n "$app_version" ] || die "no appVersion in charts/whisper-operator/Chart.yaml"
[ -z "$extra_ca" ] || [ -f "$extra_ca" ] || die "WHISPEROP_EXTRA_CA=$extra_ca is not a file"

sha() { sha256sum | cut -c1-16; }

# ── 1. base images ───────────────────────────────────────────────────────
base_image() {  # role, packages... → prints the image tag
  local role="$1"; shift
  local key; key="$(printf '%s\n' "$RECIPE" "$suite" "$mirror" "$security_mirror" "$@" | sha)"
  local tag="whisperop-base:$role-$key"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    log "base $tag: present" ; echo "$tag"; return
  fi
  local dir="$cache/base-$key" tarball="$cache/base-$key/rootfs.tar"
  mkdir -p "$dir"
  if [ ! -s "$tarball" ]; then
    command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"
    local start; start=$(now)
    log "base $tag: mmdebstrap $suite with $*"
    local mode=unshare; [ "$(id -u)" -eq 0 ] && mode=root
    local IFS=,
    # shellcheck disable=SC2016  # "$1" in the hook is the rootfs, expanded by mmdebstrap's shell
    mmdebstrap --mode="$mode" --variant=minbase --include="$*" --quiet \
      --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/*' \
      "$suite" "$dir/rootfs.tmp.tar" \
      "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security_mirror $suite-security main" \
      || die "mmdebstrap failed for $role"
    unset IFS
    mv "$dir/rootfs.tmp.tar" "$tarball"
    log "base $tag: rootfs $(du -h "$tarball" | cut -f1) in $(( $(now) - start )) s"
  fi
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
  echo "$tag"
}

# ── 2. images ────────────────────────────────────────────────────────────
stage_context() {  # dir: only what the Dockerfiles COPY, plus the extra CA
  local ctx="$1"
  rm -rf "$ctx"; mkdir -p "$ctx"
  tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude='extra-ca/*.crt' \
    --exclude='extra-ca/*.pem' -cf - Dockerfile.operator Dockerfile.inference pyproject.toml README.md \
    src api operator inference scripts/docker scripts/build-pywhispercpp-cuda.sh | tar -C "$ctx" -xf -
  shopt -s nullglob
  local own=("$repo"/scripts/docker/extra-ca/*.crt "$repo"/scripts/docker/extra-ca/*.pem)
  shopt -u nullglob
  [ ${#own[@]} -eq 0 ] || cp "${own[@]}" "$ctx/scripts/docker/extra-ca/"
  [ -z "$extra_ca" ] || cp "$extra_ca" "$ctx/scripts/docker/extra-ca/build-extra-ca.crt"
}

context_hash() {  # ctx dockerfile build-args... (what the Dockerfile COPYs, the args, the bases' ids)
  local ctx="$1" dockerfile="$2"; shift 2
  local sources
  mapfile -t sources < <(awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) print $i }' "$ctx/$dockerfile")
  {
    (cd "$ctx" && find "$dockerfile" "${sources[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    local a
    for a in "$@"; do
      echo "$a"
      case "$a" in *_IMAGE=*) docker image inspect -f '{{.Id}}' "${a#*=}" ;; esac
    done
  } | sha
}

build_image() {  # tag dockerfile build-args...
  local tag="$1" dockerfile="$2"; shift 2
  local ctx="$cache/context"
  stage_context "$ctx"
  local inputs; inputs="$(context_hash "$ctx" "$dockerfile" "$@")"
  local have; have="$(docker image inspect -f '{{index .Config.Labels "io.whisperop.inputs"}}' "$tag" 2>/dev/null || true)"
  if [ "$have" = "$inputs" ]; then
    log "$tag: up to date (inputs $inputs)"
    return
  fi
  local args=() a start; start=$(now)
  for a in "$@"; do args+=(--build-arg "$a"); done
  log "$tag: docker build -f $dockerfile ${args[*]}"
  docker build -f "$ctx/$dockerfile" "${args[@]}" --label "io.whisperop.inputs=$inputs" -t "$tag" "$ctx" \
    || die "docker build of $tag failed (the step's output is above)"
  log "$tag: built in $(( $(now) - start )) s"
}

# ── 3. containerd ────────────────────────────────────────────────────────
import_image() {  # tag
  local tag="$1" id ref
  id="$(docker image inspect -f '{{.Id}}' "$tag")"
  # docker's short names are docker.io/library/…; ours are fully qualified already
  ref="$tag"
  if ctr --address "$ctr_sock" -n k8s.io images ls name=="$ref" 2>/dev/null | grep -q "$ref"; then
    local have
    have="$(ctr --address "$ctr_sock" -n k8s.io images ls name=="$ref" -q 2>/dev/null | head -n1)"
    if [ -n "$have" ] && [ -f "$cache/imported/${ref//[\/:]/_}" ] && [ "$(cat "$cache/imported/${ref//[\/:]/_}")" = "$id" ]; then
      log "$tag: already in containerd k8s.io"
      return
    fi
  fi
  local start; start=$(now)
  docker save "$tag" | ctr --address "$ctr_sock" -n k8s.io images import --no-unpack=false - >/dev/null \
    || die "ctr import of $tag failed"
  mkdir -p "$cache/imported"
  echo "$id" > "$cache/imported/${ref//[\/:]/_}"
  log "$tag: imported into containerd k8s.io in $(( $(now) - start )) s"
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 || die "another build-images.sh holds $cache/.lock"

runtime_base="$(base_image runtime "${RUNTIME_PKGS[@]}")"
built=()
if [ -z "$only" ] || [ "$only" = operator ]; then
  build_image "$operator_image" Dockerfile.operator "PYTHON_IMAGE=$runtime_base"
  built+=("$operator_image")
fi
if [ -z "$only" ] || [ "$only" = inference ]; then
  build_base="$(base_image build "${BUILD_PKGS[@]}")"
  build_image "$inference_image" Dockerfile.inference "GGML_CUDA=0" "BUILD_IMAGE=$build_base" "RUNTIME_IMAGE=$runtime_base"
  built+=("$inference_image")
fi
if [ "$import" = "1" ]; then
  command -v ctr >/dev/null || die "ctr not found (apt-get install containerd)"
  for t in "${built[@]}"; do import_image "$t"; done
fi
echo "images:"
for t in "${built[@]}"; do
  printf '  %s  %s MB\n' "$t" "$(( $(docker image inspect -f '{{.Size}}' "$t") / 1000000 ))"
done
