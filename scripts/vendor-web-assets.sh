#!/usr/bin/env bash
# Re-create api/static/vendor/ (Swagger UI and ReDoc for /docs and /redoc) from
# the npm registry, at the pinned versions, with their licences. The output is
# committed: the facade serves these files itself, so the API docs work on an
# air-gapped cluster (FastAPI's defaults load them from a public CDN). Files are
# copied byte for byte from the packages, nothing is built, with one edit:
# ReDoc's footer fetches its logo from cdn.redoc.ly; that URL becomes "data:,"
# (an empty image: ReDoc's onError handler then hides it, and no request leaves).
#   usage: scripts/vendor-web-assets.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SWAGGER_UI_VERSION=5.35.0
REDOC_VERSION=2.5.4
out=api/static/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$SWAGGER_UI_VERSION" "redoc@$REDOC_VERSION" >/dev/null)
mkdir -p "$tmp/s" "$tmp/r"
tar xzf "$tmp/swagger-ui-dist-$SWAGGER_UI_VERSION.tgz" -C "$tmp/s"
tar xzf "$tmp/redoc-$REDOC_VERSION.tgz" -C "$tmp/r"
rm -rf "$out/swagger-ui" "$out/redoc"
mkdir -p "$out/swagger-ui" "$out/redoc"
for f in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE package.json; do
  cp "$tmp/s/package/$f" "$out/swagger-ui/$f"
done
for f in bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE package.json; do
  cp "$tmp/r/package/$f" "$out/redoc/$(basename "$f")"
done
logo='https://cdn.redoc.ly/redoc/logo-mini.svg'
[ "$(grep -o "$logo" "$out/redoc/redoc.standalone.js" | wc -l)" = 1 ] || { echo "ReDoc's logo URL not found once; check the edit" >&2; exit 1; }
sed -i "s#$logo#data:,#" "$out/redoc/redoc.standalone.js"
if grep -Eo '(src|href):"https?://[^"]*' "$out/redoc/redoc.standalone.js" | grep -v 'redocly.com/redoc/' ; then
  echo "ReDoc loads something else from outside; handle it" >&2; exit 1
fi
echo "swagger-ui-dist $SWAGGER_UI_VERSION and redoc $REDOC_VERSION in $out"
