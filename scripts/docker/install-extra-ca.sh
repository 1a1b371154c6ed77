#!/usr/bin/env bash
# Trust extra CA certificates during an image build (TLS-intercepting proxies).
#   usage: install-extra-ca.sh DIR     (PEM files DIR/*.crt, DIR/*.pem; none = nothing to do)
# The certificates join the system store (/etc/ssl/certs/ca-certificates.crt,
# which Python's ssl module, apt and curl read) and /etc/pip.conf points pip
# at that store: pip otherwise verifies against its own certifi copy and fails
# behind the proxy with CERTIFICATE_VERIFY_FAILED. Only build stages run this;
# the final images copy /opt/whisperop and nothing of this.
set -euo pipefail
dir="$1"
shopt -s nullglob
certs=("$dir"/*.crt "$dir"/*.pem)
if [ ${#certs[@]} -eq 0 ]; then
  echo "extra CA: none"
  exit 0
fi
bundle=/etc/ssl/certs/ca-certificates.crt
if command -v update-ca-certificates >/dev/null; then
  mkdir -p /usr/local/share/ca-certificates
  for c in "${certs[@]}"; do
    base="$(basename "$c")"
    cp "$c" "/usr/local/share/ca-certificates/whisperop-extra-${base%.*}.crt"
  done
  update-ca-certificates >/dev/null
else
  # no ca-certificates package yet (it may be what apt has to fetch): append to the bundle
  mkdir -p "$(dirname "$bundle")"
  cat "${certs[@]}" >> "$bundle"
fi
printf '[global]\ncert = %s\n' "$bundle" > /etc/pip.conf
echo "extra CA: ${#certs[@]} file(s) added to $bundle; pip uses it (/etc/pip.conf)"
