#!/usr/bin/env bash
# Build the test-environment binaries from Go modules into a cache outside the repo.
#
# Why: there is no container runtime and no binary download here, so etcd, the
# Kubernetes control plane, kwok, MinIO, kubectl and helm are compiled from the
# Go module proxy. A cold build is long on 2 cores, so binaries are kept in
#   ${WHISPEROP_CACHE:-~/.cache/whisperop}/testenv/<versions-key>/bin
# and reused; the Go module and build caches live next to them so a rebuild
# after a version bump only compiles what changed.
#
# Usage: tests/cluster/build.sh [--force] [NAME ...]   (NAME from versions.py BINARIES)
# Env:   WHISPEROP_CACHE (cache root), WHISPEROP_BUILD_P (go build -p, default 2),
#        WHISPEROP_NICE (nice level, default 15)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# a failure here must stop the build (eval of a failed substitution would not)
pins=$(python3 "$repo/src/whisperop/testenv/versions.py" --shell)
eval "$pins"

force=0
only=()
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) only+=("$a") ;;
  esac
done
[[ ${#only[@]} -gt 0 ]] || read -r -a only <<<"$BINARIES"

cache_root=${WHISPEROP_CACHE:-$HOME/.cache/whisperop}
bin=$cache_root/testenv/$VERSIONS_KEY/bin
mkdir -p "$bin" "$cache_root/go/mod" "$cache_root/go/build"

GO=$(command -v go || echo /usr/local/go/bin/go)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
export GOMODCACHE=$cache_root/go/mod GOCACHE=$cache_root/go/build
P=${WHISPEROP_BUILD_P:-2}
NICE=${WHISPEROP_NICE:-15}

# The go.mod files are the real pins; refuse to build if they disagree with versions.py.
check_pin() {
  grep -qE "^(require )?[[:space:]]*$2 $3([[:space:]]|\$)" "$here/$1/go.mod" ||
    { echo "build.sh: $1/go.mod does not pin $2 $3 (versions.py)" >&2; exit 2; }
}
check_pin k8s   k8s.io/kubernetes "$K8S_VERSION"
check_pin etcd  go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin kwok  sigs.k8s.io/kwok "$KWOK_VERSION"
check_pin minio github.com/minio/minio "$MINIO_VERSION"
check_pin helm  helm.sh/helm/v3 "$HELM_VERSION"
check_pin coredns github.com/coredns/coredns "$COREDNS_VERSION"

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
build_date=$(now)

# ldflags per binary, so that `--version` and /version tell the truth.
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
kv=k8s.io/component-base/version
cv=k8s.io/client-go/pkg/version
k8s_ld="-s -w"
for pkg in $kv $cv; do
  k8s_ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ld+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done
minio_stamp=${MINIO_VERSION#v0.0.0-}      # 20260212201848-7aac2a2c5b7c
minio_ts=${minio_stamp%%-*}
minio_commit=${minio_stamp##*-}
minio_iso="${minio_ts:0:4}-${minio_ts:4:2}-${minio_ts:6:2}T${minio_ts:8:2}:${minio_ts:10:2}:${minio_ts:12:2}Z"
minio_ld="-s -w -X github.com/minio/minio/cmd.Version=$minio_iso"
minio_ld+=" -X github.com/minio/minio/cmd.ReleaseTag=DEVELOPMENT.${minio_iso//:/-}"
minio_ld+=" -X github.com/minio/minio/cmd.CommitID=$minio_commit -X github.com/minio/minio/cmd.ShortCommitID=$minio_commit"
minio_ld+=" -X github.com/minio/minio/cmd.CopyrightYear=${minio_ts:0:4}"

build_one() {  # name moddir package ldflags
  local name=$1 dir=$2 pkg=$3 ld=$4 t0 rc
  if [[ -x $bin/$name && $force == 0 ]]; then
    printf '%-24s cached   %s\n' "$name" "$bin/$name"
    return 0
  fi
  t0=$(date +%s)
  rc=0
  (cd "$here/$dir" && nice -n "$NICE" "$GO" build -p "$P" -ldflags "$ld" -o "$bin/.$name.tmp" "$pkg") || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [[ $rc != 0 ]]; then
    printf '%-24s FAILED   after %ss (exit %s)\n' "$name" "$dt" "$rc" | tee -a "$bin/../build-times.txt"
    return $rc
  fi
  mv -f "$bin/.$name.tmp" "$bin/$name"
  printf '%-24s built    %4ss  %s\n' "$name" "$dt" "$(now)" | tee -a "$bin/../build-times.txt"
}

helm_ld() {
  local cg major minor
  cg=$(cd "$here/helm" && "$GO" list -m -f '{{.Version}}' k8s.io/client-go)   # v0.X.Y
  major=1; minor=$(echo "$cg" | cut -d. -f2)
  echo "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=archive" \
       "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
       "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
}

# kwok has no built-in stages; take the upstream defaults (what kwokctl uses)
# from the same module version as the binary, so they always match.
kwok_stages() {
  local dst=$bin/../kwok-stages.yaml dir f
  [[ -s $dst && $force == 0 ]] && return 0
  dir=$(cd "$here/kwok" && "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  [[ -n $dir && -d $dir/kustomize/stage ]] || (cd "$here/kwok" && "$GO" mod download sigs.k8s.io/kwok)
  dir=$(cd "$here/kwok" && "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  {
    echo "# kwok $KWOK_VERSION default stages: node-initialize, node-heartbeat-with-lease, pod-ready/complete/delete"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
             pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      grep -v '^---$' "$dir/kustomize/stage/$f"
    done
  } >"$dst.tmp"
  mv -f "$dst.tmp" "$dst"
  echo "kwok-stages.yaml         written  $dst"
}

# The pod sandbox ("pause") of the real node: the release's own pause.c, built
# static so the image is one file on an empty filesystem (whisperop.testenv.images).
build_pause() {
  local t0 dir cc
  if [[ -x $bin/pause && $force == 0 ]]; then
    printf '%-24s cached   %s\n' pause "$bin/pause"; return 0
  fi
  t0=$(date +%s)
  dir=$(cd "$here/k8s" && "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes)
  [[ -n $dir && -f $dir/build/pause/linux/pause.c ]] || { (cd "$here/k8s" && "$GO" mod download k8s.io/kubernetes); dir=$(cd "$here/k8s" && "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes); }
  cc=$(command -v gcc || command -v cc) || { echo "build.sh: no C compiler for pause" >&2; return 1; }
  "$cc" -Os -Wall -Werror -static -DVERSION="\"$K8S_VERSION-whisperop\"" -o "$bin/.pause.tmp" "$dir/build/pause/linux/pause.c" &&
    strip "$bin/.pause.tmp" && mv -f "$bin/.pause.tmp" "$bin/pause" || return 1
  printf '%-24s built    %4ss  %s\n' pause "$(( $(date +%s) - t0 ))" "$(now)" | tee -a "$bin/../build-times.txt"
}

exec 9>"$cache_root/testenv/.build.lock"
flock 9   # two builds of the same cache at once would only fight over 2 cores

echo "whisperop testenv build: $VERSIONS_KEY ($("$GO" version | cut -d' ' -f3), -p $P, nice $NICE)"
echo "bin: $bin"
total0=$(date +%s)
failed=()
for name in "${only[@]}"; do
  case "$name" in
    etcd) build_one etcd etcd . "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy)
      build_one "$name" k8s "k8s.io/kubernetes/cmd/$name" "$k8s_ld" ;;
    kwok) build_one kwok kwok sigs.k8s.io/kwok/cmd/kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" && kwok_stages ;;
    minio) build_one minio minio github.com/minio/minio "$minio_ld" ;;
    helm) build_one helm helm helm.sh/helm/v3/cmd/helm "$(helm_ld)" ;;
    coredns) build_one coredns coredns . "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" ;;
    pause) build_pause ;;
    *) echo "build.sh: unknown binary $name" >&2; exit 2 ;;
  esac || failed+=("$name")
done
echo "total: $(( $(date +%s) - total0 ))s"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "build.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
