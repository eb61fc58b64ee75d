#!/usr/bin/env bash
# Vendors hls.js into the web client: copies node_modules/hls.js/dist/hls.min.js (the version
# package-lock.json pins) to web-client/vendor/hls.min.js, with its license beside it as
# web-client/vendor/hls.js-LICENSE. The server compiles that file in (signaling/src/lib.rs) and
# serves it at /hls.min.js, so a server needs no npm; the copy is committed.
#
# After bumping hls.js (npm install hls.js@^1.x --save), run this and commit both files:
# tests/browser/hls.test.mjs fails while the vendored copy differs from node_modules'.
#
# Usage: scripts/vendor-hlsjs.sh   (runs `npm ci` first when node_modules has no hls.js)
set -euo pipefail
cd "$(dirname "$0")/.."

src=node_modules/hls.js
if [ ! -f "$src/dist/hls.min.js" ]; then
  echo "vendor-hlsjs: $src is missing; npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
version=$(node -p "require('./$src/package.json').version")
mkdir -p web-client/vendor
cp "$src/dist/hls.min.js" web-client/vendor/hls.min.js
cp "$src/LICENSE" web-client/vendor/hls.js-LICENSE
echo "vendor-hlsjs: web-client/vendor/hls.min.js is hls.js $version ($(wc -c <web-client/vendor/hls.min.js) bytes)"
