#!/usr/bin/env bash
# Start, stop or check the container engine by hand on a machine without
# systemd: ONE containerd (CRI plugin on, for the kubelet of the real test
# node) and a dockerd that uses that containerd (for `docker build`).
#
#   scripts/container-engine.sh start|stop|status
#
# Why these settings (all measured on the 2-core CI VM, Debian bookworm,
# docker.io 20.10 / containerd 1.6 / runc 1.1 from apt):
#   * restrict_oom_score_adj = true: the VM lacks CAP_SYS_RESOURCE, and runc
#     fails every sandbox with "write /proc/self/oom_score_adj: permission
#     denied" without it;
#   * cgroupfs driver (SystemdCgroup = false): the host is cgroup v1 hybrid
#     with no systemd as PID 1; the kubelet must use cgroupDriver: cgroupfs too;
#   * dockerd --containerd=<our socket>: one containerd for both, so an image
#     built by docker is imported once into containerd's k8s.io namespace and
#     the kubelet sees it (docker keeps its own images in the "moby" namespace);
#   * dockerd keeps --iptables=true: it needs NAT for build containers that
#     reach PyPI/Debian; it also sets the FORWARD policy to DROP, which is why
#     the node's bridge CNI list needs the firewall plugin.
#
# Environment (all optional):
#   WHISPEROP_SANDBOX_IMAGE  CRI sandbox (pause) image   (registry.k8s.io/pause:3.10; the
#                            test node builds a local one and imports it under this tag)
#   WHISPEROP_CNI_BIN_DIR    CNI plugin binaries          (/usr/lib/cni: Debian's containernetworking-plugins)
#   WHISPEROP_CNI_CONF_DIR   CNI network lists            (/etc/cni/net.d)
#   WHISPEROP_ENGINE_DIR     config, pid files            (~/.cache/whisperop/engine)
#   WHISPEROP_ENGINE_LOGS    containerd.log, dockerd.log  (~/.cache/whisperop/logs)
#   CONTAINERD_SOCK          containerd's socket          (/run/containerd/containerd.sock)
#   DOCKER_HOST_SOCK         dockerd's socket             (/var/run/docker.sock)
#
# Idempotent: `start` with both running only reports; with containerd up
# (e.g. started by the test node) it starts dockerd only.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

sandbox_image="${WHISPEROP_SANDBOX_IMAGE:-registry.k8s.io/pause:3.10}"
cni_bin="${WHISPEROP_CNI_BIN_DIR:-/usr/lib/cni}"
cni_conf="${WHISPEROP_CNI_CONF_DIR:-/etc/cni/net.d}"
state="${WHISPEROP_ENGINE_DIR:-$HOME/.cache/whisperop/engine}"
logs="${WHISPEROP_ENGINE_LOGS:-$HOME/.cache/whisperop/logs}"
ctr_sock="${CONTAINERD_SOCK:-/run/containerd/containerd.sock}"
docker_sock="${DOCKER_HOST_SOCK:-/var/run/docker.sock}"
config="$state/containerd.toml"

log() { echo "==> $*" >&2; }
die() { echo "container-engine: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (containerd and dockerd manage mounts, cgroups and iptables)"
  for bin in containerd dockerd runc ctr iptables; do
    command -v "$bin" >/dev/null || die "$bin not found: apt-get install docker.io containerd runc iptables containernetworking-plugins"
  done
}

write_config() {
  mkdir -p "$state" "$logs" "$cni_conf"
  # one template for this script and the test node (src/whisperop/testenv/containerd.toml.in)
  sed -e "s|@ROOT@|/var/lib/containerd|" -e "s|@STATE@|/run/containerd|" -e "s|@SOCKET@|$ctr_sock|" \
      -e "s|@SANDBOX_IMAGE@|$sandbox_image|" -e "s|@CNI_BIN@|$cni_bin|" -e "s|@CNI_CONF@|$cni_conf|" \
      "$repo/src/whisperop/testenv/containerd.toml.in" > "$config.tmp"
  if grep -q '@[A-Z_]*@' "$config.tmp"; then die "containerd.toml.in: unfilled fields: $(grep -o '@[A-Z_]*@' "$config.tmp" | sort -u | tr '\n' ' ')"; fi
  mv "$config.tmp" "$config"
}

sock_up() {  # socket answers
  case "$1" in
    containerd) ctr --address "$ctr_sock" version >/dev/null 2>&1 ;;
    dockerd) docker -H "unix://$docker_sock" version >/dev/null 2>&1 ;;
  esac
}

wait_up() {  # name, seconds
  local i
  for ((i = 0; i < $2 * 2; i++)); do
    sock_up "$1" && return 0
    sleep 0.5
  done
  return 1
}

pid_of() {  # our pid file, if that process still runs
  local f="$state/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

start() {
  need_root
  if sock_up containerd; then
    log "containerd already answers on $ctr_sock"
  else
    write_config
    log "starting containerd (config $config, log $logs/containerd.log)"
    setsid nohup containerd --config "$config" >>"$logs/containerd.log" 2>&1 &
    echo $! > "$state/containerd.pid"
    wait_up containerd 60 || { tail -n 30 "$logs/containerd.log" >&2; die "containerd did not answer within 60 s"; }
  fi
  if sock_up dockerd; then
    log "dockerd already answers on $docker_sock"
  else
    mkdir -p "$state" "$logs"
    log "starting dockerd (log $logs/dockerd.log)"
    setsid nohup dockerd --containerd="$ctr_sock" -H "unix://$docker_sock" --iptables=true \
      --exec-opt native.cgroupdriver=cgroupfs >>"$logs/dockerd.log" 2>&1 &
    echo $! > "$state/dockerd.pid"
    wait_up dockerd 90 || { tail -n 30 "$logs/dockerd.log" >&2; die "dockerd did not answer within 90 s"; }
  fi
  status
}

stop_one() {  # only processes this script started (pid file), never by name
  local pid
  pid="$(pid_of "$1" || true)"
  if [ -z "$pid" ]; then
    log "$1: not started by this script (no live pid in $state/$1.pid)"
    return 0
  fi
  log "stopping $1 (pid $pid)"
  kill "$pid"
  local i
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { log "$1 still running after 30 s: SIGKILL"; kill -9 "$pid"; }
  rm -f "$state/$1.pid"
}

stop() {
  need_root
  stop_one dockerd
  stop_one containerd
}

status() {
  local rc=0
  if sock_up containerd; then
    echo "containerd: up ($ctr_sock, $(ctr --address "$ctr_sock" version 2>/dev/null | awk '/Version/ {print $2; exit}'))"
  else
    echo "containerd: down"; rc=1
  fi
  if sock_up dockerd; then
    echo "dockerd: up ($docker_sock, server $(docker -H "unix://$docker_sock" version --format '{{.Server.Version}}' 2>/dev/null))"
  else
    echo "dockerd: down"; rc=1
  fi
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
