#!/usr/bin/env bash
# Install the Debian packages the real-node test environment and the image
# builds need: containerd + runc + CNI plugins (the node), iptables and
# conntrack (kube-proxy, CNI firewall), docker.io (docker build of the two
# Dockerfiles; dockerd is started by scripts/container-engine.sh, not by
# systemd) and mmdebstrap (the local base images). Idempotent: installs only
# what is missing.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iptables conntrack docker.io mmdebstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
echo "install-node-packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
